# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural test characters for the retarget, none in FLAME's topology or vertex order.

Each is the demo head's surface function (:func:`server.demo.head._surface`) sampled on a grid
of its own (another number of columns, another row spacing), warped to other proportions (a
wider mouth, a longer lower face), scaled, moved and turned into Blender's axes (+Z up, −Y
front), with its vertices shuffled. Shape keys are authored by region from the demo head's own
expression fields (:func:`server.demo.head._expression_basis`, evaluated where each vertex came
from and carried through the warp) and from a jaw rotation:

* :func:`arkit_character` (a): mouth 30 % wider, lower face 15 % longer, 52 ARKit keys and a
  jaw bone with weights;
* :func:`viseme_character` (b): visemes only (A E I O U F_V M_B_P smile), no jaw bone;
* :func:`minimal_character` (c): jawOpen, mouthClose and mouthSmile, no jaw bone;
* :func:`dense_character`: some 27,000 vertices, three keys (finding the mouth on fine meshes).

Every character comes with ``truth``: vertex indices of its inner lips (upper and lower, the
middle third of the mouth), mouth corners, brows and eyelids, for measuring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.demo.head import (
    EXPRESSIONS,
    JOINTS,
    MOUTH_HALF_WIDTH,
    MOUTH_Y,
    _columns,
    _expression_basis,
    _grid_faces,
    _skinning,
    _surface,
)
from server.flame import axis_angle_to_matrix
from server.retarget.character import CharacterGeometry, JawBone

FLAME_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # y up → z up, z → −y


@dataclass
class TestCharacter:
    geometry: CharacterGeometry
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    scale: float = 1.0  # character metres per demo-head metre (before the warp)
    warp: object = None  # demo-head space → the character's object space (the ground truth)
    demo: np.ndarray | None = None  # (V, 3) where each vertex came from on the demo head


@dataclass
class _Face:
    """A face sampled in the demo head's space (``demo``) and where it went (``vertices``)."""

    demo: np.ndarray  # (V, 3) demo-space positions
    vertices: np.ndarray  # (V, 3) character object space
    faces: np.ndarray
    upper_side: np.ndarray  # (V,) bool: above the mouth slit
    slit_upper: np.ndarray
    slit_lower: np.ndarray
    corners: np.ndarray  # (2,) left, right
    warp: object  # demo space → character object space
    pivot_demo: np.ndarray


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _blob(p: np.ndarray, x0: float, y0: float, sx: float, sy: float) -> np.ndarray:
    """A soft region on the front of the demo-space face around (±x0, y0)."""
    front = _smoothstep(p[:, 2], 0.0, 0.04)
    return front * np.exp(-0.5 * (((np.abs(p[:, 0]) - x0) / sx) ** 2 + ((p[:, 1] - y0) / sy) ** 2))


def _make_warp(mouth: float, length: float, scale: float, offset: np.ndarray):
    """Demo space → character object space: the mouth ``mouth`` × wider at its corners, the
    face below the eyes ``length`` × longer, then scaled, turned to Blender's axes, moved."""
    reach = 0.045
    at_corner = 1.0 / (1.0 + (MOUTH_HALF_WIDTH / reach) ** 4)

    def warp(p: np.ndarray) -> np.ndarray:
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        band = np.exp(-0.5 * ((y - MOUTH_Y) / 0.022) ** 2) * _smoothstep(z, -0.03, 0.03)
        x = x * (1 + (mouth - 1) / at_corner * band / (1 + (x / reach) ** 4))
        below = _smoothstep(-y, -0.01, 0.02)
        y = y * (1 + (length - 1) * below)
        q = np.stack([x, y, z], -1) * scale
        return q @ FLAME_TO_BLENDER.T + offset

    return warp


