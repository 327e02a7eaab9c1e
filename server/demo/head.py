# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo head: a procedural face written in the FLAME file layout.

Built deterministically by code (no data files): a head with a neck, nose, brows, eye sockets
with separate eyeballs, lips with a real mouth opening and a mouth cavity behind it. The
lower face is skinned to the jaw joint, so a positive rotation about x opens the mouth as in
FLAME. The expression basis has named components an artist recognises (lip rounding, smile,
brow raise, blink, ...); the remaining columns are zero. Coordinates follow FLAME: metres, y up,
z toward the viewer, x toward the subject's left.

The result is a :class:`DemoHead`: the :class:`~server.flame.FlameData` plus the vertex and face
groups the corpus builder, the metrics and the preview use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..flame import SHAPE_SPACE_DIM, FlameData, write_flame_file

N_EXPRESSION = 100
MOUTH_Y = -0.058  # height of the lip line
MOUTH_HALF_WIDTH = 0.024
EYE_CENTRES = ((0.032, 0.030), (-0.032, 0.030))  # (x, y): subject's left eye first (joint 3)
EYE_RADIUS = 0.0125
JOINTS = np.array([
    [0.0, -0.115, -0.025],  # root
    [0.0, -0.095, -0.025],  # neck
    [0.0, -0.005, -0.012],  # jaw (in front of the ears)
    [0.0, 0.0, 0.0],  # left eye: set to the eyeball centre
    [0.0, 0.0, 0.0],  # right eye
])

# The named expression components, in column order (coefficient k → FLAME column 300 + k).
EXPRESSIONS = (
    "lip rounding", "lip spread", "upper lip raise", "lower lip depress", "lip press",
    "mouth corners up", "mouth corners down", "cheek raise", "brow raise", "brow lower",
    "brow inner up", "nose wrinkle", "eye widen", "eye squint", "left corner up",
    "lips part", "cheek puff", "mouth sideways", "blink",
)
IDENTITY_SHAPES = ("head width", "face length", "nose size", "lip fullness", "jaw width")

# Control profile of the skull, top to bottom: height y, half-width, front depth, back depth.
_PROFILE = np.array([
    [0.160, 0.004, 0.004, 0.004],
    [0.150, 0.040, 0.045, 0.055],
    [0.120, 0.066, 0.074, 0.088],
    [0.080, 0.077, 0.088, 0.100],
    [0.040, 0.079, 0.093, 0.100],
    [0.000, 0.076, 0.094, 0.095],
    [-0.040, 0.071, 0.092, 0.088],
    [-0.070, 0.061, 0.088, 0.078],
    [-0.095, 0.046, 0.078, 0.066],
    [-0.112, 0.036, 0.058, 0.056],
    [-0.125, 0.042, 0.036, 0.052],
    [-0.145, 0.046, 0.040, 0.052],
    [-0.220, 0.050, 0.044, 0.052],
])


@dataclass
class DemoHead:
    """The demo head's FLAME arrays and its named parts."""

    flame: FlameData
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # vertex index arrays
    mouth_interior_faces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    eye_faces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pupil_vertices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _rows() -> np.ndarray:
    """Row heights: 3 mm apart over the face (the lip line exactly on a row), coarser above
    and below."""
    face = np.concatenate([MOUTH_Y + 0.003 * np.arange(44, 0, -1),
                           MOUTH_Y - 0.003 * np.arange(0, 21)])  # 0.074 … -0.118
    top = np.linspace(0.158, face[0], 9)[:-1]
    neck = np.linspace(face[-1], -0.22, 10)[1:]
    return np.concatenate([top, face, neck])


def _columns(n: int = 72) -> np.ndarray:
    """Azimuths in (-π, π], dense at the front (φ = 0 faces +z)."""
    u = np.linspace(-1, 1, n, endpoint=False) + 1.0 / n
    return np.pi * (0.42 * u + 0.58 * u**3)


