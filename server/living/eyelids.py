# SPDX-License-Identifier: GPL-3.0-or-later
"""The eyelid-closing direction in the expression space of the user's own FLAME file.

FLAME has no eyelid key. Its expression basis ``E`` (``shapedirs[..., 300:]``) can close the
lids, so the direction is found from the file itself and works for any FLAME file:

1. **Eyes.** The eye centres are the eye joints' rest positions, ``J_regressor · v_template``
   (joints 3 and 4). Eyeball vertices are those skinned mostly (weight > 0.5) to an eye joint;
   the eyeball radius R is their median distance from the centre, or, when a file has no
   eyeball vertices, 0.2 × the distance between the eyes (a 12 mm eyeball at a 62 mm
   interocular distance).
2. **Lid vertices.** Around each eye, candidates are the other vertices within
   ``|x − x_eye| ≤ R`` whose distance from the centre lies in [0.9 R, 1.8 R] (in front of the
   eyeball's surface, not the hidden skin behind it; [0.5 R, 1.8 R] without eyeballs) and that
   are not behind the centre by more than R/2 (z is toward the viewer). Above the centre
   (``y − y_eye > 0.2 R``) they belong to the upper lid, below (``< −0.2 R``) to the lower lid.
   The lid *margins* are the candidates nearest the opening: an upper candidate with no other
   upper candidate below it within 0.12 R sideways, and the same upward for the lower lid. Each
   upper margin vertex is paired with the lower margin vertex nearest to it sideways (pairs
   more than 0.3 R apart sideways are dropped).
3. **Mouth region.** Non-eyeball vertices skinned to the jaw (weight > 0.1) or lower than
   60 % of the way from the eyes down to the jaw joint: the lips, the chin and the lower face.
4. **Least squares.** With ``U`` and ``L`` the basis rows of the paired upper and lower margin
   vertices and ``u``, ``l`` their rest positions, the closing coefficients ``e`` minimise

       ‖(U − L)·e − (l − u)‖²  +  w_mouth · ‖M·e‖²  +  α · ‖e‖²

   (upper lids brought onto the lower lids; ``M`` the mouth rows, ``w_mouth`` = 10⁴ × pairs /
   mouth vertices so the mouth dominates; α = 10⁻⁶ × the mean of diag(Aᵀ A), a ridge that
   keeps ``e`` small where the basis is redundant), solved as one stacked linear least-squares
   problem. A file whose basis cannot close its lids without moving the mouth still gets the
   best compromise, and :class:`EyelidDirection` says how far it got (``closed_gap`` against
   ``open_gap``, ``mouth_motion``).
5. **Closing from any expression.** The solution is linear in the target: ``e = M·(l − u)``.
   A frame whose own expression ψ already moved the lids (a squint narrows them, wide eyes
   open them) closes with ``M·((l − u) − (U − L)·ψ) = e − C·ψ``, ``C = M·(U − L)``; so a blink
   at closure c adds ``c·(e − C·ψ)`` and the lids meet instead of overshooting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..flame import SHAPE_SPACE_DIM, FlameData

LEFT_EYE, RIGHT_EYE, JAW = 3, 4, 2
EYEBALL_WEIGHT = 0.5
RADIUS_PER_EYE_DISTANCE = 0.2
MOUTH_WEIGHT = 1e4
RIDGE = 1e-6


@dataclass
class EyelidVertices:
    """Paired lid-margin vertices (``upper[i]`` closes onto ``lower[i]``), the mouth region,
    and the eye geometry they came from."""

    upper: np.ndarray  # (P,) vertex indices
    lower: np.ndarray  # (P,)
    mouth: np.ndarray  # (M,)
    centres: np.ndarray  # (2, 3) left, right
    radius: float


@dataclass
class EyelidDirection:
    """Expression coefficients (E,) that close the eyelids (closure 1), and what they do."""

    expression: np.ndarray
    lids: EyelidVertices
    open_gap: float  # metres: mean distance of the paired margin vertices at rest
    closed_gap: float  # the same with ``expression`` applied
    mouth_motion: float  # metres: the largest mouth-vertex displacement it causes
    # (E, E): how a frame's own expression moves the closing coefficients, so that the lids
    # close from wherever that expression put them (a squint, wide eyes) instead of overshooting
    correction: np.ndarray | None = None

    def at(self, closure: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """Per-frame expression offsets (T, E) for per-frame closure (T,); with the frames'
        own ``expression`` (T, ≤E), offsets that close the lids from where it put them."""
        return closing_offsets(self.expression, self.correction, closure, expression)


def closing_offsets(direction: np.ndarray, correction: np.ndarray | None, closure: np.ndarray,
                    expression: np.ndarray | None = None) -> np.ndarray:
    """Expression offsets (T, E) that close the lids by ``closure`` (T,): ``c·(e − C·ψ)`` with
    ``e`` the closing ``direction`` (E,), ``C`` its ``correction`` (E, E) and ψ the frames'
    own ``expression`` (T, ≤E) (without either, ``c·e``); see the module's step 5."""
    closure = np.asarray(closure, np.float64)
    offsets = np.broadcast_to(direction, (len(closure), len(direction)))
    if expression is not None and correction is not None:
        e = np.asarray(expression, np.float64)
        n = min(e.shape[1], len(direction))
        offsets = offsets - e[:, :n] @ correction[:, :n].T
    return closure[:, None] * offsets


