# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME motion → a character's shape-key weights and jaw, all frames in one solve.

**Set-up** (:func:`setup_character`): FLAME is fitted to the character (:mod:`.fit`); at the
corresponded points the character's keys are measured (``B``, (P, 3, K)) and the jaw bone's
weights read; each point gets a region (mouth, jaw, cheeks, eyes, brows, from FLAME's
landmarks), a weight and a motion scale: the similarity's scale ``s``, and in the mouth
``s·ρ`` with ρ the character's mouth width over FLAME's (scaled), fading to ``s`` over the
cheeks, so a wider mouth opens and smiles in proportion.

**A take** (:func:`retarget`): FLAME's forward pass on the points only gives the source motion
``δ_t`` (expression, jaw correctives and the jaw's skinning); the character should move
``y_t = a·R·δ_t``. With a jaw bone, the bone turns by ``g`` × FLAME's jaw angle (``g`` matches
the lower lip's travel per radian) and its own motion at the points is subtracted; the keys
solve the rest:

    min over W (T, K), lo ≤ W ≤ hi:
        Σ_t ½‖B·w_t − r_t‖²_Ω + Σ_k λ₁G_kk‖W_k‖₁ + ½ Σ_k λ₂G_kk Σ_t (w_{t+1,k} − w_{t,k})²
        + Σ_t c_t·½κ‖L·w_t + j_t‖²

with Ω the point weights, ``L`` the character's inner-lip rows (upper minus lower) and
``j_t`` the jaw's part of their gap: where the source's lips are shut (its inner-lip gap under
10 % of its typical opening, or ``closure``), c_t = 1 and the lips must touch. Everything is
projected onto the K keys beforehand (Gram matrices, and the source terms as small tensors
contracted with the per-frame rotations), so a frame costs O(K²). It is solved by FISTA
with per-variable steps from a scaled Gershgorin bound (a valid majoriser of the Hessian),
soft-thresholding for λ₁ and clipping to the slider ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..flame import JAW_JOINT, SHAPE_SPACE_DIM, FlameData, axis_angle_to_matrix
from .arkit import arkit_keys
from .character import CharacterGeometry
from .fit import FlamePoints, fit_flame
from .mapping import REGIONS, CharacterMapping

REGION_WEIGHT = {"mouth": 6.0, "jaw": 1.5, "cheeks": 0.5, "eyes": 2.0, "brows": 2.0}
LIP_LINE_WEIGHT = 3.0
ITERATIONS = 80
REPORT_FRAMES = 150
CLOSED = 0.1  # × the typical opening: shut
OPEN = 0.2  # × the typical opening: no longer shut
FULLY_SHUT = 0.95  # a closure track's value from which the lips must touch
STILL = 0.05  # a region whose keys move it less than this × the largest motion has none


@dataclass
class Retargeted:
    """A take on the character: ``weights`` (T, K) in the key order of the mapping, within
    the slider ranges; ``jaw`` (T, 3) the jaw bone's axis-angle in FLAME's frame (None
    without a jaw bone); ``report``: region → share of the source motion reproduced, and
    ``notes``."""

    weights: np.ndarray
    jaw: np.ndarray | None
    report: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    closed: np.ndarray | None = None  # (T,) how shut the source's lips are, 0..1


# -- set-up ------------------------------------------------------------------------------------

def setup_character(character: CharacterGeometry, flame: FlameData,
                    landmarks: dict[str, np.ndarray] | None = None) -> CharacterMapping:
    """Fit FLAME to ``character`` and prepare the retarget of FLAME motion onto it.
    ``landmarks`` (name → object-space (3,)) are the artist's corrections of the found ones."""
    fit = fit_flame(character, flame, landmarks)
    info = fit.flame_face
    v_char = character.vertices
    corners = v_char[character.faces[fit.triangles]]  # (P, 3, 3)
    positions = np.einsum("pk,pkc->pc", fit.barycentrics, corners)
    offsets = character.key_offsets[:, character.faces[fit.triangles]]  # (K, P, 3, 3)
    key_basis = np.einsum("pk,jpkc->pcj", fit.barycentrics, offsets)  # (P, 3, K)
    has_jaw = character.jaw is not None
    jaw_vertex_weights = (np.asarray(character.jaw.weights, np.float64) if has_jaw
                          else np.zeros(character.n_vertices))
    jaw_weights = np.einsum("pk,pk->p", fit.barycentrics,
                            jaw_vertex_weights[character.faces[fit.triangles]])

    # Regions, weights and motion scales, from FLAME's landmarks.
    v = flame.v_template
    marks = {n: p.of(v)[0] for n, p in info.landmarks.items()}
    flame_points = fit.points.of(v)
    regions, mouth_share = _regions(flame, flame_points, marks, fit.points, info.lower_side)
    flame_mouth_width = float(np.linalg.norm(marks["mouth_left"] - marks["mouth_right"]))
    mouth_width = float(np.linalg.norm(fit.landmarks["mouth_left"]
                                       - fit.landmarks["mouth_right"]))
    ratio = np.clip(mouth_width / max(fit.scale * flame_mouth_width, 1e-9), 0.5, 2.0)
    point_scale = fit.scale * (1 + (ratio - 1) * mouth_share)
    weight = np.array([REGION_WEIGHT[REGIONS[r]] for r in regions])
    counts = np.bincount(regions, minlength=len(REGIONS)).astype(np.float64)
    weight = weight * len(regions) / np.maximum(counts[regions], 1) / len(REGIONS)
    on_lips = np.isin(fit.points.vertices[:, 0], np.concatenate([info.lip_upper,
                                                                 info.lip_lower]))
    weight[on_lips] *= LIP_LINE_WEIGHT
    # Normalise to the character's size: the solve's numbers do not depend on metres.
    weight = weight / (fit.scale**2 * len(regions))

    if fit.lip_pairs is not None:
        pairs = fit.lip_pairs
    else:  # no slit found: FLAME's own lip pairs, carried over by the correspondence
        pairs = _carried_lip_pairs(fit, info, character)
    lip_positions = v_char[pairs]  # (Q, 2, 3)
    lip_jaw = jaw_vertex_weights[pairs]
    lip_basis = np.transpose(character.key_offsets[:, pairs], (1, 2, 3, 0))  # (Q, 2, 3, K)
    flame_lips = (np.stack([info.lip_upper, info.lip_lower], axis=1) if len(info.lip_upper)
                  else np.zeros((0, 2), np.int64))

    mapping = CharacterMapping(
        character=character.name, key_names=list(character.key_names),
        key_ranges=character.key_ranges.copy(), arkit=arkit_keys(character.key_names),
        scale=fit.scale, rotation=fit.rotation, translation=fit.translation,
        flame_vertices=fit.points.vertices, flame_weights=fit.points.weights,
        positions=positions, key_basis=key_basis, jaw_weights=jaw_weights,
        point_scale=point_scale, point_weight=weight, point_region=regions,
        lip_positions=lip_positions, lip_jaw_weights=lip_jaw, lip_basis=lip_basis,
        flame_lips=flame_lips, flame_vertex_count=flame.n_vertices,
        flame_rest=fit.points.of(flame.v_template),
        flame_mouth_width=flame_mouth_width, mouth_width=mouth_width,
        jaw_bone=character.jaw.name if has_jaw else None,
        jaw_pivot=np.asarray(character.jaw.head, np.float64) if has_jaw else np.zeros(3),
        jaw_rest=np.asarray(character.jaw.rest, np.float64) if has_jaw else np.eye(3),
        landmarks={n: np.asarray(p, np.float64).tolist() for n, p in fit.landmarks.items()})
    if has_jaw:
        mapping.jaw_gain = _jaw_gain(mapping, flame, info, marks)
    probe_expression, probe_jaw = _probe_take(flame, mapping)
    probe = retarget(mapping, flame, probe_expression, probe_jaw, smooth=False,
                     enforce_contact=False)
    mapping.quality = probe.report
    mapping.notes = _setup_notes(mapping, probe.report)
    if fit.lip_pairs is None and not {"mouth_left", "mouth_right"} <= set(landmarks or {}):
        mapping.notes.insert(0, "The character's mouth opening was not found from its "
                             "geometry, so the fit started from the face its keys move; check "
                             "the mouth landmarks and set it up again if they are off.")
    return mapping


def _regions(flame: FlameData, points: np.ndarray, marks: dict[str, np.ndarray],
             flame_points: FlamePoints, lower_side: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Each point's region (index into REGIONS) and how much of the mouth's scale it takes
    (1 on the mouth, fading to 0 over the cheeks)."""
    joints = flame.rest_joints()
    eyes = joints[[3, 4]]
    eye_distance = max(float(np.linalg.norm(eyes[0] - eyes[1])), 1e-6)
    mouth_centre = (marks["mouth_left"] + marks["mouth_right"]) / 2
    half_width = max(float(np.linalg.norm(marks["mouth_left"] - marks["mouth_right"])) / 2,
                     1e-6)
    dx = (points[:, 0] - mouth_centre[0]) / (1.35 * half_width)
    dy = (points[:, 1] - mouth_centre[1]) / (0.9 * half_width)
    mouth = dx**2 + dy**2 < 1
    near_eye = np.min([np.hypot(points[:, 0] - e[0], points[:, 1] - e[1]) for e in eyes],
                      axis=0) < 0.32 * eye_distance
    above = points[:, 1] > eyes[:, 1].mean() + 0.2 * eye_distance
    beside = np.min([np.abs(points[:, 0] - e[0]) for e in eyes], axis=0) < 0.6 * eye_distance
    brows = above & beside & ~near_eye
    jaw = (flame_points.of(lower_side.astype(np.float64)) > 0.5) & ~mouth
    regions = np.full(len(points), REGIONS.index("cheeks"))
    regions[jaw] = REGIONS.index("jaw")
    regions[brows] = REGIONS.index("brows")
    regions[near_eye] = REGIONS.index("eyes")
    regions[mouth] = REGIONS.index("mouth")
    distance = np.hypot(dx, dy)
    share = 1 - np.clip((distance - 1.0) / 1.0, 0, 1)
    share = share * share * (3 - 2 * share)
    return regions.astype(np.int64), share


def _carried_lip_pairs(fit, info, character: CharacterGeometry) -> np.ndarray:
    """The character's vertices nearest to FLAME's inner-lip pairs, carried by the fit."""
    if not len(info.lip_upper):
        return np.zeros((0, 2), np.int64)
    ids = fit.points.vertices[:, 0]
    where = {int(i): k for k, i in enumerate(ids)}
    pairs = []
    for u, lo in zip(info.lip_upper, info.lip_lower, strict=True):
        if int(u) in where and int(lo) in where:
            tu, tl = fit.triangles[where[int(u)]], fit.triangles[where[int(lo)]]
            bu, bl = fit.barycentrics[where[int(u)]], fit.barycentrics[where[int(lo)]]
            pairs.append((character.faces[tu][np.argmax(bu)], character.faces[tl][np.argmax(bl)]))
    pairs = np.array(pairs, np.int64).reshape(-1, 2)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _jaw_gain(mapping: CharacterMapping, flame: FlameData, info, marks) -> float:
    """The character's jaw angle per FLAME jaw angle that moves its lower lip as far (in
    proportion to the mouth) as FLAME's: the travel per radian at the lower inner lip."""
    v = flame.v_template
    pivot = flame.rest_joints()[JAW_JOINT]
    lip = info.landmarks["lower_lip_inner"]
    w_flame = float(lip.of(flame.weights[:, JAW_JOINT])[0])
    flame_travel = w_flame * np.linalg.norm(lip.of(v)[0] - pivot)
    target = flame_travel * mapping.mouth_width / max(mapping.flame_mouth_width, 1e-9)
    lower = mapping.lip_positions[:, 1] if len(mapping.lip_positions) else None
    if lower is None or not len(lower):
        return 1.0
    middle = len(lower) // 2
    order = np.argsort(lower @ mapping.rotation[:, 0])
    k = order[middle]
    char_travel = mapping.lip_jaw_weights[k, 1] * np.linalg.norm(lower[k] - mapping.jaw_pivot)
    if char_travel <= 1e-9 or target <= 1e-9:
        return 1.0
    return float(np.clip(target / char_travel, 0.5, 2.0))


def _probe_take(flame: FlameData, mapping: CharacterMapping) -> tuple[np.ndarray, np.ndarray]:
    """Frames that show each expression component at ±1 and the jaw opening: what the
    set-up's quality is measured on."""
    n = flame.n_expression
    points = FlamePoints(mapping.flame_vertices, mapping.flame_weights)
    basis = points.of(flame.shapedirs[:, :, SHAPE_SPACE_DIM:])
    moving = np.flatnonzero(np.abs(basis).reshape(-1, n).max(0) > 1e-7)
    frames = []
    for e in moving:
        for sign in (1.0, -1.0):
            row = np.zeros(n)
            row[e] = sign
            frames.append(row)
    expression = np.array(frames).reshape(-1, n)
    jaw = np.zeros((len(expression), 3))
    jaw_rows = np.zeros((3, 3))
    jaw_rows[:, 0] = (0.1, 0.2, 0.3)
    return (np.concatenate([expression, np.zeros((3, n))]), np.concatenate([jaw, jaw_rows]))


def _setup_notes(mapping: CharacterMapping, quality: dict[str, float]) -> list[str]:
    notes = []
    basis = np.linalg.norm(mapping.key_basis, axis=1)  # (P, K)
    jaw_motion = mapping.jaw_weights * np.linalg.norm(mapping.positions - mapping.jaw_pivot,
                                                      axis=1) * 0.2
    strongest = max(float(basis.max(initial=0)), float(jaw_motion.max(initial=0)), 1e-12)
    for r, region in enumerate(REGIONS):
        here = mapping.point_region == r
        if not here.any():
            continue
        reach = max(float(basis[here].max(initial=0)), float(jaw_motion[here].max(initial=0)))
        if reach < STILL * strongest:
            notes.append(f"The character has no shape keys that move its {_region_words(region)}; "
                         f"that part of the motion is not retargeted.")
        elif region in quality and quality[region] < 0.5:
            notes.append(f"The character can express only {quality[region]:.0%} of the "
                         f"{_region_words(region)}' motion.")
    if not len(mapping.lip_positions):
        notes.append("No inner lips were found on the character, so lip closures (p, b, m) "
                     "are not enforced; place the mouth landmarks and set it up again.")
    if mapping.jaw_bone is None and "jawOpen" not in mapping.arkit:
        notes.append("The character has no jaw bone and no jawOpen key; its mouth opens only "
                     "as far as its other keys allow.")
    if mapping.arkit:
        notes.append(f"{len(mapping.arkit)} of the 52 ARKit keys were recognised.")
    return notes


def _region_words(region: str) -> str:
    return {"mouth": "mouth", "jaw": "jaw and chin", "cheeks": "cheeks and nose",
            "eyes": "eyes and eyelids", "brows": "brows"}[region]


# -- a take ------------------------------------------------------------------------------------

def _rotations(jaw: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(np.asarray(jaw, np.float64))


@dataclass
class _Source:
    """FLAME's arrays at the mapping's points, and the projections onto the keys."""

    x0: np.ndarray  # (P, 3)
    basis: np.ndarray  # (P, 3, E)
    correctives: np.ndarray  # (P, 3, 9) the jaw's pose correctives
    jaw_weight: np.ndarray  # (P,)
    pivot: np.ndarray  # (3,)
    pivot_basis: np.ndarray  # (3, E)


def _source(mapping: CharacterMapping, flame: FlameData, n_expression: int) -> _Source:
    if flame.n_vertices != mapping.flame_vertex_count:
        raise ValueError(f"This character was set up for a FLAME head of "
                         f"{mapping.flame_vertex_count} vertices; the take's has "
                         f"{flame.n_vertices}. Set the character up again for this head.")
    points = FlamePoints(mapping.flame_vertices, mapping.flame_weights)
    x0 = points.of(flame.v_template)
    if np.abs(x0 - mapping.flame_rest).max(initial=0.0) > 1e-6:
        raise ValueError("This character was set up for another FLAME head of the same size "
                         "(its template differs); set the character up again for this head.")
    dirs = flame.shapedirs[:, :, SHAPE_SPACE_DIM:SHAPE_SPACE_DIM + n_expression]
    return _Source(x0=x0, basis=points.of(dirs),
                   correctives=points.of(flame.posedirs[:, :, 9:18]),
                   jaw_weight=points.of(flame.weights[:, JAW_JOINT]),
                   pivot=flame.j_regressor[JAW_JOINT] @ flame.v_template,
                   pivot_basis=np.einsum("v,vce->ce", flame.j_regressor[JAW_JOINT], dirs))


def source_motion(source: _Source, expression: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """FLAME's displacement (T, P, 3) at the points: expression, jaw correctives, and the
    jaw's skinning (neck and eyes at rest, as in EMOTE's takes)."""
    rotation = _rotations(jaw)
    feature = (rotation - np.eye(3)).reshape(len(jaw), 9)
    p = len(source.x0)
    shaped = (expression @ source.basis.reshape(p * 3, -1).T
              + feature @ source.correctives.reshape(p * 3, 9).T).reshape(len(jaw), p, 3)
    pivot = source.pivot + expression @ source.pivot_basis.T  # (T, 3)
    arm = source.x0[None] + shaped - pivot[:, None, :]
    turned = np.einsum("tcd,tpd->tpc", rotation - np.eye(3), arm)
    return shaped + source.jaw_weight[None, :, None] * turned


def retarget(mapping: CharacterMapping, flame: FlameData, expression: np.ndarray,
             jaw: np.ndarray, fps_scale: float = 1.0, closure: np.ndarray | None = None, *,
             smooth: bool = True, enforce_contact: bool = True) -> Retargeted:
    """A FLAME take (expression (T, E), jaw (T, 3)) on the character (see the module's
    description). ``fps_scale`` is the take's frame rate over 25 fps (it keeps the temporal
    smoothness the same in seconds); ``closure`` (T,) 0..1 marks frames whose lips must be
    shut (EMOTE's p/b/m track; from ``FULLY_SHUT``) in addition to those where the source's lips
    are shut."""
    expression = np.asarray(expression, np.float64)
    jaw = np.asarray(jaw, np.float64)
    if expression.ndim != 2 or jaw.shape != (len(expression), 3):
        raise ValueError(f"A take needs expression (T, E) and jaw (T, 3) of one length; got "
                         f"{expression.shape} and {jaw.shape}.")
    if expression.shape[1] > flame.n_expression:
        raise ValueError(f"The take has {expression.shape[1]} expression components; the "
                         f"FLAME head has {flame.n_expression}.")
    if not (np.isfinite(expression).all() and np.isfinite(jaw).all()):
        raise ValueError("The take holds numbers that are not finite; regenerate it.")
    frames, n_exp = expression.shape
    k = mapping.n_keys
    lo, hi = mapping.key_ranges[:, 0], mapping.key_ranges[:, 1]
    if frames == 0:
        return Retargeted(np.zeros((0, k)), None if mapping.jaw_bone is None else np.zeros((0, 3)))
    src = _source(mapping, flame, n_exp)
    rotation, a = mapping.rotation, mapping.point_scale
    basis = mapping.key_basis  # (P, 3, K)
    q = basis * mapping.point_weight[:, None, None]  # Ω·B
    flat = basis.reshape(-1, k)
    gram = q.reshape(-1, k).T @ flat

    # Source terms projected onto the keys (see the module's description).
    qa = q * a[:, None, None]
    qr = np.einsum("pck,cd->pdk", qa, rotation)  # (Rᵀ)·(a Ω B): FLAME-frame rows
    m_expression = src.basis.reshape(-1, n_exp).T @ qr.reshape(-1, k)  # (E, K)
    m_correctives = src.correctives.reshape(-1, 9).T @ qr.reshape(-1, k)  # (9, K)
    jaw_rot = _rotations(jaw)
    feature = (jaw_rot - np.eye(3)).reshape(frames, 9)
    b = expression @ m_expression + feature @ m_correctives
    qj = qa * src.jaw_weight[:, None, None]
    arm0 = src.x0 - src.pivot
    arm_basis = np.concatenate([src.basis - src.pivot_basis[None], src.correctives], axis=2)
    h0 = np.einsum("pck,pd->kcd", qj, arm0)
    h1 = np.tensordot(qj, arm_basis, axes=([0], [0]))  # (c, K, d, m)
    h1 = np.transpose(h1, (1, 0, 2, 3)).reshape(k, 9, -1)
    turn = np.einsum("ab,tbd->tad", rotation, jaw_rot - np.eye(3)).reshape(frames, 9)
    z = np.concatenate([expression, feature], axis=1)
    b += turn @ h0.reshape(k, 9).T
    b += (turn[:, :, None] * z[:, None, :]).reshape(frames, -1) @ h1.reshape(k, -1).T

    # The character's jaw bone: its own motion at the points comes off.
    char_jaw = None
    if mapping.jaw_bone is not None:
        char_jaw = jaw * mapping.jaw_gain
        bone_turn = (rotation @ _rotations(char_jaw) @ rotation.T - np.eye(3)).reshape(frames, 9)
        h2 = np.einsum("pck,p,pd->kcd", q, mapping.jaw_weights,
                       mapping.positions - mapping.jaw_pivot).reshape(k, 9)
        b -= bone_turn @ h2.T
    else:
        bone_turn = np.zeros((frames, 9))

    # Where the source's lips are shut, the character's must touch.
    closed = _source_closed(mapping, flame, expression, jaw)
    if closure is not None:
        closure = np.asarray(closure, np.float64).reshape(-1)
        if closure.shape != (frames,) or not np.isfinite(closure).all():
            raise ValueError(f"closure must be one finite number a frame ({frames}); got "
                             f"shape {closure.shape}.")
        # A closure track's ramps (partly shut) are the source's own business: its lips are
        # followed there; contact is for the frames it marks fully shut.
        closed = np.maximum(closed, (closure >= FULLY_SHUT).astype(np.float64))
    contact = np.zeros(frames)
    lip_rows = lip_gram = lip_rhs = None
    if enforce_contact and len(mapping.lip_positions) and closed.any():
        lip_rows = (mapping.lip_basis[:, 0] - mapping.lip_basis[:, 1]).reshape(-1, k)
        arm_lips = (mapping.lip_jaw_weights[:, 0, None] * (mapping.lip_positions[:, 0]
                                                            - mapping.jaw_pivot)
                    - mapping.lip_jaw_weights[:, 1, None] * (mapping.lip_positions[:, 1]
                                                              - mapping.jaw_pivot))
        per_point = float(np.mean(mapping.point_weight))
        kappa = mapping.contact * per_point * len(mapping.point_weight) / max(
            len(mapping.lip_positions), 1) / 50
        lip_gram = kappa * lip_rows.T @ lip_rows
        h3 = np.einsum("qck,qd->kcd", lip_rows.reshape(-1, 3, k), arm_lips).reshape(k, 9)
        lip_rhs = -kappa * (bone_turn @ h3.T)  # (T, K)
        contact = closed

    # Each key's L1 and smoothness in proportion to its own effect (its Gram diagonal): the
    # same threshold and time constant for a brow key as for the jaw.
    own = np.maximum(np.diag(gram), 1e-12 * max(float(np.max(np.diag(gram))), 1e-30))
    l1 = mapping.sparsity * own
    l2 = (mapping.smoothness * own * fps_scale**2) if smooth else np.zeros(k)
    weights = _fista(gram, b, lip_gram, lip_rhs, contact, lo, hi, l1, l2)
    report = _report(mapping, src, expression, jaw, weights, char_jaw)
    notes = [f"The character reproduces {share:.0%} of the {_region_words(region)}' motion "
             "in this take." for region, share in report.items() if share < 0.5]
    if len(mapping.lip_positions) and enforce_contact:
        gap = lip_gap(mapping, weights, char_jaw)
        typical = max(float(np.percentile(gap, 90)), 1e-6)
        shut = closed >= 0.999
        if shut.any() and np.mean(gap[shut] < CLOSED * typical) < 0.9:
            notes.append("The character's keys cannot shut its lips fully at every p, b and m.")
    return Retargeted(weights=weights, jaw=char_jaw, report=report, notes=notes, closed=closed)


def _source_closed(mapping: CharacterMapping, flame: FlameData, expression: np.ndarray,
                   jaw: np.ndarray) -> np.ndarray:
    """How shut (T,) the source's lips are: 1 under ``CLOSED`` × its typical opening, 0 over
    ``OPEN`` ×, smooth between."""
    if not len(mapping.flame_lips):
        return np.zeros(len(expression))
    pairs = FlamePoints.at_vertices(mapping.flame_lips.reshape(-1))
    dirs = flame.shapedirs[:, :, SHAPE_SPACE_DIM:SHAPE_SPACE_DIM + expression.shape[1]]
    src = _Source(x0=pairs.of(flame.v_template), basis=pairs.of(dirs),
                  correctives=pairs.of(flame.posedirs[:, :, 9:18]),
                  jaw_weight=pairs.of(flame.weights[:, JAW_JOINT]),
                  pivot=flame.j_regressor[JAW_JOINT] @ flame.v_template,
                  pivot_basis=np.einsum("v,vce->ce", flame.j_regressor[JAW_JOINT], dirs))
    posed = src.x0[None] + source_motion(src, expression, jaw)
    posed = posed.reshape(len(expression), -1, 2, 3)
    gap = np.linalg.norm(posed[:, :, 0] - posed[:, :, 1], axis=-1).mean(axis=1)
    typical = max(float(np.percentile(gap, 90)), 0.05 * mapping.flame_mouth_width, 1e-6)
    t = np.clip((gap / typical - CLOSED) / (OPEN - CLOSED), 0, 1)
    return 1 - t * t * (3 - 2 * t)


def _fista(gram: np.ndarray, b: np.ndarray, lip_gram: np.ndarray | None,
           lip_rhs: np.ndarray | None, contact: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           l1: np.ndarray, l2: np.ndarray, iterations: int | None = None) -> np.ndarray:
    """The box-constrained, L1- and first-difference-regularised batched least squares."""
    frames, k = b.shape
    diag = np.sqrt(np.maximum(np.diag(gram), 1e-30))
    bound = (np.abs(gram) * diag[None, :]).sum(1) / diag  # scaled Gershgorin: gram ≤ diag(bound)
    step_bound = np.broadcast_to(bound, (frames, k)).copy()
    rhs = b.copy()
    active = contact > 0
    if lip_gram is not None and active.any():
        ldiag = np.sqrt(np.maximum(np.diag(lip_gram), 1e-30))
        lbound = (np.abs(lip_gram) * ldiag[None, :]).sum(1) / ldiag
        step_bound += contact[:, None] * lbound[None, :]
        rhs = rhs + contact[:, None] * lip_rhs
    step_bound += 4 * l2[None, :] + 1e-12 * float(np.max(bound, initial=1.0))
    # float32 from here: the iterations are memory-bound and the answer needs no more digits
    # than the sliders show.
    f32 = np.float32
    step = (1.0 / step_bound).astype(f32)
    # Start from each frame's own ridge solution, clipped.
    ridge = 1e-3 * float(np.mean(np.diag(gram)) or 1.0)
    start = np.linalg.solve(gram + ridge * np.eye(k), rhs.T).T
    lo32, hi32 = lo.astype(f32), hi.astype(f32)
    w = np.clip(start, lo, hi).astype(f32)
    y, t = w.copy(), 1.0
    gram32, rhs32 = gram.astype(f32), rhs.astype(f32)
    threshold = (l1[None, :] * step).astype(f32)
    smoothing = l2.astype(f32) if l2.any() and frames > 1 else None
    rows = np.flatnonzero(active) if lip_gram is not None else np.zeros(0, np.int64)
    if len(rows):
        lip32 = lip_gram.astype(f32)
        lip_scale = contact[rows, None].astype(f32)
    for _ in range(ITERATIONS if iterations is None else iterations):
        grad = y @ gram32
        grad -= rhs32
        if len(rows):
            grad[rows] += lip_scale * (y[rows] @ lip32)
        if smoothing is not None:
            diff = np.diff(y, axis=0)
            diff *= smoothing
            grad[:-1] -= diff
            grad[1:] += diff
        grad *= step
        z = y - grad
        magnitude = np.abs(z)
        magnitude -= threshold
        np.maximum(magnitude, 0, out=magnitude)
        w_next = np.clip(np.copysign(magnitude, z), lo32, hi32)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = w_next + f32((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return np.clip(w.astype(np.float64), lo, hi)  # float32's 0.40000001 is not within 0.4


def character_motion(mapping: CharacterMapping, weights: np.ndarray, jaw: np.ndarray | None
                     ) -> np.ndarray:
    """The character's displacement (T, P, 3) at the points: keys, then the jaw bone."""
    p = mapping.n_points
    motion = (weights @ mapping.key_basis.reshape(p * 3, -1).T).reshape(len(weights), p, 3)
    if jaw is not None and mapping.jaw_bone is not None:
        r = mapping.rotation
        turn = r @ _rotations(jaw) @ r.T - np.eye(3)
        moved = mapping.positions[None] + motion - mapping.jaw_pivot
        motion = motion + mapping.jaw_weights[None, :, None] * np.einsum(
            "tcd,tpd->tpc", turn, moved)
    return motion


def lip_gap(mapping: CharacterMapping, weights: np.ndarray, jaw: np.ndarray | None
            ) -> np.ndarray:
    """The character's mean inner-lip gap (T,) in metres for ``weights`` and ``jaw``."""
    rest = mapping.lip_positions  # (Q, 2, 3)
    moved = rest[None] + np.einsum("qsck,tk->tqsc", mapping.lip_basis, weights)
    if jaw is not None and mapping.jaw_bone is not None:
        r = mapping.rotation
        turn = r @ _rotations(jaw) @ r.T - np.eye(3)
        moved = moved + mapping.lip_jaw_weights[None, :, :, None] * np.einsum(
            "tcd,tqsd->tqsc", turn, moved - mapping.jaw_pivot)
    return np.linalg.norm(moved[:, :, 0] - moved[:, :, 1], axis=-1).mean(axis=1)


def _report(mapping: CharacterMapping, src: _Source, expression: np.ndarray, jaw: np.ndarray,
            weights: np.ndarray, char_jaw: np.ndarray | None) -> dict[str, float]:
    """Per region, the share of the source's motion (scaled to the character) reproduced:
    1 − ‖character − target‖² / ‖target‖², on up to ``REPORT_FRAMES`` frames."""
    frames = len(expression)
    pick = np.unique(np.linspace(0, frames - 1, min(frames, REPORT_FRAMES)).astype(np.int64))
    target = source_motion(src, expression[pick], jaw[pick])
    target = mapping.point_scale[None, :, None] * (target @ mapping.rotation.T)
    got = character_motion(mapping, weights[pick], None if char_jaw is None else char_jaw[pick])
    report = {}
    source_size = np.sum(target**2, axis=(0, 2))
    error = np.sum((got - target) ** 2, axis=(0, 2))
    strongest = float(source_size.max(initial=0))
    for r, region in enumerate(REGIONS):
        here = mapping.point_region == r
        total = float(source_size[here].sum())
        if not here.any() or total <= 1e-6 * strongest * max(here.sum(), 1) or total <= 0:
            continue
        report[region] = float(np.clip(1 - error[here].sum() / total, 0.0, 1.0))
    return report


def bone_rotations(mapping: CharacterMapping, jaw: np.ndarray) -> np.ndarray:
    """The jaw bone's pose rotations (T, 3, 3) in its own rest frame for FLAME-frame jaw
    axis-angles (T, 3): ``Bᵀ·(C·R·Cᵀ)·B`` with C the fitted FLAME → object rotation and B the
    bone's rest orientation."""
    c, rest = mapping.rotation, mapping.jaw_rest
    return rest.T @ (c @ _rotations(jaw) @ c.T) @ rest


def pose_character(character: CharacterGeometry, mapping: CharacterMapping,
                   result: Retargeted) -> np.ndarray:
    """The character's vertices (T, V, 3) with the take applied as Blender would: shape keys,
    then the jaw bone (linear blend skinning of its weights about its head)."""
    order = [character.key_names.index(n) for n in mapping.key_names]
    offsets = character.key_offsets[order]
    v = character.vertices[None] + np.einsum("kvc,tk->tvc", offsets, result.weights)
    if result.jaw is not None and character.jaw is not None:
        r = mapping.rotation
        turn = r @ _rotations(result.jaw) @ r.T - np.eye(3)
        v = v + np.asarray(character.jaw.weights)[None, :, None] * np.einsum(
            "tcd,tvd->tvc", turn, v - np.asarray(character.jaw.head))
    return v