def _gauss(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Forward relief (metres) of the facial features at front coordinates (x, y)."""
    ax = np.abs(x)
    tip = -0.016
    nose_len = np.where(y > tip, _gauss(y, tip, 0.030), _gauss(y, tip, 0.007))
    nose_width = 0.006 + 0.007 * _gauss(y, tip - 0.004, 0.010)
    nose = 0.026 * nose_len * np.exp(-0.5 * (x / nose_width) ** 2) * (y < 0.05)
    brows = 0.007 * _gauss(y, 0.050, 0.010) * _gauss(ax, 0.030, 0.022)
    sockets = -0.014 * np.exp(-0.5 * (((ax - 0.032) / 0.015) ** 2 + ((y - 0.028) / 0.012) ** 2))
    cheeks = 0.006 * np.exp(-0.5 * (((ax - 0.046) / 0.016) ** 2 + ((y + 0.004) / 0.014) ** 2))
    lip_width = _smoothstep(MOUTH_HALF_WIDTH + 0.004 - ax, 0.0, 0.010)
    upper_lip = 0.008 * _gauss(y, MOUTH_Y + 0.006, 0.0045) * lip_width
    lower_lip = 0.009 * _gauss(y, MOUTH_Y - 0.007, 0.0050) * lip_width
    philtrum = 0.004 * _gauss(y, MOUTH_Y + 0.018, 0.008) * _gauss(ax, 0.0, 0.012)
    sulcus = -0.003 * _gauss(y, MOUTH_Y - 0.021, 0.005) * _gauss(ax, 0.0, 0.016)
    chin = 0.007 * _gauss(y, -0.097, 0.010) * _gauss(ax, 0.0, 0.018)
    return nose + brows + sockets + cheeks + upper_lip + lower_lip + philtrum + sulcus + chin


def _surface(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Skin vertices on the (row, column) grid (R, C, 3)."""
    profile = _PROFILE[::-1]
    half_width = np.interp(rows, profile[:, 0], profile[:, 1])
    front = np.interp(rows, profile[:, 0], profile[:, 2])
    back = np.interp(rows, profile[:, 0], profile[:, 3])
    centre_z = np.interp(rows, [-0.22, -0.12, -0.10], [-0.022, -0.022, 0.0])
    phi = columns[None, :]
    cos, sin = np.cos(phi), np.sin(phi)
    depth = np.where(cos > 0, front[:, None], back[:, None])
    x = half_width[:, None] * sin
    z = centre_z[:, None] + depth * cos
    y = np.broadcast_to(rows[:, None], x.shape)
    facing = _smoothstep(cos, 0.2, 0.7) * (rows[:, None] > -0.125)
    relief = _relief(x, y) * facing
    ears = 0.012 * np.exp(-0.5 * (((np.abs(phi) - 1.62) / 0.07) ** 2 + ((y - 0.005) / 0.016) ** 2))
    radial = np.stack([sin, np.zeros_like(sin), cos], -1)
    points = np.stack([x, y, z], -1)
    return points + (relief + ears)[..., None] * radial


def _grid_faces(index: np.ndarray, wrap: bool = True) -> list[list[int]]:
    """Two triangles per quad of a (rows, columns) index grid, outward for our layout."""
    faces = []
    rows, cols = index.shape
    for r in range(rows - 1):
        for c in range(cols if wrap else cols - 1):
            a, b = index[r, c], index[r, (c + 1) % cols]
            d, e = index[r + 1, c], index[r + 1, (c + 1) % cols]
            faces += [[a, d, b], [b, d, e]]
    return faces


def _uv_sphere(centre: np.ndarray, radius: float, rings: int = 10, segments: int = 16
               ) -> tuple[np.ndarray, list[list[int]]]:
    """A sphere with its poles on the z axis (front pole first): vertices, faces (local)."""
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.sin(theta)[:, None] * np.cos(phi), np.sin(theta)[:, None] * np.sin(phi),
                     np.cos(theta)[:, None] * np.ones_like(phi)], -1).reshape(-1, 3)
    vertices = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]]) * radius + centre
    last = len(vertices) - 1
    grid = 1 + np.arange(len(theta) * segments).reshape(len(theta), segments)
    faces = [[0, grid[0, (s + 1) % segments], grid[0, s]] for s in range(segments)]
    faces += [[a, c, b] for a, b, c in _grid_faces(grid)]
    faces += [[last, grid[-1, s], grid[-1, (s + 1) % segments]] for s in range(segments)]
    return vertices, faces