def find_eyelids(flame: FlameData) -> EyelidVertices:
    """The lid-margin pairs and the mouth region of ``flame``, from its geometry (see the
    module's description). Raises ``ValueError`` when no lid vertices are found."""
    v = flame.v_template
    joints = flame.rest_joints()
    centres = joints[[LEFT_EYE, RIGHT_EYE]]
    eyeball = flame.weights[:, [LEFT_EYE, RIGHT_EYE]].max(axis=1) > EYEBALL_WEIGHT
    eye_distance = float(np.linalg.norm(centres[0] - centres[1]))
    has_eyeballs = bool(eyeball.any())
    if has_eyeballs:
        distances = [np.linalg.norm(v[eyeball & (flame.weights[:, j] > EYEBALL_WEIGHT)]
                                    - joints[j], axis=1) for j in (LEFT_EYE, RIGHT_EYE)]
        radius = float(np.median(np.concatenate([d for d in distances if len(d)])))
    else:
        radius = RADIUS_PER_EYE_DISTANCE * eye_distance
    if radius <= 0:
        raise ValueError("This FLAME file's eye joints coincide; its eyelids cannot be found.")
    inner = 0.9 if has_eyeballs else 0.5
    upper_all, lower_all = [], []
    for centre in centres:
        offset = v - centre
        distance = np.linalg.norm(offset, axis=1)
        near = (~eyeball & (np.abs(offset[:, 0]) <= radius)
                & (distance >= inner * radius) & (distance <= 1.8 * radius)
                & (offset[:, 2] >= -0.5 * radius))
        upper = np.flatnonzero(near & (offset[:, 1] > 0.2 * radius))
        lower = np.flatnonzero(near & (offset[:, 1] < -0.2 * radius))
        upper = _margin(v, upper, radius, toward=-1)
        lower = _margin(v, lower, radius, toward=+1)
        for u in upper:
            if not len(lower):
                break
            sideways = np.abs(v[lower, 0] - v[u, 0])
            best = int(np.argmin(sideways))
            if sideways[best] <= 0.3 * radius:
                upper_all.append(int(u))
                lower_all.append(int(lower[best]))
    if not upper_all:
        raise ValueError("No eyelid vertices were found around this FLAME file's eye joints; "
                         "is it a FLAME head (eye joints 3 and 4 at the eyes)?")
    eye_y = centres[:, 1].mean()
    below = eye_y - 0.6 * (eye_y - joints[JAW, 1])
    mouth = np.flatnonzero(~eyeball & ((flame.weights[:, JAW] > 0.1) | (v[:, 1] < below)))
    return EyelidVertices(upper=np.array(upper_all), lower=np.array(lower_all), mouth=mouth,
                          centres=centres, radius=radius)


def _margin(v: np.ndarray, candidates: np.ndarray, radius: float, toward: int) -> np.ndarray:
    """The candidates with no other candidate nearer the opening within 0.12 R sideways
    (``toward`` = −1: the opening is below, the upper lid; +1: above, the lower lid)."""
    keep = []
    for i in candidates:
        beside = candidates[np.abs(v[candidates, 0] - v[i, 0]) <= 0.12 * radius]
        if toward < 0 and v[beside, 1].min() >= v[i, 1]:
            keep.append(i)
        if toward > 0 and v[beside, 1].max() <= v[i, 1]:
            keep.append(i)
    return np.array(keep, np.int64)


def eyelid_direction(flame: FlameData, lids: EyelidVertices | None = None,
                     mouth_weight: float = MOUTH_WEIGHT, ridge: float = RIDGE
                     ) -> EyelidDirection:
    """The expression coefficients that bring the upper-lid margins onto the lower lids of
    ``flame`` while keeping the mouth still (weighted least squares with a ridge, see the
    module's description)."""
    lids = lids or find_eyelids(flame)
    basis = flame.shapedirs[:, :, SHAPE_SPACE_DIM:]  # (V, 3, E)
    n_exp = basis.shape[2]
    v = flame.v_template
    a = (basis[lids.upper] - basis[lids.lower]).reshape(-1, n_exp)
    b = (v[lids.lower] - v[lids.upper]).reshape(-1)
    mouth = basis[lids.mouth].reshape(-1, n_exp)
    scale = np.mean(np.sum(a * a, axis=0)) or 1.0
    w = mouth_weight * len(lids.upper) / max(len(lids.mouth), 1)
    stacked = np.vstack([a, np.sqrt(w) * mouth, np.sqrt(ridge * scale) * np.eye(n_exp)])
    # The solution is linear in the lid target b: e = M·b. A frame whose expression ψ already
    # moved the lids needs M·(b − a·ψ) = e − (M·a)·ψ, hence the correction M·a.
    rhs = np.zeros((len(stacked), len(b) + 1))
    rhs[:len(b), 0] = b
    rhs[:len(b), 1:] = np.eye(len(b))
    solved = np.linalg.lstsq(stacked, rhs, rcond=None)[0]
    e, correction = solved[:, 0], solved[:, 1:] @ a
    closed = v + np.einsum("vce,e->vc", basis, e)
    open_gap = float(np.linalg.norm(v[lids.upper] - v[lids.lower], axis=1).mean())
    closed_gap = float(np.linalg.norm(closed[lids.upper] - closed[lids.lower], axis=1).mean())
    motion = float(np.linalg.norm(closed[lids.mouth] - v[lids.mouth], axis=1).max()) \
        if len(lids.mouth) else 0.0
    return EyelidDirection(expression=e, lids=lids, open_gap=open_gap, closed_gap=closed_gap,
                           mouth_motion=motion, correction=correction)