def _face(columns: int, row_step: float, mouth: float, length: float, scale: float,
          offset: tuple[float, float, float], seed: int) -> _Face:
    """The demo surface on a grid of ``columns`` × rows ``row_step`` apart (the lip line on a
    row), the lower lip split from the upper along the slit, then warped and shuffled."""
    above = np.arange(int(0.13 / row_step), 0, -1)
    below = np.arange(0, int(0.06 / row_step) + 1)
    face_rows = np.concatenate([MOUTH_Y + row_step * above, MOUTH_Y - row_step * below])
    face_rows = face_rows[(face_rows <= 0.076) & (face_rows >= -0.12)]
    top = np.linspace(0.157, face_rows[0], 7)[:-1]
    neck = np.linspace(face_rows[-1], -0.2, 6)[1:]
    rows = np.concatenate([top, face_rows, neck])
    phis = _columns(columns)
    skin = _surface(rows, phis)  # (R, C, 3)
    n_rows, n_cols = len(rows), len(phis)
    mouth_row = int(np.argmin(np.abs(rows - MOUTH_Y)))
    index = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    line = skin[mouth_row]
    slit = np.flatnonzero((np.abs(line[:, 0]) < MOUTH_HALF_WIDTH) & (line[:, 2] > 0))[1:-1]
    lower = n_rows * n_cols + np.arange(len(slit))
    under = index.copy()
    under[mouth_row, slit] = lower
    pole = n_rows * n_cols + len(slit)
    demo = np.concatenate([skin.reshape(-1, 3), line[slit], [[0.0, rows[0] + 0.002, 0.0]]])
    faces = _grid_faces(index[: mouth_row + 1]) + _grid_faces(under[mouth_row:])
    faces += [[pole, index[0, (c + 1) % n_cols], index[0, c]] for c in range(n_cols)]
    faces = np.array(faces, np.int64)
    upper_side = np.ones(len(demo), bool)
    upper_side[: n_rows * n_cols] = demo[: n_rows * n_cols, 1] >= MOUTH_Y - 1e-9
    upper_side[lower] = False
    corner_columns = (slit[0] - 1, slit[-1] + 1)
    corners = np.array([index[mouth_row, c] for c in corner_columns])
    corners = corners[np.argsort(-demo[corners, 0])]  # subject's left (+x) first
    warp = _make_warp(mouth, length, scale, np.asarray(offset, np.float64))
    # Shuffle the vertex order: nothing may rely on it.
    order = np.random.default_rng(seed).permutation(len(demo))
    new_index = np.empty_like(order)
    new_index[order] = np.arange(len(demo))
    return _Face(demo=demo[order], vertices=warp(demo[order]), faces=new_index[faces],
                 upper_side=upper_side[order], slit_upper=new_index[index[mouth_row, slit]],
                 slit_lower=new_index[lower], corners=new_index[corners], warp=warp,
                 pivot_demo=JOINTS[2].copy())


def _carry(face: _Face, demo_offsets: np.ndarray) -> np.ndarray:
    """Demo-space displacement fields (..., V, 3) carried through the warp to the character."""
    base = face.vertices
    return face.warp(face.demo + demo_offsets) - base


def _fields(face: _Face) -> dict[str, np.ndarray]:
    """Named demo-space displacement fields (V, 3) at the face's vertices."""
    p = face.demo
    empty = np.zeros(0, np.int64)
    groups = {"left_eye": empty, "right_eye": empty, "mouth_cavity": empty}
    basis = _expression_basis(p, face.upper_side, groups)
    fields = {name: basis[:, :, k] for k, name in enumerate(EXPRESSIONS)}
    jaw_weights = _skinning(p, face.upper_side, groups, np.zeros(0))[:, 2]
    rotation = axis_angle_to_matrix(np.array([0.25, 0.0, 0.0]))
    fields["jaw open"] = jaw_weights[:, None] * ((p - face.pivot_demo) @ (rotation - np.eye(3)).T)
    fields["jaw weights"] = np.repeat(jaw_weights[:, None], 3, axis=1)
    upper_lids = _blob(p, 0.032, 0.036, 0.013, 0.005)
    fields["blink"] = np.stack([0 * upper_lids, -0.009 * upper_lids, 0.002 * upper_lids], 1)
    lips = _blob(p, 0.0, MOUTH_Y, 0.022, 0.010) * (np.abs(p[:, 0]) < 0.05)
    lip_line = np.exp(-0.5 * ((p[:, 1] - MOUTH_Y) / 0.005) ** 2)
    lower = ~face.upper_side
    fields["mouth close"] = -fields["jaw open"] * (lips * lower)[:, None]
    fields["roll lower"] = np.stack([0 * lips, 0.0015 * lips * lower * lip_line,
                                     -0.003 * lips * lower * lip_line], 1)
    fields["roll upper"] = np.stack([0 * lips, -0.0015 * lips * face.upper_side * lip_line,
                                     -0.003 * lips * face.upper_side * lip_line], 1)
    chin = _blob(p, 0.0, -0.085, 0.02, 0.015)
    fields["shrug lower"] = np.stack([0 * lips, 0.003 * (lips * lower + chin), 0.001 * chin], 1)
    corners = _blob(p, MOUTH_HALF_WIDTH, MOUTH_Y, 0.008, 0.008)
    fields["dimple"] = np.stack([0.002 * np.sign(p[:, 0]) * corners, 0 * corners,
                                 -0.002 * corners], 1)
    fields["tongue"] = np.stack([0 * lips, -0.001 * lips * lower * lip_line,
                                 0.002 * lips * lower * lip_line], 1)
    return fields