def _orient_outward(vertices: np.ndarray, faces: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Flip faces whose normal points toward ``inside`` (a point per face)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    normal = np.cross(b - a, c - a)
    centroid = (a + b + c) / 3
    flip = np.einsum("ij,ij->i", normal, centroid - inside) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _min_norm_regressor(vertices: np.ndarray, target: np.ndarray, candidates: np.ndarray
                        ) -> np.ndarray:
    """Weights over ``candidates`` summing to 1 whose weighted mean is exactly ``target``."""
    a = np.vstack([vertices[candidates].T, np.ones(len(candidates))])  # (4, K)
    weights = a.T @ np.linalg.solve(a @ a.T, np.append(target, 1.0))
    return weights


def build_demo_head() -> DemoHead:
    """The demo head (about 5,400 vertices). Deterministic: no randomness."""
    rows, columns = _rows(), _columns()
    skin = _surface(rows, columns)  # (R, C, 3)
    n_rows, n_cols = len(rows), len(columns)
    mouth_row = int(np.argmin(np.abs(rows - MOUTH_Y)))

    vertices = [skin.reshape(-1, 3)]
    index = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    lip_line = skin[mouth_row]
    slit = np.where((np.abs(lip_line[:, 0]) < MOUTH_HALF_WIDTH) & (lip_line[:, 2] > 0))[0]
    slit = slit[1:-1]  # the end columns stay shared: they are the mouth corners
    # The lower lip: duplicates of the slit vertices; rows below the lip line use them.
    lower_copy = n_rows * n_cols + np.arange(len(slit))
    vertices.append(skin[mouth_row, slit])
    below = index.copy()
    below[mouth_row, slit] = lower_copy
    count = n_rows * n_cols + len(slit)

    faces = _grid_faces(index[: mouth_row + 1]) + _grid_faces(below[mouth_row:])
    pole = count
    vertices.append([[0.0, rows[0] + 0.002, 0.0]])
    count += 1
    faces += [[pole, index[0, (c + 1) % n_cols], index[0, c]] for c in range(n_cols)]
    skin_faces = len(faces)

    # Mouth cavity: for each slit column an ellipse in the (y, z) plane from the upper lip,
    # over the palate, down the back and over the floor to the lower lip; it shrinks to
    # nothing at the corners.
    corners = (slit[0] - 1, slit[-1] + 1)
    columns_all = np.concatenate([[corners[0]], slit, [corners[1]]])
    xs = lip_line[columns_all, 0]
    width = np.sqrt(np.clip(1 - (xs / (np.abs(xs).max() + 1e-9)) ** 2, 0, 1))
    steps = 12
    cavity = np.full((len(columns_all), steps + 1), -1)
    cavity_points, cavity_jaw = [], []
    for i, column in enumerate(columns_all):
        top = index[mouth_row, column]
        bottom = top if i in (0, len(columns_all) - 1) else lower_copy[i - 1]
        cavity[i, 0], cavity[i, steps] = top, bottom
        if i in (0, len(columns_all) - 1):
            cavity[i, 1:steps] = top
            continue
        x, y, z = lip_line[column]
        depth, height = 0.030 * width[i], 0.013 * width[i]
        for k in range(1, steps):
            angle = 2 * np.pi * k / steps
            cavity_points.append([x, y + height * np.sin(angle),
                                  z - 0.004 - depth * (1 - np.cos(angle)) / 2])
            cavity_jaw.append(_smoothstep(np.array(angle), 0.85 * np.pi, 1.15 * np.pi))
            cavity[i, k] = count
            count += 1
    vertices.append(np.array(cavity_points))
    cavity_faces = [f for f in _grid_faces(cavity.T, wrap=False) if len(set(f)) == 3]
    faces += cavity_faces

    # Eyeballs: separate spheres in the sockets, pupils facing forward.
    eye_centres, eye_vertices, eye_faces = [], [], []
    for x, y in EYE_CENTRES:
        column = int(np.argmin(np.abs(columns - np.arcsin(np.clip(x / 0.079, -1, 1)))))
        surface_z = skin[int(np.argmin(np.abs(rows - y))), column, 2]
        centre = np.array([x, y, surface_z - 0.0035])
        sphere, sphere_faces = _uv_sphere(centre, EYE_RADIUS)
        eye_faces.append(np.array(sphere_faces) + count)
        eye_vertices.append(count + np.arange(len(sphere)))
        eye_centres.append(centre)
        vertices.append(sphere)
        count += len(sphere)
    faces += [f.tolist() for f in np.concatenate(eye_faces)]

    v = np.concatenate([np.asarray(part, np.float64).reshape(-1, 3) for part in vertices])
    faces = np.array(faces, np.int64)
    head_centre = np.array([0.0, 0.0, -0.005])
    inside = np.tile(head_centre, (len(faces), 1))
    skin_rows = np.arange(skin_faces)
    neck = v[faces[skin_rows, 0], 1] < -0.12
    inside[skin_rows[neck]] = v[faces[skin_rows[neck]]].mean(1) * [0, 1, 0] + [0, 0, -0.022]
    cavity_ids = np.arange(skin_faces, skin_faces + len(cavity_faces))
    # Cavity faces face into the cavity: "inside" is a point beyond the skin, behind them.
    inside[cavity_ids] = [0.0, MOUTH_Y, -0.2]
    eye_ids = np.arange(skin_faces + len(cavity_faces), len(faces))
    for e, centre in enumerate(eye_centres):
        inside[eye_ids[e * len(eye_faces[0]): (e + 1) * len(eye_faces[0])]] = centre
    faces = _orient_outward(v, faces, inside)

    n = len(v)
    slit_upper = index[mouth_row, slit]
    upper_side = np.ones(n, bool)
    upper_side[lower_copy] = False
    upper_side[np.arange(n) < n_rows * n_cols] = (v[: n_rows * n_cols, 1] >= MOUTH_Y - 1e-9)
    cavity_vertices = np.arange(n_rows * n_cols + len(slit) + 1,
                                n_rows * n_cols + len(slit) + 1 + len(cavity_points))
    upper_side[cavity_vertices] = np.array(cavity_jaw) < 0.5

    groups = {"skin": np.arange(n_rows * n_cols + len(slit) + 1),
              "mouth_cavity": cavity_vertices, "left_eye": eye_vertices[0],
              "right_eye": eye_vertices[1], "upper_lip_line": slit_upper,
              "lower_lip_line": lower_copy}
    weights = _skinning(v, upper_side, groups, np.array(cavity_jaw))
    joints = JOINTS.copy()
    joints[3], joints[4] = eye_centres
    j_regressor = _joint_regressor(v, joints, groups)

    expression = _expression_basis(v, upper_side, groups)
    shapedirs = np.zeros((n, 3, SHAPE_SPACE_DIM + N_EXPRESSION))
    shapedirs[:, :, : len(IDENTITY_SHAPES)] = _identity_basis(v, upper_side, groups)
    shapedirs[:, :, SHAPE_SPACE_DIM: SHAPE_SPACE_DIM + expression.shape[2]] = expression
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    flame = FlameData(v_template=v, faces=faces, shapedirs=shapedirs,
                      posedirs=np.zeros((n, 3, 36)), j_regressor=j_regressor, weights=weights,
                      kintree_table=kintree)
    flame.shapedirs[:, :, SHAPE_SPACE_DIM + EXPRESSIONS.index("blink")] = _blink_shape(flame)
    flame.landmark_faces, flame.landmark_barycentrics = _landmarks(v, faces, upper_side, groups,
                                                                   skin_faces)
    front = groups["skin"][(v[groups["skin"], 2] > 0.02) & (v[groups["skin"], 1] > -0.12)]
    lips = front[(np.abs(v[front, 0]) < MOUTH_HALF_WIDTH + 0.008)
                 & (np.abs(v[front, 1] - MOUTH_Y) < 0.016)]
    groups["lips"] = lips
    groups["lower_face"] = front[v[front, 1] < -0.03]
    groups["upper_face"] = front[v[front, 1] > 0.0]
    pupils = np.array([ev[0] for ev in eye_vertices])
    return DemoHead(flame=flame, groups=groups,
                    mouth_interior_faces=cavity_ids, eye_faces=eye_ids, pupil_vertices=pupils)


def _skinning(v: np.ndarray, upper_side: np.ndarray, groups: dict[str, np.ndarray],
              cavity_jaw: np.ndarray) -> np.ndarray:
    """Skinning weights (V, 5), as FLAME's: the jaw carries the lower face and the cavity
    floor, the eyes their eyeballs, the neck joint the rest of the head (it is the head's
    rotation, parent of the jaw and the eyes), and the root the base of the neck, where it
    meets the body."""
    n = len(v)
    weights = np.zeros((n, 5))
    x, y, z = v.T
    # Beside the mouth the jaw's share fades in over a band that widens toward the ears, so
    # the cheeks stretch instead of creasing along the lip line.
    # The upper lip line itself stays with the skull.
    band = 0.003 + 0.6 * np.clip(np.abs(x) - MOUTH_HALF_WIDTH, 0, None)
    lower = np.clip(_smoothstep(MOUTH_Y - y, 0.003 - band, 0.003 + band)
                    + (~upper_side) * 1.0, 0, 1)
    below_lips = _smoothstep(MOUTH_Y + 0.004 - y, 0.0, 0.012)
    jaw = np.maximum(lower * _smoothstep(z, -0.01, 0.035), below_lips * _smoothstep(z, -0.02, 0.04))
    jaw = jaw * (1 - _smoothstep(-y, 0.115, 0.135))  # not the neck
    corner = np.exp(-0.5 * (((np.abs(x) - MOUTH_HALF_WIDTH) / 0.006) ** 2
                            + ((y - MOUTH_Y) / 0.005) ** 2))
    jaw = np.where(np.abs(x) > MOUTH_HALF_WIDTH - 0.004, np.minimum(jaw, 1 - 0.5 * corner), jaw)
    neck_base = _smoothstep(-y, 0.12, 0.16)
    weights[:, 2] = jaw
    weights[:, 0] = neck_base * (1 - jaw)
    weights[:, 1] = 1 - weights[:, 0] - weights[:, 2]
    cavity = groups["mouth_cavity"]
    weights[cavity] = 0
    weights[cavity, 2] = cavity_jaw
    weights[cavity, 1] = 1 - cavity_jaw
    for joint, name in ((3, "left_eye"), (4, "right_eye")):
        weights[groups[name]] = 0
        weights[groups[name], joint] = 1
    return weights


def _joint_regressor(v: np.ndarray, joints: np.ndarray, groups: dict[str, np.ndarray]
                     ) -> np.ndarray:
    """J_regressor (5, V) reproducing ``joints`` exactly from the template."""
    regressor = np.zeros((5, len(v)))
    skin = groups["skin"]
    for j, target in enumerate(joints):
        if j >= 3:
            eye = groups["left_eye" if j == 3 else "right_eye"]
            regressor[j, eye] = _min_norm_regressor(v, target, eye)
            continue
        near = skin[np.argsort(np.linalg.norm(v[skin] - target, axis=1))[:24]]
        regressor[j, near] = _min_norm_regressor(v, target, near)
    return regressor


def _region(v: np.ndarray, x0: float, y0: float, sx: float, sy: float,
            mirror: bool = True) -> np.ndarray:
    """A soft region weight (V,) on the front of the face around (±x0, y0)."""
    x = np.abs(v[:, 0]) if mirror else v[:, 0]
    front = _smoothstep(v[:, 2], 0.0, 0.04)
    return front * np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((v[:, 1] - y0) / sy) ** 2))


