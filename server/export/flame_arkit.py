# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME → ARKit-52: an approximation measured on the head's own mesh, for engines without a
character mapping.

ARKit's 52 coefficients describe what the face does (the jaw opens, the corners rise); FLAME's
expression coefficients are a statistical basis with no such meaning. So instead of a fixed
table from FLAME coefficients, this measures each frame's geometry on a FLAME-format head (the
user's FLAME file, or the demo head) at landmark points found geometrically
(:func:`find_face_points`), and turns displacements into coefficients, each divided by a
reference amount and clipped to [0, 1].

Per frame, P is the posed mesh (expression ψ and jaw θ), J the mesh with the jaw alone
(ψ = 0) and R the rest mesh; d = P − J is what the expression does on top of the jaw (the
expression moves the lips, the jaw carries them). x is the subject's left, y up, z toward the
viewer (FLAME's frame); "out" is away from the face's middle on that side; a side's
coefficient (…Left) is the face's own left, as in ARKit.

Landmarks (:func:`find_face_points`, any FLAME-format file): the inner-lip pairs of
:func:`server.living.closure.find_lips` (upper lip vertices facing lower lip vertices across
the mouth opening), their outermost pairs as the **mouth corners** and the pairs within 30 % of
the half-width of the middle as the **midline**; the lid-margin pairs of
:func:`server.living.eyelids.find_eyelids`; and surface points: with D the distance between
the eye joints, y_e their height and y_m the lips' height, the frontmost non-eyeball vertex
within 0.1 D (sideways and up) of (x, y) for the **inner brows** (±0.28 D, y_e + 0.35 D),
**outer brows** (±0.65 D, y_e + 0.35 D), **cheeks** (±0.6 D, y_e − 0.4 (y_e − y_m)), **nose
sides** (±0.2 D, y_e − 0.45 (y_e − y_m)) and **cheek puff points** (±0.7 D, y_m + 0.15 (y_e −
y_m)), x measured from the eyes' middle.

=====================  ==========================================================  ==========
coefficient            measure                                                     reference
=====================  ==========================================================  ==========
jawOpen                jaw rotation about x (θ_x, + opens)                         0.35 rad
jawLeft / jawRight     jaw rotation about y (+ moves the chin to the left)         0.10 rad
mouthClose             jawOpen × (g_J − g_P) / max(g_J − g_R, 1 mm): the share of  (jawOpen)
                       the jaw's inner-lip gap g (midline pairs) the lips close
mouthFunnel            r · o                                                       —
mouthPucker            r · (1 − o); r = ½ (w_J − w_P)/6 mm + ½ (lip midline z of   6 mm,
                       d)/4 mm (narrower and forward, w the corners' distance), o  4 mm,
                       = (g_P − g_R)/6 mm (lips apart)                             6 mm
mouthLeft / …Right     sideways x of d over all inner-lip vertices (+ to the left) 4 mm
mouthSmile{L,R}        the corner's rise (y of d)                                  4 mm
mouthFrown{L,R}        the corner's drop                                           3 mm
mouthStretch{L,R}      the corner's outward move (from the corners' mean x) beyond 5 mm
                       its rise
mouthUpperUp{L,R}      rise of that side's upper inner-lip vertices (y of d)       3 mm
mouthLowerDown{L,R}    drop of that side's lower inner-lip vertices (y of d)       3 mm
browInnerUp            mean rise of the two inner brow points                      5 mm
browOuterUp{L,R}       rise of the outer brow point                                5 mm
browDown{L,R}          mean drop of that side's inner and outer brow points        4 mm
cheekSquint{L,R}       rise of the cheek point                                     3 mm
cheekPuff              mean outward move of the puff points along the surface      4 mm
                       normal
noseSneer{L,R}         rise of the nose-side point                                 3 mm
eyeBlink{L,R}          1 − (1 − b)·(1 − (c − ½)/½), b the eyelids layer, c the     —
                       expression's lid closure (g_lid,R − g_lid,P)/g_lid,R
eyeSquint{L,R}         (1 − b) · (1 − blink part) · c / ½                          c = 0.5
eyeWide{L,R}           (1 − b) · (−c) / 0.3                                        c = −0.3
eyeLook{Up,Down}{L,R}  the eye's pitch (+ down), from the take's ``eyes``          30°
eyeLook{In,Out}{L,R}   the eye's yaw (+ toward the subject's left: out for the     30°
                       left eye, in for the right)