def _sides(face: _Face) -> tuple[np.ndarray, np.ndarray]:
    left = _smoothstep(face.demo[:, 0], -0.004, 0.004)[:, None]
    return left, 1 - left


def _truth(face: _Face) -> dict[str, np.ndarray]:
    p = face.demo
    middle = np.abs(p[face.slit_upper, 0]) < MOUTH_HALF_WIDTH / 3
    skin = np.flatnonzero(p[:, 2] > 0.02)

    def nearest(x: float, y: float) -> int:
        return int(skin[np.argmin((p[skin, 0] - x) ** 2 + (p[skin, 1] - y) ** 2)])

    brows = np.array([nearest(x, 0.050) for x in (0.03, 0.015, -0.015, -0.03)])
    lids = np.array([nearest(x, 0.037) for x in (0.032, -0.032)])
    return {"upper_lip": face.slit_upper[middle], "lower_lip": face.slit_lower[middle],
            "slit_upper": face.slit_upper, "slit_lower": face.slit_lower,
            "corners": face.corners, "brows": brows, "upper_lids": lids,
            "chin": np.array([nearest(0.0, -0.097)])}


def _character(face: _Face, keys: dict[str, np.ndarray], name: str,
               jaw: JawBone | None = None, ranges: dict[str, tuple[float, float]] | None = None
               ) -> CharacterGeometry:
    names = list(keys)
    offsets = np.stack([_carry(face, keys[n]) for n in names])
    offsets[np.abs(offsets) < 1e-7] = 0.0
    key_ranges = np.array([(ranges or {}).get(n, (0.0, 1.0)) for n in names])
    return CharacterGeometry(vertices=face.vertices, faces=face.faces, key_names=names,
                             key_offsets=offsets, key_ranges=key_ranges, jaw=jaw, name=name)


def arkit_character(seed: int = 1) -> TestCharacter:
    """(a): the demo surface on 84 columns and 2.6 mm rows, mouth 30 % wider, lower face 15 %
    longer, 1.08 × the size, at 1.62 m; 52 ARKit keys authored by region and a jaw bone."""
    scale = 1.08
    face = _face(columns=84, row_step=0.0026, mouth=1.3, length=1.15, scale=scale,
                 offset=(0.01, -0.02, 1.62), seed=seed)
    f = _fields(face)
    left, right = _sides(face)
    p = face.demo
    outer = _smoothstep(np.abs(p[:, 0]), 0.012, 0.03)[:, None]
    keys: dict[str, np.ndarray] = {}
    lids_down = _blob(p, 0.032, 0.036, 0.013, 0.005)[:, None] * np.array([0, -0.002, 0])
    lids_in = _blob(p, 0.032, 0.036, 0.013, 0.005)[:, None] * np.array([0.0015, 0, 0])
    for side, mask, sign in (("Left", left, 1.0), ("Right", right, -1.0)):
        keys[f"eyeBlink{side}"] = f["blink"] * mask
        keys[f"eyeLookDown{side}"] = lids_down * mask
        keys[f"eyeLookIn{side}"] = -sign * lids_in * mask
        keys[f"eyeLookOut{side}"] = sign * lids_in * mask
        keys[f"eyeLookUp{side}"] = -lids_down * mask
        keys[f"eyeSquint{side}"] = f["eye squint"] * mask
        keys[f"eyeWide{side}"] = f["eye widen"] * mask
    jaw_w = f["jaw weights"][:, :1]
    keys["jawForward"] = jaw_w * np.array([0, 0, 0.004])
    keys["jawLeft"] = jaw_w * np.array([0.004, 0, 0])
    keys["jawRight"] = jaw_w * np.array([-0.004, 0, 0])
    keys["jawOpen"] = f["jaw open"]
    keys["mouthClose"] = f["mouth close"]
    keys["mouthFunnel"] = 0.6 * f["lip rounding"] + f["roll upper"] * -0.3
    keys["mouthPucker"] = f["lip rounding"]
    keys["mouthLeft"] = f["mouth sideways"]
    keys["mouthRight"] = -f["mouth sideways"]
    for side, mask in (("Left", left), ("Right", right)):
        keys[f"mouthSmile{side}"] = f["mouth corners up"] * mask
        keys[f"mouthFrown{side}"] = f["mouth corners down"] * mask
        keys[f"mouthDimple{side}"] = f["dimple"] * mask
        keys[f"mouthStretch{side}"] = f["lip spread"] * mask
    keys["mouthRollLower"] = f["roll lower"]
    keys["mouthRollUpper"] = f["roll upper"]
    keys["mouthShrugLower"] = f["shrug lower"]
    keys["mouthShrugUpper"] = 0.5 * f["upper lip raise"]
    for side, mask in (("Left", left), ("Right", right)):
        keys[f"mouthPress{side}"] = f["lip press"] * mask
        keys[f"mouthLowerDown{side}"] = f["lower lip depress"] * mask
        keys[f"mouthUpperUp{side}"] = f["upper lip raise"] * mask
    keys["browDownLeft"] = f["brow lower"] * left
    keys["browDownRight"] = f["brow lower"] * right
    keys["browInnerUp"] = f["brow inner up"]
    keys["browOuterUpLeft"] = f["brow raise"] * left * outer
    keys["browOuterUpRight"] = f["brow raise"] * right * outer
    keys["cheekPuff"] = f["cheek puff"]
    keys["cheekSquintLeft"] = f["cheek raise"] * left
    keys["cheekSquintRight"] = f["cheek raise"] * right
    keys["noseSneerLeft"] = f["nose wrinkle"] * left
    keys["noseSneerRight"] = f["nose wrinkle"] * right
    keys["tongueOut"] = f["tongue"]
    from server.retarget.arkit import ARKIT_52

    assert set(keys) == set(ARKIT_52)
    keys = {name: keys[name] for name in ARKIT_52}
    # The jaw bone: head at the demo's jaw joint carried through the warp; rest: the bone
    # points forward and down (its y axis), as a modelled jaw bone does.
    head = face.warp(face.pivot_demo[None])[0]
    tilt = axis_angle_to_matrix(np.array([-0.6, 0.0, 0.0]))
    rest = tilt @ np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # bone y → object −Y
    jaw = JawBone(name="jaw", head=head, rest=rest, weights=f["jaw weights"][:, 0].copy())
    geometry = _character(face, keys, "ARKit test head", jaw=jaw)
    return TestCharacter(geometry=geometry, truth=_truth(face), scale=scale, warp=face.warp,
                         demo=face.demo)