def _blink_shape(flame: FlameData) -> np.ndarray:
    """The "blink" component (V, 3): at 1 the upper lids lie closed on the lower lids.

    The skin passes behind the eyeballs, so the lids are the skin where it leaves the eyeball,
    found by the same rule as on any FLAME file (:func:`server.living.eyelids.find_eyelids`):
    each upper-lid margin vertex moves onto its lower-lid partner. The skin of the upper lid
    around the margins (outside the eyeball, up to 12 mm above them) follows with the margins'
    motion, interpolated sideways and fading upward, and stays 1 mm in front of the eyeball;
    the lower lid stays where it is, as in a human blink."""
    from ..living.eyelids import find_eyelids

    lids = find_eyelids(flame)
    v = flame.v_template
    d = np.zeros_like(v)
    eyeball = flame.weights[:, 3:5].max(axis=1) > 0.5
    radius, reach = lids.radius, 0.012
    for centre in lids.centres:
        mine = np.abs(v[lids.upper, 0] - centre[0]) <= 1.5 * radius
        upper, lower = lids.upper[mine], lids.lower[mine]
        motion = v[lower] - v[upper]
        offset = v - centre
        lid = np.flatnonzero(~eyeball & (np.abs(offset[:, 0]) <= 1.2 * radius)
                             & (offset[:, 1] > 0) & (offset[:, 2] >= -0.5 * radius)
                             & (np.linalg.norm(offset, axis=1) >= 0.9 * radius))
        sideways = v[lid, 0][:, None] - v[upper, 0][None, :]  # (N, P)
        near = np.exp(-0.5 * (sideways / (0.15 * radius)) ** 2)
        share = near / np.maximum(near.sum(1, keepdims=True), 1e-12)
        margin_y = share @ v[upper, 1]
        fade = 1 - _smoothstep(v[lid, 1] - margin_y, 0.0, reach)
        lateral = near.max(1)
        moved = (share @ motion) * (fade * lateral)[:, None]
        closed = v[lid] + moved
        dx, dy = closed[:, 0] - centre[0], closed[:, 1] - centre[1]
        front = centre[2] + np.sqrt(np.clip(radius**2 - dx**2 - dy**2, 0, None)) + 0.001
        inside = np.linalg.norm(closed - centre, axis=1) < radius + 0.001
        moved[:, 2] += np.where(inside, np.clip(front - closed[:, 2], 0, None), 0.0)
        d[lid] = moved
        d[upper] = motion  # the margins exactly onto the lower lid
    d[np.abs(d) < 1e-5] = 0.0
    return d