=====================  ==========================================================  ==========

Every coefficient is clipped to [0, 1] (a measure pointing the other way gives 0). Not
measured, always 0 (:data:`UNMEASURED`): jawForward (FLAME's jaw only rotates), mouthRoll
Lower/Upper, mouthShrugLower/Upper, mouthPress{L,R}, mouthDimple{L,R} (lip rolling, pressing
and dimpling change the lips' shape in ways a few points do not tell apart from the others) and
tongueOut (FLAME has no tongue).

**Lip closure the ARKit way.** The lip-closure layer shuts the lips at p, b and m by closing
FLAME's jaw; ARKit shuts them with mouthClose over an open jaw (Apple: mouthClose is the lips'
closure independent of the jaw's position, and mouthClose = jawOpen seals them). Given the jaw
the model produced before the layer (``model_jaw``), jawOpen and the jaw's gap g_J come from it
while g_P is the take's: where the lips were shut, mouthClose ≈ jawOpen.

**Head and eyes** (the living layers): the ``neck`` and each eye's axis-angle rotation as yaw,
pitch, roll in radians with R = R_y(yaw) · R_x(pitch) · R_z(roll) (:func:`yaw_pitch_roll`):
yaw + toward the subject's left, pitch + face (gaze) down, roll + toward the right shoulder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..flame import (
    JAW_JOINT,
    LEFT_EYE_JOINT,
    RIGHT_EYE_JOINT,
    FlameData,
    axis_angle_to_matrix,
    flame_vertices,
)
from ..living.eyelids import EyelidVertices, find_eyelids
from .livelink import ARKIT_NAMES

JAW_OPEN_REF = 0.35  # rad (20 degrees): a wide-open mouth
JAW_SIDE_REF = 0.10  # rad: about 1 cm sideways at the chin
MIN_JAW_GAP = 0.001  # m: below this the jaw has not opened the lips enough to tell closure
ROUND_WIDTH_REF = 0.006
ROUND_FORWARD_REF = 0.004
LIPS_APART_REF = 0.006
SIDEWAYS_REF = 0.004
SMILE_REF = 0.004
FROWN_REF = 0.003
STRETCH_REF = 0.005
LIP_RAISE_REF = 0.003
BROW_UP_REF = 0.005
BROW_DOWN_REF = 0.004
CHEEK_RAISE_REF = 0.003
PUFF_REF = 0.004
SNEER_REF = 0.003
SQUINT_CLOSURE = 0.5
WIDE_OPENING = 0.3
EYE_LOOK_REF = np.radians(30.0)
MIDLINE_SHARE = 0.3  # of the mouth's half-width: the pairs that measure the lip gap
SURFACE_RADIUS = 0.1  # × eye distance: how near (sideways, up) a surface point must lie
UNMEASURED = ("jawForward", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
              "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthDimpleLeft",
              "mouthDimpleRight", "tongueOut")
SIDES = ("Left", "Right")  # index 0: the subject's left (+x)


@dataclass
class FacePoints:
    """Landmark vertices of one FLAME head (see the module's description); per side arrays
    are (left, right)."""

    upper_lip: np.ndarray  # (P,) inner-lip pairs: upper_lip[i] faces lower_lip[i]
    lower_lip: np.ndarray  # (P,)
    midline: np.ndarray  # pair indices near the middle
    corners: np.ndarray  # (2,) pair indices of the outermost pairs
    lip_side: np.ndarray  # (P,) +1 left of the middle, −1 right, 0 middle
    inner_brows: np.ndarray | None  # (2,) vertex indices
    outer_brows: np.ndarray | None
    cheeks: np.ndarray | None
    nose_sides: np.ndarray | None
    puff: np.ndarray | None
    puff_normals: np.ndarray | None  # (2, 3) outward rest normals at the puff points
    lids: EyelidVertices | None
    lid_side: np.ndarray | None  # (L,) 0 left eye, 1 right eye per lid pair
    middle_x: float
    notes: list[str] = field(default_factory=list)


@dataclass
class ArkitApproximation:
    """Per-frame ARKit weights of a take and the angles for Live Link's head and eye columns."""

    weights: dict[str, np.ndarray]  # all 52 canonical names → (T,)
    head: np.ndarray | None  # (T, 3) yaw, pitch, roll (radians) of the neck
    eyes: np.ndarray | None  # (T, 2, 3) left, right × yaw, pitch, roll
    unmeasured: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def yaw_pitch_roll(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle rotations in FLAME's frame → (..., 3) yaw, pitch, roll (radians)
    with R = R_y(yaw) · R_x(pitch) · R_z(roll), the decomposition the living layers compose
    their head motion with (:func:`server.living.rotations.euler_to_axis_angle`)."""
    r = axis_angle_to_matrix(np.asarray(axis_angle, np.float64))
    pitch = np.arcsin(np.clip(-r[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(r[..., 0, 2], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)


def _vertex_normals(flame: FlameData) -> np.ndarray:
    v, f = flame.v_template, flame.faces
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for corner in range(3):
        np.add.at(normals, f[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def find_face_points(flame: FlameData) -> FacePoints:
    """The landmarks of ``flame`` from its geometry and skinning (see the module's
    description). Raises ``ValueError`` when its lips cannot be found; brows, cheeks, nose
    and lids that cannot be found are left out (their coefficients stay 0, said in notes)."""
    from ..living.closure import find_lips

    lips = find_lips(flame)
    v = flame.v_template
    joints = flame.rest_joints()
    eyes = joints[[LEFT_EYE_JOINT, RIGHT_EYE_JOINT]]
    eye_distance = float(np.linalg.norm(eyes[0] - eyes[1]))
    middle_x, eye_y = float(eyes[:, 0].mean()), float(eyes[:, 1].mean())
    pair_mid = (v[lips.upper] + v[lips.lower]) / 2
    mouth_y = float(pair_mid[:, 1].mean())
    offset = pair_mid[:, 0] - middle_x
    half_width = float(np.abs(offset).max())
    corners = np.array([int(np.argmax(offset)), int(np.argmin(offset))])
    midline = np.flatnonzero(np.abs(offset) <= MIDLINE_SHARE * half_width)
    if not len(midline):
        midline = np.array([int(np.argmin(np.abs(offset)))])
    lip_side = np.where(offset > 0.15 * half_width, 1,
                        np.where(offset < -0.15 * half_width, -1, 0))
    notes: list[str] = []
    eyeball = flame.weights[:, [LEFT_EYE_JOINT, RIGHT_EYE_JOINT]].max(axis=1) > 0.5
    skin = ~eyeball & (v[:, 2] > joints[JAW_JOINT, 2])

    def surface(x: float, y: float, what: str) -> np.ndarray | None:
        found = []
        for sign in (1.0, -1.0):
            near = skin & (np.hypot(v[:, 0] - (middle_x + sign * x), v[:, 1] - y)
                           <= SURFACE_RADIUS * eye_distance)
            if not near.any():
                notes.append(f"no {what} found on this head; its coefficients stay 0")
                return None
            candidates = np.flatnonzero(near)
            found.append(int(candidates[np.argmax(v[candidates, 2])]))
        return np.array(found)

    drop = eye_y - mouth_y
    brow_y = eye_y + 0.35 * eye_distance
    inner_brows = surface(0.28 * eye_distance, brow_y, "inner brow")
    outer_brows = surface(0.65 * eye_distance, brow_y, "outer brow")
    cheeks = surface(0.6 * eye_distance, eye_y - 0.4 * drop, "cheek")
    nose_sides = surface(0.2 * eye_distance, eye_y - 0.45 * drop, "nose side")
    puff = surface(0.7 * eye_distance, mouth_y + 0.15 * drop, "cheek-puff point")
    puff_normals = None
    if puff is not None:
        normals = _vertex_normals(flame)[puff]
        centre = joints[JAW_JOINT]
        # Outward: away from the inside of the head (the jaw joint lies inside it).
        flip = np.sum(normals * (v[puff] - centre), axis=1) < 0
        normals[flip] *= -1
        puff_normals = normals
    try:
        lids = find_eyelids(flame)
        lid_side = np.where(v[lids.upper, 0] > middle_x, 0, 1)
    except ValueError as exc:
        lids, lid_side = None, None
        notes.append(f"{exc} eyeSquint and eyeWide stay 0; eyeBlink follows the eyelids "
                     "layer alone")
    return FacePoints(upper_lip=lips.upper, lower_lip=lips.lower, midline=midline,
                      corners=corners, lip_side=lip_side, inner_brows=inner_brows,
                      outer_brows=outer_brows, cheeks=cheeks, nose_sides=nose_sides,
                      puff=puff, puff_normals=puff_normals, lids=lids, lid_side=lid_side,
                      middle_x=middle_x, notes=notes)


def landmark_head(flame: FlameData, points: FacePoints) -> tuple[FlameData, FacePoints]:
    """A FLAME head of the landmark vertices alone, and the landmarks in its numbering: its
    forward pass gives exactly their posed positions at a fraction of the cost. FLAME's joints
    are linear in the shaped mesh (J = J_regressor · (T + E·ψ)), so five extra vertices
    holding the regressed template and bases stand in for the rest of the mesh."""
    lid_ids = [] if points.lids is None else [points.lids.upper, points.lids.lower]
    surface = [a for a in (points.inner_brows, points.outer_brows, points.cheeks,
                           points.nose_sides, points.puff) if a is not None]
    ids = np.unique(np.concatenate([points.upper_lip, points.lower_lip, *surface, *lid_ids]))
    n = len(ids)
    regressor = flame.j_regressor
    j_regressor = np.zeros((len(regressor), n + len(regressor)))
    j_regressor[:, n:] = np.eye(len(regressor))
    small = FlameData(
        v_template=np.concatenate([flame.v_template[ids], regressor @ flame.v_template]),
        faces=np.zeros((0, 3), np.int64),
        shapedirs=np.concatenate([flame.shapedirs[ids],
                                  np.einsum("jv,vck->jck", regressor, flame.shapedirs)]),
        posedirs=np.concatenate([flame.posedirs[ids],
                                 np.zeros((len(regressor),) + flame.posedirs.shape[1:])]),
        j_regressor=j_regressor,
        weights=np.concatenate([flame.weights[ids], np.eye(len(regressor))]),
        kintree_table=flame.kintree_table)

    def local(indices: np.ndarray | None) -> np.ndarray | None:
        return None if indices is None else np.searchsorted(ids, indices)

    lids = None if points.lids is None else replace(
        points.lids, upper=local(points.lids.upper), lower=local(points.lids.lower))
    return small, replace(points, upper_lip=local(points.upper_lip),
                          lower_lip=local(points.lower_lip),
                          inner_brows=local(points.inner_brows),
                          outer_brows=local(points.outer_brows), cheeks=local(points.cheeks),
                          nose_sides=local(points.nose_sides), puff=local(points.puff),
                          lids=lids)


def _ramp(values: np.ndarray, reference: float) -> np.ndarray:
    return np.clip(np.asarray(values, np.float64) / reference, 0.0, 1.0)


def gaze_weights(eyes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """eyeLook{Up,Down,In,Out}{Left,Right} (T,) from the take's ``eyes`` (T, 2, 3)
    axis-angle (the module's table), and the eyes' yaw, pitch, roll (T, 2, 3)."""
    angles = yaw_pitch_roll(eyes)
    out = {}
    for s, side in enumerate(SIDES):
        yaw, pitch = angles[:, s, 0], angles[:, s, 1]
        toward_left, toward_right = _ramp(yaw, EYE_LOOK_REF), _ramp(-yaw, EYE_LOOK_REF)
        out[f"eyeLookOut{side}"] = toward_left if s == 0 else toward_right
        out[f"eyeLookIn{side}"] = toward_right if s == 0 else toward_left
        out[f"eyeLookDown{side}"] = _ramp(pitch, EYE_LOOK_REF)
        out[f"eyeLookUp{side}"] = _ramp(-pitch, EYE_LOOK_REF)
    return out, angles


def _gap(mesh: np.ndarray, points: FacePoints) -> np.ndarray:
    """Mean inner-lip gap (T,) of the midline pairs."""
    upper = mesh[:, points.upper_lip[points.midline]]
    lower = mesh[:, points.lower_lip[points.midline]]
    return np.linalg.norm(upper - lower, axis=-1).mean(axis=1)


def _corners(mesh: np.ndarray, points: FacePoints) -> np.ndarray:
    """Corner points (T, 2, 3): the middle of each outermost inner-lip pair."""
    return (mesh[:, points.upper_lip[points.corners]]
            + mesh[:, points.lower_lip[points.corners]]) / 2


def approximate_arkit(flame: FlameData, expression: np.ndarray, jaw: np.ndarray, *,
                      eyelids: np.ndarray | None = None, eyes: np.ndarray | None = None,
                      neck: np.ndarray | None = None, model_jaw: np.ndarray | None = None,
                      points: FacePoints | None = None) -> ArkitApproximation:
    """ARKit-52 weights (T,) of a take from its FLAME motion: ``expression`` (T, ≤E) and
    ``jaw`` (T, 3) on ``flame``; the living layers ``eyelids`` (T,), ``eyes`` (T, 2, 3) and
    ``neck`` (T, 3) when the take has them; ``model_jaw`` (T, 3), the jaw before the
    lip-closure layer, to express its closures the ARKit way. The formulas and references are
    the module's table."""
    # Only the landmarks are posed (exactly, see landmark_head): a minute-long take costs
    # milliseconds, not seconds.
    flame, points = landmark_head(flame, points or find_face_points(flame))
    n = min(flame.n_expression, np.shape(expression)[1])
    expression = np.asarray(expression, np.float64)[:, :n]
    jaw = np.asarray(jaw, np.float64)
    frames = len(jaw)
    model_jaw = jaw if model_jaw is None else np.asarray(model_jaw, np.float64)
    posed = flame_vertices(flame, expression, jaw)  # P
    jaw_only = flame_vertices(flame, np.zeros_like(expression), jaw)  # J
    rest = flame.v_template[None]  # R
    d = posed - jaw_only
    out = {name: np.zeros(frames) for name in ARKIT_NAMES}
    notes = list(points.notes)

    # Jaw and lip closure.
    out["jawOpen"] = _ramp(model_jaw[:, 0], JAW_OPEN_REF)
    out["jawLeft"] = _ramp(jaw[:, 1], JAW_SIDE_REF)
    out["jawRight"] = _ramp(-jaw[:, 1], JAW_SIDE_REF)
    rest_gap = _gap(rest, points)
    model_gap = _gap(flame_vertices(flame, np.zeros_like(expression), model_jaw), points) \
        if model_jaw is not jaw else _gap(jaw_only, points)
    gap = _gap(posed, points)
    closed = np.clip((model_gap - gap) / np.maximum(model_gap - rest_gap, MIN_JAW_GAP), 0, 1)
    out["mouthClose"] = out["jawOpen"] * closed

    # Rounding, sideways, corners, lips.
    corners_p, corners_j = _corners(posed, points), _corners(jaw_only, points)
    width_p = np.abs(corners_p[:, 0, 0] - corners_p[:, 1, 0])
    width_j = np.abs(corners_j[:, 0, 0] - corners_j[:, 1, 0])
    mid_vertices = np.concatenate([points.upper_lip[points.midline],
                                   points.lower_lip[points.midline]])
    forward = d[:, mid_vertices, 2].mean(axis=1)
    rounding = np.clip(0.5 * _ramp(width_j - width_p, ROUND_WIDTH_REF)
                       + 0.5 * _ramp(forward, ROUND_FORWARD_REF), 0, 1)
    apart = _ramp(gap - rest_gap, LIPS_APART_REF)
    out["mouthFunnel"] = rounding * apart
    out["mouthPucker"] = rounding * (1 - apart)
    lip_vertices = np.concatenate([points.upper_lip, points.lower_lip])
    sideways = d[:, lip_vertices, 0].mean(axis=1)
    out["mouthLeft"] = _ramp(sideways, SIDEWAYS_REF)
    out["mouthRight"] = _ramp(-sideways, SIDEWAYS_REF)
    corner_move = corners_p - corners_j  # (T, 2, 3)
    for s, side in enumerate(SIDES):
        rise = corner_move[:, s, 1]
        # Outward from the mouth's own middle: a sideways mouth moves both corners alike.
        outward = (corner_move[:, s, 0] - corner_move[:, :, 0].mean(axis=1)) * (1 - 2 * s)
        out[f"mouthSmile{side}"] = _ramp(rise, SMILE_REF)
        out[f"mouthFrown{side}"] = _ramp(-rise, FROWN_REF)
        out[f"mouthStretch{side}"] = _ramp(outward - np.maximum(rise, 0), STRETCH_REF)
        here = points.lip_side == (1 if s == 0 else -1)
        if here.any():
            out[f"mouthUpperUp{side}"] = _ramp(d[:, points.upper_lip[here], 1].mean(axis=1),
                                               LIP_RAISE_REF)
            out[f"mouthLowerDown{side}"] = _ramp(-d[:, points.lower_lip[here], 1].mean(axis=1),
                                                 LIP_RAISE_REF)

    # Brows, cheeks, nose.
    if points.inner_brows is not None:
        out["browInnerUp"] = _ramp(d[:, points.inner_brows, 1].mean(axis=1), BROW_UP_REF)
    for s, side in enumerate(SIDES):
        rises = [d[:, p[s], 1] for p in (points.inner_brows, points.outer_brows)
                 if p is not None]
        if points.outer_brows is not None:
            out[f"browOuterUp{side}"] = _ramp(d[:, points.outer_brows[s], 1], BROW_UP_REF)
        if rises:
            out[f"browDown{side}"] = _ramp(-np.mean(rises, axis=0), BROW_DOWN_REF)
        if points.cheeks is not None:
            out[f"cheekSquint{side}"] = _ramp(d[:, points.cheeks[s], 1], CHEEK_RAISE_REF)
        if points.nose_sides is not None:
            out[f"noseSneer{side}"] = _ramp(d[:, points.nose_sides[s], 1], SNEER_REF)
    if points.puff is not None:
        outward = np.einsum("tsc,sc->ts", d[:, points.puff], points.puff_normals)
        out["cheekPuff"] = _ramp(outward.mean(axis=1), PUFF_REF)

    # Eyelids: the layer's blinks with what the expression does to the lids.
    layer = np.zeros(frames) if eyelids is None else np.clip(np.asarray(eyelids, np.float64),
                                                             0, 1)
    for s, side in enumerate(SIDES):
        closure = np.zeros(frames)
        if points.lids is not None:
            pairs = points.lid_side == s
            upper, lower = points.lids.upper[pairs], points.lids.lower[pairs]
            rest_lid = np.linalg.norm(rest[:, upper] - rest[:, lower], axis=-1).mean(axis=1)
            lid = np.linalg.norm(posed[:, upper] - posed[:, lower], axis=-1).mean(axis=1)
            closure = (rest_lid - lid) / np.maximum(rest_lid, 1e-9)
        expression_blink = np.clip((closure - SQUINT_CLOSURE) / (1 - SQUINT_CLOSURE), 0, 1)
        out[f"eyeBlink{side}"] = 1 - (1 - layer) * (1 - expression_blink)
        out[f"eyeSquint{side}"] = ((1 - layer) * (1 - expression_blink)
                                   * _ramp(closure, SQUINT_CLOSURE))
        out[f"eyeWide{side}"] = (1 - layer) * _ramp(-closure, WIDE_OPENING)

    # Gaze and head.
    eye_angles = None
    if eyes is not None:
        looks, eye_angles = gaze_weights(np.asarray(eyes, np.float64).reshape(frames, 2, 3))
        out.update(looks)
    head = None if neck is None else yaw_pitch_roll(np.asarray(neck, np.float64)
                                                    .reshape(frames, 3))
    if not all(np.isfinite(values).all() for values in out.values()):
        raise ValueError("The ARKit approximation produced non-finite values; the take or "
                         "the FLAME file holds broken numbers.")
    return ArkitApproximation(weights=out, head=head, eyes=eye_angles, unmeasured=UNMEASURED,
                              notes=notes)