def viseme_character(seed: int = 2) -> TestCharacter:
    """(b): 64 columns, 3.4 mm rows, mouth 10 % narrower, 0.95 × the size, visemes only."""
    scale = 0.95
    face = _face(columns=64, row_step=0.0034, mouth=0.9, length=1.0, scale=scale,
                 offset=(-0.3, 0.1, 1.5), seed=seed)
    f = _fields(face)
    keys = {
        "A": 1.0 * f["jaw open"] + 0.5 * f["lips part"],
        "E": 0.45 * f["jaw open"] + 0.8 * f["lip spread"],
        "I": 0.2 * f["jaw open"] + 1.0 * f["lip spread"] + 0.3 * f["mouth corners up"],
        "O": 0.6 * f["jaw open"] + 0.8 * f["lip rounding"],
        "U": 0.2 * f["jaw open"] + 1.2 * f["lip rounding"],
        "F_V": f["roll lower"] + 0.5 * f["upper lip raise"],
        "M_B_P": f["lip press"],
        "smile": f["mouth corners up"] + 0.5 * f["cheek raise"],
    }
    return TestCharacter(geometry=_character(face, keys, "viseme test head"),
                         truth=_truth(face), scale=scale, warp=face.warp, demo=face.demo)


def minimal_character(seed: int = 3) -> TestCharacter:
    """(c): 100 columns, 2.2 mm rows, face 8 % longer, jawOpen, mouthClose and mouthSmile."""
    scale = 1.0
    face = _face(columns=100, row_step=0.0022, mouth=1.1, length=1.08, scale=scale,
                 offset=(0.0, 0.0, 1.7), seed=seed)
    f = _fields(face)
    keys = {"jawOpen": f["jaw open"], "mouthClose": f["mouth close"],
            "mouthSmile": f["mouth corners up"]}
    return TestCharacter(geometry=_character(face, keys, "minimal test head"),
                         truth=_truth(face), scale=scale, warp=face.warp, demo=face.demo)


def dense_character(seed: int = 4) -> TestCharacter:
    """A dense mesh (160 columns, 1.2 mm rows: some 27,000 vertices), mouth 20 % wider, with
    jawOpen, mouthSmile and browInnerUp: where every vertex has many neighbours closer than
    the lips' partners, the slit must still be found."""
    face = _face(columns=160, row_step=0.0012, mouth=1.2, length=1.1, scale=1.0,
                 offset=(0.0, 0.0, 1.6), seed=seed)
    f = _fields(face)
    keys = {"jawOpen": f["jaw open"], "mouthSmile": f["mouth corners up"],
            "browInnerUp": f["brow inner up"]}
    return TestCharacter(geometry=_character(face, keys, "dense test head"),
                         truth=_truth(face), scale=1.0, warp=face.warp, demo=face.demo)