def _expression_basis(v: np.ndarray, upper_side: np.ndarray, groups: dict[str, np.ndarray]
                      ) -> np.ndarray:
    """The named expression components (V, 3, len(EXPRESSIONS)), metres per unit."""
    n = len(v)
    x, y = v[:, 0], v[:, 1]
    side = np.where(upper_side, 1.0, -1.0)
    not_eyes = np.ones(n)
    not_eyes[groups["left_eye"]] = 0
    not_eyes[groups["right_eye"]] = 0
    lips = _region(v, 0.0, MOUTH_Y, 0.020, 0.010, mirror=False) * not_eyes
    lips_core = _region(v, 0.0, MOUTH_Y, 0.014, 0.007, mirror=False) * not_eyes
    corners = _region(v, MOUTH_HALF_WIDTH, MOUTH_Y, 0.009, 0.009) * not_eyes
    sign_x = np.sign(x)
    at_line = np.exp(-0.5 * ((y - MOUTH_Y) / 0.004) ** 2)
    d = np.zeros((n, 3, len(EXPRESSIONS)))

    def put(name: str, dx=0.0, dy=0.0, dz=0.0) -> None:
        k = EXPRESSIONS.index(name)
        d[:, 0, k] += dx
        d[:, 1, k] += dy
        d[:, 2, k] += dz

    put("lip rounding", dx=-0.30 * x * lips, dz=0.005 * lips - 0.003 * corners)
    put("lip spread", dx=0.004 * sign_x * (corners + 0.4 * lips * np.abs(x) / 0.024),
        dy=-0.12 * (y - MOUTH_Y) * lips, dz=-0.0025 * corners)
    put("upper lip raise", dy=0.0035 * lips * upper_side
        + 0.0015 * _region(v, 0.015, MOUTH_Y + 0.02, 0.012, 0.01),
        dz=0.0008 * lips * upper_side)
    put("lower lip depress", dy=-0.0035 * lips * ~upper_side, dz=0.0012 * lips * ~upper_side)
    put("lip press", dy=-0.25 * (y - MOUTH_Y) * lips, dz=-0.0025 * lips_core)
    put("mouth corners up", dx=0.0025 * sign_x * corners, dy=0.0045 * corners
        + 0.0015 * _region(v, 0.04, -0.02, 0.015, 0.015), dz=-0.001 * corners)
    put("mouth corners down", dy=-0.0045 * corners, dx=0.001 * sign_x * corners)
    cheeks = _region(v, 0.042, -0.008, 0.016, 0.014) * not_eyes
    lower_lids = _region(v, 0.032, 0.017, 0.012, 0.005) * not_eyes
    put("cheek raise", dy=0.003 * cheeks + 0.002 * lower_lids, dz=0.002 * cheeks)
    brows = _region(v, 0.030, 0.050, 0.024, 0.012) * not_eyes
    forehead = _region(v, 0.0, 0.075, 0.05, 0.02) * not_eyes
    put("brow raise", dy=0.0045 * brows + 0.002 * forehead)
    put("brow lower", dx=-0.0025 * sign_x * brows, dy=-0.0035 * brows, dz=0.001 * brows)
    inner = _region(v, 0.014, 0.050, 0.011, 0.012) * not_eyes
    put("brow inner up", dy=0.0045 * inner, dx=-0.001 * sign_x * inner)
    nose = _region(v, 0.012, 0.002, 0.010, 0.014) * not_eyes
    put("nose wrinkle", dy=0.002 * nose + 0.001 * lips * upper_side, dz=0.0012 * nose)
    upper_lids = _region(v, 0.032, 0.043, 0.014, 0.006) * not_eyes
    put("eye widen", dy=0.0025 * upper_lids - 0.001 * lower_lids, dz=-0.0015 * upper_lids)
    put("eye squint", dy=-0.002 * upper_lids + 0.0025 * lower_lids,
        dz=0.002 * (upper_lids + lower_lids))
    left = (x > 0) * corners
    put("left corner up", dx=0.003 * left, dy=0.004 * left, dz=-0.0015 * left)
    put("lips part", dy=0.0022 * side * lips_core * at_line)
    puff = _region(v, 0.045, -0.045, 0.016, 0.016) * not_eyes
    put("cheek puff", dx=0.004 * sign_x * puff, dz=0.002 * puff)
    put("mouth sideways", dx=0.004 * (lips + corners * 0.5))
    d[np.abs(d) < 1e-5] = 0.0  # under 10 micrometres per unit: exactly still
    return d


def _identity_basis(v: np.ndarray, upper_side: np.ndarray, groups: dict[str, np.ndarray]
                    ) -> np.ndarray:
    """The named identity shape components (V, 3, len(IDENTITY_SHAPES))."""
    n = len(v)
    d = np.zeros((n, 3, len(IDENTITY_SHAPES)))
    d[:, 0, 0] = 0.05 * v[:, 0]
    d[:, 1, 1] = 0.05 * np.clip(-v[:, 1], 0, None)
    nose = _region(v, 0.0, -0.01, 0.012, 0.025, mirror=False)
    d[:, 2, 2] = 0.004 * nose
    lips = _region(v, 0.0, MOUTH_Y, 0.022, 0.010, mirror=False)
    d[:, 2, 3] = 0.002 * lips
    d[:, 0, 4] = 0.08 * v[:, 0] * _smoothstep(-v[:, 1], 0.06, 0.1)
    return d


# The 51 static landmarks (17..67 of the 68 layout) as (x, y) on the front of the face; the
# last element says which lip a mouth point sits on ("u"/"l"), for the inner lip points.
_LANDMARKS = (
    [((-0.052 + 0.011 * i), 0.046 + 0.006 * np.sin(np.pi * i / 4), "") for i in range(5)]
    + [((0.008 + 0.011 * i), 0.046 + 0.006 * np.sin(np.pi * (4 - i) / 4), "") for i in range(5)]
    + [(0.0, 0.026 - 0.012 * i, "") for i in range(4)]
    + [(0.004 * (i - 2) * 2, -0.024 + 0.002 * abs(i - 2) ** 0.5, "") for i in range(5)]
    + [(x0 + dx, 0.030 + dy, "") for x0 in (-0.032,)
       for dx, dy in ((-0.013, 0), (-0.005, 0.006), (0.005, 0.006), (0.013, 0), (0.005, -0.005),
                      (-0.005, -0.005))]
    + [(x0 + dx, 0.030 + dy, "") for x0 in (0.032,)
       for dx, dy in ((-0.013, 0), (-0.005, 0.006), (0.005, 0.006), (0.013, 0), (0.005, -0.005),
                      (-0.005, -0.005))]
    + [(-MOUTH_HALF_WIDTH, MOUTH_Y, "u"), (-0.015, MOUTH_Y + 0.008, "u"),
       (-0.006, MOUTH_Y + 0.011, "u"), (0.0, MOUTH_Y + 0.010, "u"),
       (0.006, MOUTH_Y + 0.011, "u"), (0.015, MOUTH_Y + 0.008, "u"),
       (MOUTH_HALF_WIDTH, MOUTH_Y, "u"), (0.015, MOUTH_Y - 0.010, "l"),
       (0.006, MOUTH_Y - 0.013, "l"), (0.0, MOUTH_Y - 0.013, "l"),
       (-0.006, MOUTH_Y - 0.013, "l"), (-0.015, MOUTH_Y - 0.010, "l")]
    + [(-MOUTH_HALF_WIDTH + 0.003, MOUTH_Y, "u"), (-0.008, MOUTH_Y, "u"), (0.0, MOUTH_Y, "u"),
       (0.008, MOUTH_Y, "u"), (MOUTH_HALF_WIDTH - 0.003, MOUTH_Y, "u"), (0.008, MOUTH_Y, "l"),
       (0.0, MOUTH_Y, "l"), (-0.008, MOUTH_Y, "l")]
)


def _landmarks(v: np.ndarray, faces: np.ndarray, upper_side: np.ndarray,
               groups: dict[str, np.ndarray], skin_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Static landmark embedding: for each landmark a skin face and barycentrics (1, 0, 0) on
    the skin vertex nearest to it (in the frontal projection)."""
    skin = groups["skin"]
    candidates = np.concatenate([skin, groups["lower_lip_line"]])
    candidates = candidates[v[candidates, 2] > 0.03]
    lips_line = set(groups["upper_lip_line"].tolist()) | set(groups["lower_lip_line"].tolist())
    face_ids, bary = [], []
    skin_face_array = faces[:skin_faces]
    for x, y, lip in _LANDMARKS:
        pool = candidates
        if lip == "u":
            pool = pool[upper_side[pool]]
        elif lip == "l":
            pool = pool[~upper_side[pool]]
        if lip and abs(y - MOUTH_Y) < 1e-9 and abs(x) < MOUTH_HALF_WIDTH - 0.001:
            pool = pool[np.isin(pool, list(lips_line))]
        best = pool[np.argmin((v[pool, 0] - x) ** 2 + (v[pool, 1] - y) ** 2)]
        face = int(np.where((skin_face_array == best).any(1))[0][0])
        corner = int(np.where(skin_face_array[face] == best)[0][0])
        weights = np.zeros(3)
        weights[corner] = 1.0
        face_ids.append(face)
        bary.append(weights)
    return np.array(face_ids, np.int64), np.array(bary)


def write_demo_head(folder: str | Path) -> Path:
    """Write ``demo_head.pkl`` (FLAME layout), ``landmark_embedding.npy`` and
    ``demo_head.json`` (component names and parts) into ``folder``; returns the .pkl path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = build_demo_head()
    path = folder / "demo_head.pkl"
    write_flame_file(path, head.flame)
    embedding = {"static_lmk_faces_idx": head.flame.landmark_faces,
                 "static_lmk_bary_coords": head.flame.landmark_barycentrics}
    np.save(folder / "landmark_embedding.npy", np.array(embedding, dtype=object),
            allow_pickle=True)
    meta = {"expressions": list(EXPRESSIONS), "identity_shapes": list(IDENTITY_SHAPES),
            "groups": {k: v.tolist() for k, v in head.groups.items()},
            "mouth_interior_faces": head.mouth_interior_faces.tolist(),
            "eye_faces": head.eye_faces.tolist(), "pupil_vertices": head.pupil_vertices.tolist()}
    (folder / "demo_head.json").write_text(json.dumps(meta))
    return path
