# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the character's face is: FLAME's template fitted to the character's rest mesh.

The fit gives every FLAME point a partner on the character's surface (a triangle and
barycentrics) and the character's landmarks, in four steps, all in the character's object
space:

1. **The mouth.** The character's lips are found from its geometry
   (:func:`find_character_mouth`): an upper lip's margin has neighbours above it and none
   below, a lower lip's the other way round; pairs of such vertices close in space but more
   than ``MIN_RINGS`` edges apart on the mesh (the two sides of the mouth slit) seed it, it
   grows along both lips to the corners, and the corners are the vertices its two ends share.
   Its corners and inner-lip middles anchor FLAME's (from the landmark embedding, else
   :func:`server.living.closure.find_lips`).
2. **Start.** FLAME's axes turned to the character's ``up``/``front``; FLAME's mouth on the
   character's, sized by the mouth's width, then the best of a few scales about it
   (``SCALE_TRIES``: mouths vary more than heads) by the mean distance of FLAME's face to the
   character's surface. Without a mouth, the *faces* meet: FLAME's vertices its expression
   basis moves and the character's any key or the jaw bone moves (centroids, heights).
3. **Rigid + scale, then identity shape.** Iterated closest points: weighted Umeyama
   similarity on closest points plus the anchors, then ridge least squares for FLAME's identity
   shape ``β`` (``‖s·R·(v + S·β) + t − c‖² + α‖β‖²``).
4. **Non-rigid.** A Gaussian radial-basis warp takes the anchors exactly onto their targets
   (a wider mouth slides FLAME's corners out), then rounds of closest points whose offsets are
   smoothed over FLAME's mesh (``SMOOTHING`` Jacobi sweeps of neighbour averaging). Near the
   mouth an upper-lip point may only land on the character's upper side and a lower-lip point
   on its lower side: the slit's two sides touch, and only the side tells them apart.

Landmarks given by the artist (any of :data:`LANDMARK_NAMES`) replace the found ones or join
them as anchors (steps 1, 3 and 4) with the same weight; the rest of the fit follows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..flame import JAW_JOINT, LEFT_EYE_JOINT, RIGHT_EYE_JOINT, SHAPE_SPACE_DIM, FlameData
from .character import CharacterGeometry, flame_to_object_rotation

MIN_RINGS = 3
MOVING = 0.02  # × the largest displacement: a vertex a key moves less than this is still
ICP_ROUNDS = 6
SCALE_TRIES = (0.65, 0.75, 0.85, 0.95, 1.05, 1.15)
NONRIGID_ROUNDS = 3
SMOOTHING = 12
SHAPE_COMPONENTS = 100
SHAPE_RIDGE = 1e-2
MAX_POINTS = 1400  # the dense corresponded set

# The 68-point layout's static part (landmarks 17..67) as names, for FLAME's embedding.
_STATIC_68 = {
    "brow_right_outer": (17,), "brow_right_inner": (21,), "brow_left_inner": (22,),
    "brow_left_outer": (26,), "nose_tip": (30,), "eye_right_outer": (36,),
    "eye_right_inner": (39,), "eye_left_inner": (42,), "eye_left_outer": (45,),
    "eye_right_upper": (37, 38), "eye_right_lower": (40, 41), "eye_left_upper": (43, 44),
    "eye_left_lower": (46, 47), "mouth_right": (48,), "mouth_left": (54,),
    "upper_lip_outer": (51,), "lower_lip_outer": (57,), "upper_lip_inner": (62,),
    "lower_lip_inner": (66,),
}
LANDMARK_NAMES = tuple(_STATIC_68) + ("chin",)
MOUTH_ANCHORS = ("mouth_left", "mouth_right", "upper_lip_inner", "lower_lip_inner")


@dataclass
class FlamePoints:
    """Points on FLAME's mesh as combinations of up to three vertices: ``vertices`` (P, 3),
    ``weights`` (P, 3) summing to 1."""

    vertices: np.ndarray
    weights: np.ndarray

    def of(self, values: np.ndarray) -> np.ndarray:
        """``values`` (V, ...) at the points: (P, ...)."""
        picked = values[self.vertices]  # (P, 3, ...)
        w = self.weights.reshape(self.weights.shape + (1,) * (picked.ndim - 2))
        return (picked * w).sum(axis=1)

    def __len__(self) -> int:
        return len(self.vertices)

    @classmethod
    def at_vertices(cls, indices: np.ndarray) -> FlamePoints:
        indices = np.asarray(indices, np.int64).reshape(-1)
        return cls(np.repeat(indices[:, None], 3, axis=1),
                   np.tile([1.0, 0.0, 0.0], (len(indices), 1)))

    def join(self, other: FlamePoints) -> FlamePoints:
        return FlamePoints(np.concatenate([self.vertices, other.vertices]),
                           np.concatenate([self.weights, other.weights]))


@dataclass
class FlameFace:
    """What the retarget needs to know of a FLAME head: its named landmarks, its inner-lip
    pairs, the face region and the points of FLAME's face that are corresponded."""

    landmarks: dict[str, FlamePoints]  # name → one point
    lip_upper: np.ndarray  # (Q,) vertex indices of the inner-lip pairs
    lip_lower: np.ndarray
    face: np.ndarray  # (N,) vertices of the face (what the expression basis or jaw moves)
    lower_side: np.ndarray  # (V,) bool: skinned to the jaw


@dataclass
class FaceFit:
    """The fitted FLAME → character map and the correspondences it gives."""

    scale: float
    rotation: np.ndarray  # (3, 3) FLAME axes → character object axes
    translation: np.ndarray  # (3,)
    shape: np.ndarray  # (n,) FLAME identity coefficients
    points: FlamePoints  # the dense FLAME points
    triangles: np.ndarray  # (P,) their partners on the character: triangle ...
    barycentrics: np.ndarray  # (P, 3) ... and barycentrics
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # name → (3,) character
    lip_pairs: np.ndarray | None = None  # (Q, 2) the character's inner-lip vertex pairs
    flame_face: FlameFace | None = None

    def to_character(self, flame_positions: np.ndarray) -> np.ndarray:
        """FLAME-space positions (..., 3) under the similarity (no non-rigid part)."""
        return self.scale * flame_positions @ self.rotation.T + self.translation


# -- mesh utilities ----------------------------------------------------------------------------

def edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2) of a triangle mesh."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def neighbour_lists(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency (indptr (n+1,), indices) of the mesh's vertices."""
    e = edges(faces)
    both = np.concatenate([e, e[:, ::-1]])
    order = np.lexsort((both[:, 1], both[:, 0]))
    both = both[order]
    indptr = np.searchsorted(both[:, 0], np.arange(n + 1))
    return indptr, both[:, 1]


def hop_distance(edge_list: np.ndarray, n: int, sources: np.ndarray, limit: int = 10**6
                 ) -> np.ndarray:
    """Mesh-edge hops (n,) from the nearest of ``sources`` (a large number where unreached)."""
    far = np.iinfo(np.int64).max // 4
    d = np.full(n, far, np.int64)
    d[np.asarray(sources, np.int64)] = 0
    a, b = edge_list[:, 0], edge_list[:, 1]
    for _ in range(min(limit, n)):
        new = d.copy()
        np.minimum.at(new, a, d[b] + 1)
        np.minimum.at(new, b, d[a] + 1)
        if np.array_equal(new, d):
            break
        d = new
    return d


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    face_normal = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normal)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)


def _incident_faces(faces: np.ndarray, n: int, allowed: np.ndarray | None) -> np.ndarray:
    """(n, D) the faces around each vertex (−1 padded), only ``allowed`` faces."""
    ids = np.arange(len(faces)) if allowed is None else np.flatnonzero(allowed)
    corner_vertex = faces[ids].ravel()
    corner_face = np.repeat(ids, 3)
    order = np.argsort(corner_vertex, kind="stable")
    corner_vertex, corner_face = corner_vertex[order], corner_face[order]
    counts = np.bincount(corner_vertex, minlength=n)
    width = max(int(counts.max()), 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(corner_vertex)) - start[corner_vertex]
    table = np.full((n, width), -1, np.int64)
    table[corner_vertex, slot] = corner_face
    return table


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Closest points of (..., 3) ``p`` on triangles (a, b, c): barycentrics (..., 3) and the
    squared distance (...)."""
    ab, ac, ap = b - a, c - a, p - a
    d00 = np.einsum("...i,...i", ab, ab)
    d01 = np.einsum("...i,...i", ab, ac)
    d11 = np.einsum("...i,...i", ac, ac)
    d20 = np.einsum("...i,...i", ap, ab)
    d21 = np.einsum("...i,...i", ap, ac)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    inside = np.stack([1 - v - w, v, w], -1)
    best = inside.copy()
    best_d = np.full(v.shape, np.inf)
    ok = (v >= 0) & (w >= 0) & (v + w <= 1)
    q = a + v[..., None] * ab + w[..., None] * ac
    best_d = np.where(ok, np.einsum("...i,...i", p - q, p - q), best_d)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        corners = (a, b, c)
        e0, e1 = corners[i], corners[j]
        edge = e1 - e0
        t = np.clip(np.einsum("...i,...i", p - e0, edge) / np.maximum(
            np.einsum("...i,...i", edge, edge), 1e-30), 0, 1)
        q = e0 + t[..., None] * edge
        d = np.einsum("...i,...i", p - q, p - q)
        bary = np.zeros(inside.shape)
        bary[..., i] = 1 - t
        bary[..., j] = t
        better = d < best_d
        best_d = np.where(better, d, best_d)
        best = np.where(better[..., None], bary, best)
    return best, best_d


class Surface:
    """Closest-point queries on a triangle mesh (brute-force nearest vertex, then the faces
    around it: NumPy only, fast enough for faces of some 10⁴ vertices)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = vertices
        self.faces = faces
        self._tables: dict[bytes, np.ndarray] = {}

    def closest(self, points: np.ndarray, allowed_faces: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Triangles (N,), barycentrics (N, 3) and positions (N, 3) of the closest surface
        points to ``points`` (N, 3), on ``allowed_faces`` (bool (F,)) when given."""
        key = b"" if allowed_faces is None else np.packbits(allowed_faces).tobytes()
        if key not in self._tables:
            self._tables[key] = _incident_faces(self.faces, len(self.vertices), allowed_faces)
        table = self._tables[key]
        candidates = np.flatnonzero(table[:, 0] >= 0)
        origin = self.vertices[candidates].mean(0)
        cv = (self.vertices[candidates] - origin).astype(np.float32)
        cn = np.einsum("ij,ij->i", cv, cv)
        nearest = np.empty(len(points), np.int64)
        for start in range(0, len(points), 1024):
            chunk = (points[start: start + 1024] - origin).astype(np.float32)
            d = cn[None, :] - 2 * chunk @ cv.T
            nearest[start: start + 1024] = candidates[np.argmin(d, axis=1)]
        around = table[nearest]  # (N, D)
        valid = around >= 0
        safe = np.where(valid, around, around[:, :1])
        tri = self.faces[safe]  # (N, D, 3)
        a, b, c = (self.vertices[tri[..., i]] for i in range(3))
        bary, d = _closest_on_triangles(points[:, None, :], a, b, c)
        d = np.where(valid, d, np.inf)
        pick = np.argmin(d, axis=1)
        rows = np.arange(len(points))
        triangles = safe[rows, pick]
        barycentrics = bary[rows, pick]
        positions = np.einsum("nk,nkc->nc", barycentrics, self.vertices[self.faces[triangles]])
        return triangles, barycentrics, positions


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted Umeyama: s, R, t minimising Σ wᵢ‖s·R·xᵢ + t − yᵢ‖²."""
    w = weights / weights.sum()
    mx, my = w @ source, w @ target
    x, y = source - mx, target - my
    cov = (y * w[:, None]).T @ x
    u, sing, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(sing) @ flip) / max(w @ np.einsum("ij,ij->i", x, x), 1e-30))
    return scale, rotation, my - scale * rotation @ mx


# -- FLAME's side ------------------------------------------------------------------------------

def flame_face(flame: FlameData) -> FlameFace:
    """FLAME's landmarks, inner-lip pairs, face region and jaw side."""
    eyeball = flame.weights[:, [LEFT_EYE_JOINT, RIGHT_EYE_JOINT]].max(axis=1) > 0.5
    basis = flame.shapedirs[:, :, SHAPE_SPACE_DIM:]
    motion = np.sqrt((basis**2).sum(axis=(1, 2)))
    jaw_weight = flame.weights[:, JAW_JOINT]
    moving = ((motion > MOVING * max(motion.max(), 1e-30)) | (jaw_weight > 0.05)) & ~eyeball
    face = np.flatnonzero(moving)
    if len(face) < 10:
        face = np.flatnonzero(~eyeball)
    lower_side = jaw_weight > 0.5
    try:
        from ..living.closure import find_lips

        lips = find_lips(flame)
        lip_upper, lip_lower = lips.upper, lips.lower
    except ValueError:
        lip_upper = lip_lower = np.zeros(0, np.int64)
    landmarks = _flame_landmarks(flame, face, lip_upper, lip_lower)
    return FlameFace(landmarks=landmarks, lip_upper=lip_upper, lip_lower=lip_lower, face=face,
                     lower_side=lower_side)


def _flame_landmarks(flame: FlameData, face: np.ndarray, lip_upper: np.ndarray,
                     lip_lower: np.ndarray) -> dict[str, FlamePoints]:
    """Named FLAME landmarks: from the static embedding when it has the 51 points of the
    68-point layout, else from the geometry (eyes at the eye joints, the mouth from the
    inner-lip pairs, the rest from proportions)."""
    v = flame.v_template
    faces = flame.faces
    out: dict[str, FlamePoints] = {}
    if len(flame.landmark_faces) in (51, 68):
        offset = 17 if len(flame.landmark_faces) == 51 else 0
        for name, ids in _STATIC_68.items():
            corners = faces[flame.landmark_faces[[i - offset for i in ids]]]  # (k, 3)
            weights = flame.landmark_barycentrics[[i - offset for i in ids]] / len(ids)
            if len(ids) == 1:
                out[name] = FlamePoints(corners, weights * 1.0)
            else:  # the mean of two landmarks: the nearest vertex to it
                position = np.einsum("kc,kcd->d", weights, v[corners])
                out[name] = FlamePoints.at_vertices(
                    [face[np.argmin(np.linalg.norm(v[face] - position, axis=1))]])
    joints = flame.rest_joints()
    eyes = joints[[LEFT_EYE_JOINT, RIGHT_EYE_JOINT]]
    eye_distance = max(float(np.linalg.norm(eyes[0] - eyes[1])), 1e-3)
    front = face[v[face, 2] >= np.percentile(v[face, 2], 30)]

    def surface_near(x: float, y: float) -> FlamePoints:
        d = (v[front, 0] - x) ** 2 + (v[front, 1] - y) ** 2
        near = front[np.argsort(d)[:8]]
        return FlamePoints.at_vertices([near[np.argmax(v[near, 2])]])

    if len(lip_upper) and "mouth_left" not in out:
        middle = (v[lip_upper] + v[lip_lower]) / 2
        left, right = int(np.argmax(middle[:, 0])), int(np.argmin(middle[:, 0]))
        centre = int(np.argmin(np.abs(middle[:, 0] - middle[:, 0].mean())))
        out["mouth_left"] = FlamePoints(np.array([[lip_upper[left], lip_lower[left],
                                                   lip_upper[left]]]),
                                        np.array([[0.5, 0.5, 0.0]]))
        out["mouth_right"] = FlamePoints(np.array([[lip_upper[right], lip_lower[right],
                                                    lip_upper[right]]]),
                                         np.array([[0.5, 0.5, 0.0]]))
        out["upper_lip_inner"] = FlamePoints.at_vertices([lip_upper[centre]])
        out["lower_lip_inner"] = FlamePoints.at_vertices([lip_lower[centre]])
    if "mouth_left" not in out:  # no mouth found: proportions of a face
        mouth_y = eyes[:, 1].mean() - 1.3 * eye_distance
        for name, x, y in (("mouth_left", 0.4, 0.0), ("mouth_right", -0.4, 0.0),
                           ("upper_lip_inner", 0.0, 0.05), ("lower_lip_inner", 0.0, -0.05)):
            out[name] = surface_near(eyes[:, 0].mean() + x * eye_distance,
                                     mouth_y + y * eye_distance)
    mid_x = float(eyes[:, 0].mean())
    eye_y = float(eyes[:, 1].mean())
    mouth_y = float(np.mean([out[n].of(v)[0, 1] for n in ("mouth_left", "mouth_right")]))
    guesses = {
        "brow_left_outer": (eyes[0, 0] + 0.3 * eye_distance, eye_y + 0.35 * eye_distance),
        "brow_left_inner": (eyes[0, 0] - 0.25 * eye_distance, eye_y + 0.35 * eye_distance),
        "brow_right_inner": (eyes[1, 0] + 0.25 * eye_distance, eye_y + 0.35 * eye_distance),
        "brow_right_outer": (eyes[1, 0] - 0.3 * eye_distance, eye_y + 0.35 * eye_distance),
        "nose_tip": (mid_x, 0.55 * eye_y + 0.45 * mouth_y),
        "eye_left_outer": (eyes[0, 0] + 0.22 * eye_distance, eyes[0, 1]),
        "eye_left_inner": (eyes[0, 0] - 0.22 * eye_distance, eyes[0, 1]),
        "eye_right_inner": (eyes[1, 0] + 0.22 * eye_distance, eyes[1, 1]),
        "eye_right_outer": (eyes[1, 0] - 0.22 * eye_distance, eyes[1, 1]),
        "eye_left_upper": (eyes[0, 0], eyes[0, 1] + 0.13 * eye_distance),
        "eye_left_lower": (eyes[0, 0], eyes[0, 1] - 0.13 * eye_distance),
        "eye_right_upper": (eyes[1, 0], eyes[1, 1] + 0.13 * eye_distance),
        "eye_right_lower": (eyes[1, 0], eyes[1, 1] - 0.13 * eye_distance),
        "upper_lip_outer": (mid_x, mouth_y + 0.15 * eye_distance),
        "lower_lip_outer": (mid_x, mouth_y - 0.18 * eye_distance),
        "chin": (mid_x, mouth_y - 0.65 * eye_distance),
    }
    for name, (x, y) in guesses.items():
        if name not in out:
            out[name] = surface_near(x, y)
    return {name: out[name] for name in LANDMARK_NAMES}


def _dense_points(flame: FlameData, info: FlameFace) -> FlamePoints:
    """FLAME's face vertices that face forward, thinned to one per cell of a grid (at most
    about ``MAX_POINTS``), plus every inner-lip vertex."""
    v = flame.v_template
    normals = vertex_normals(v, flame.faces)
    face = info.face[normals[info.face, 2] > 0.05]
    if len(face) < 10:
        face = info.face
    extent = np.ptp(v[face], axis=0).max()
    cell = extent / 40
    for _ in range(12):
        keys = np.floor(v[face] / cell).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        if len(first) <= MAX_POINTS:
            break
        cell *= 1.15
    chosen = np.union1d(face[first], np.concatenate([info.lip_upper, info.lip_lower]))
    return FlamePoints.at_vertices(chosen)


# -- the character's side ------------------------------------------------------------------------

def character_face(character: CharacterGeometry) -> np.ndarray:
    """The vertices (N,) any shape key or the jaw bone moves."""
    motion = np.linalg.norm(character.key_offsets, axis=2).max(axis=0) if character.n_keys else (
        np.zeros(character.n_vertices))
    moving = motion > MOVING * max(float(motion.max()), 1e-30)
    if character.jaw is not None:
        moving |= np.asarray(character.jaw.weights) > 0.05
    face = np.flatnonzero(moving)
    return face if len(face) >= 10 else np.arange(character.n_vertices)


@dataclass
class CharacterMouth:
    upper: np.ndarray  # (Q,) inner-lip vertices of the upper lip
    lower: np.ndarray  # (Q,) their partners on the lower lip
    left: np.ndarray  # (3,) corner positions
    right: np.ndarray
    lower_side: np.ndarray  # (V,) bool: nearer the lower lip's margin than the upper's


def _margins(v: np.ndarray, edge_list: np.ndarray, up: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Vertices on the lower edge of a surface (an upper lip's margin: neighbours above it and
    beside it, none clearly below) and on the upper edge of one (a lower lip's margin), where
    "clearly" is 35 % of the vertex's mean edge length."""
    a, b = edge_list[:, 0], edge_list[:, 1]
    height = v @ up
    step = height[b] - height[a]
    length = np.linalg.norm(v[b] - v[a], axis=1)
    n = len(v)
    lowest = np.zeros(n)
    highest = np.zeros(n)
    np.minimum.at(lowest, a, step)
    np.minimum.at(lowest, b, -step)
    np.maximum.at(highest, a, step)
    np.maximum.at(highest, b, -step)
    mean_edge = (np.bincount(a, length, n) + np.bincount(b, length, n)) / np.maximum(
        np.bincount(a, minlength=n) + np.bincount(b, minlength=n), 1)
    upper = (lowest > -0.35 * mean_edge) & (highest > 0.5 * mean_edge)
    lower = (highest < 0.35 * mean_edge) & (lowest < -0.5 * mean_edge)
    return upper, lower


def find_character_mouth(character: CharacterGeometry, face: np.ndarray, rotation: np.ndarray,
                         height: float) -> CharacterMouth | None:
    """The character's mouth slit from its geometry (see the module's description), or None.

    An upper lip's margin has neighbours above it and none below, a lower lip's the other way
    round; such vertices closer than 3 % of the face's height to each other and more than
    ``MIN_RINGS`` edges apart seed the slit; it then grows along both lips to the corners
    (where the two sides come within a few edges of each other), and the corners are the
    vertices the slit's two ends share. Of several such slits (eyelids too are slits) the
    longest is the mouth."""
    v = character.vertices
    up, left_axis = rotation[:, 1], rotation[:, 0]
    indptr, indices = neighbour_lists(character.faces, len(v))
    upper_margin, lower_margin = _margins(v, edges(character.faces), up)
    in_face = np.zeros(len(v), bool)
    in_face[face] = True
    uppers = np.flatnonzero(upper_margin & in_face)
    lowers = np.flatnonzero(lower_margin & in_face)
    if not len(uppers) or not len(lowers):
        return None
    gap = 0.03 * height
    close_i, close_j = [], []
    origin = v[face].mean(0)
    a = (v[uppers] - origin).astype(np.float32)
    b = (v[lowers] - origin).astype(np.float32)
    b_squares = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(uppers), 1024):
        chunk = a[start: start + 1024]
        d2 = np.einsum("ij,ij->i", chunk, chunk)[:, None] + b_squares[None, :] - 2 * chunk @ b.T
        i, j = np.nonzero(d2 < gap**2)
        close_i.append(uppers[start + i])
        close_j.append(lowers[j])
    close_i, close_j = np.concatenate(close_i), np.concatenate(close_j)
    keep = close_i != close_j
    close_i, close_j = close_i[keep], close_j[keep]  # i on an upper lip, j on a lower
    if not len(close_i):
        return None

    def within(i: int, rings: int) -> set[int]:
        seen, frontier = {i}, {i}
        for _ in range(rings):
            frontier = {int(n) for f in frontier for n in indices[indptr[f]:indptr[f + 1]]} - seen
            seen |= frontier
        return seen

    # Each upper-lip vertex's partner: the nearest lower-lip vertex.
    candidate: dict[int, int] = {}
    for i, j in zip(close_i.tolist(), close_j.tolist(), strict=True):
        if i not in candidate or np.linalg.norm(v[i] - v[j]) < np.linalg.norm(
                v[i] - v[candidate[i]]):
            candidate[i] = j
    seeds = [(i, j) for i, j in candidate.items() if j not in within(i, MIN_RINGS)]
    if not seeds:
        return None
    # Grow: a pair joins when its upper vertex neighbours the slit's upper side and its lower
    # vertex the lower side.
    neighbours = [set(indices[indptr[k]:indptr[k + 1]].tolist()) for k in range(len(v))]
    slits: list[dict[int, int]] = []
    taken: set[int] = set()
    for i, j in seeds:
        if i in taken:
            continue
        slit = {i: j}
        grown = True
        while grown:
            grown = False
            uppers, lowers = set(slit), set(slit.values())
            for a, b in candidate.items():
                if a in slit or b in uppers or a in lowers:
                    continue
                if neighbours[a] & uppers and neighbours[b] & lowers:
                    slit[a] = b
                    grown = True
        taken |= set(slit)
        slits.append(slit)
    # The mouth is the longest slit; of equal ones, the lowest.
    slit = max(slits, key=lambda s: (len(s), -float(np.mean([v[a] @ up for a in s]))))
    upper = np.array(list(slit), np.int64)
    lower = np.array([slit[a] for a in upper], np.int64)
    middle = (v[upper] + v[lower]) / 2
    sideways = middle @ left_axis
    order = np.argsort(sideways)
    upper, lower, middle, sideways = upper[order], lower[order], middle[order], sideways[order]
    ends = []
    for k, outward in ((len(upper) - 1, 1.0), (0, -1.0)):
        shared = (neighbours[upper[k]] & neighbours[lower[k]]) - set(upper.tolist()) - set(
            lower.tolist())
        if shared:
            best = max(shared, key=lambda s: outward * float(v[s] @ left_axis))
            ends.append(v[best])
        else:
            ends.append(middle[k])
    edge_list = edges(character.faces)
    side_up = hop_distance(edge_list, len(v), upper, limit=60)
    side_low = hop_distance(edge_list, len(v), lower, limit=60)
    return CharacterMouth(upper=upper, lower=lower, left=ends[0], right=ends[1],
                          lower_side=side_low < side_up)


# -- the fit -----------------------------------------------------------------------------------

def fit_flame(character: CharacterGeometry, flame: FlameData,
              landmarks: dict[str, np.ndarray] | None = None) -> FaceFit:
    """FLAME fitted to ``character``'s rest mesh (see the module's description); ``landmarks``
    (name → (3,) object-space position, names from :data:`LANDMARK_NAMES`) override the found
    ones."""
    info = flame_face(flame)
    v_flame = flame.v_template
    v_char = character.vertices
    surface = Surface(v_char, character.faces)
    rotation = flame_to_object_rotation(character.up, character.front)
    char_face = character_face(character)
    up = rotation[:, 1]
    f_up = v_flame[info.face, 1]
    c_up = v_char[char_face] @ up
    f_height = float(np.percentile(f_up, 95) - np.percentile(f_up, 5))
    c_height = float(np.percentile(c_up, 95) - np.percentile(c_up, 5))
    scale = c_height / max(f_height, 1e-9)
    translation = v_char[char_face].mean(0) - scale * rotation @ v_flame[info.face].mean(0)

    mouth = find_character_mouth(character, char_face, rotation, c_height)
    anchors: dict[str, np.ndarray] = {}
    if mouth is not None:
        mid = len(mouth.upper) // 2
        anchors = {"mouth_left": mouth.left, "mouth_right": mouth.right,
                   "upper_lip_inner": v_char[mouth.upper[mid]],
                   "lower_lip_inner": v_char[mouth.lower[mid]]}
    for name, position in (landmarks or {}).items():
        if name not in info.landmarks:
            raise ValueError(f"'{name}' is not a landmark the retarget knows; use one of "
                             f"{', '.join(LANDMARK_NAMES)}.")
        position = np.asarray(position, np.float64)
        if position.shape != (3,) or not np.isfinite(position).all():
            raise ValueError(f"The landmark '{name}' must be three finite numbers.")
        low, high = v_char.min(axis=0), v_char.max(axis=0)
        if np.linalg.norm(np.clip(position, low, high) - position) > 0.5 * np.linalg.norm(
                high - low):
            raise ValueError(f"The landmark '{name}' lies far outside the character's mesh; "
                             "put it on the face.")
        anchors[name] = position
    anchor_names = list(anchors)
    anchor_flame = [info.landmarks[n] for n in anchor_names]
    anchor_target = np.array([anchors[n] for n in anchor_names]).reshape(-1, 3)
    if "mouth_left" in anchors and "mouth_right" in anchors:
        # The mouth places and sizes FLAME first: the face the keys move may be only a part
        # of the head (a character with mouth keys alone).
        f_left, f_right = (info.landmarks[n].of(v_flame)[0] for n in ("mouth_left",
                                                                      "mouth_right"))
        scale = float(np.linalg.norm(anchors["mouth_left"] - anchors["mouth_right"])
                      / max(np.linalg.norm(f_left - f_right), 1e-9))
        translation = ((anchors["mouth_left"] + anchors["mouth_right"]) / 2
                       - scale * rotation @ ((f_left + f_right) / 2))

    # The closest points may only land near where FLAME's face was placed.
    placed_face = scale * v_flame[info.face] @ rotation.T + translation
    reach = 0.75 * np.linalg.norm(np.ptp(placed_face, axis=0))
    allowed = np.linalg.norm(v_char - placed_face.mean(0), axis=1) < reach
    allowed_faces = allowed[character.faces].any(axis=1)
    c_height = f_height * scale
    dense = _dense_points(flame, info)
    points = dense
    shape_dirs = flame.shapedirs[:, :, :min(SHAPE_COMPONENTS, SHAPE_SPACE_DIM)]
    used = np.flatnonzero(np.abs(shape_dirs).reshape(-1, shape_dirs.shape[2]).max(0) > 0)
    shape_dirs = shape_dirs[:, :, used]
    beta = np.zeros(len(used))
    anchor_weight = 0.05 * len(points) / max(len(anchor_names), 1)

    def template(b: np.ndarray) -> np.ndarray:
        return v_flame + shape_dirs @ b

    # The mouth's proportions vary more than the head's: try a few scales about the mouth's
    # and keep the one whose surface lies closest.
    centre = (scale * v_flame[info.face] @ rotation.T + translation).mean(0)
    best = None
    for factor in SCALE_TRIES:
        trial = factor * scale
        moved = trial * points.of(v_flame) @ rotation.T + (translation - centre) * factor + centre
        _, _, target = surface.closest(moved, allowed_faces)
        residual = np.linalg.norm(target - moved, axis=1) / trial
        score = float(np.mean(np.minimum(residual, 0.01)))
        if best is None or score < best[0]:
            best = (score, trial, (translation - centre) * factor + centre)
    _, scale, translation = best

    # Rigid + scale, then identity shape, by iterated closest points.
    for round_ in range(ICP_ROUNDS):
        shaped = template(beta)
        source = points.of(shaped)
        moved = scale * source @ rotation.T + translation
        _, _, target = surface.closest(moved, allowed_faces)
        residual = np.linalg.norm(target - moved, axis=1)
        robust = 1.0 / (1.0 + (residual / (0.02 * c_height)) ** 2)
        src = np.concatenate([source] + [p.of(shaped) for p in anchor_flame])
        dst = np.concatenate([target, anchor_target])
        w = np.concatenate([robust, np.full(len(anchor_names), anchor_weight)])
        scale, rotation, translation = similarity(src, dst, w)
        if round_ >= 1 and len(used):
            beta = _fit_shape(shape_dirs, points, anchor_flame, v_flame, scale, rotation,
                              translation, target, anchor_target, robust, anchor_weight)

    # Non-rigid: the anchors exactly, by a radial-basis warp, then smoothed closest points.
    shaped = template(beta)
    placed = scale * shaped @ rotation.T + translation  # (V, 3) every FLAME vertex
    if len(anchor_names):
        at = np.array([p.of(placed)[0] for p in anchor_flame])
        placed = placed + _rbf_warp(placed, at, anchor_target - at, 0.12 * c_height)
    flame_edges = edges(flame.faces)
    region = np.zeros(flame.n_vertices, bool)
    region[info.face] = True
    mouth_centre = (anchors["mouth_left"] + anchors["mouth_right"]) / 2 if (
        "mouth_left" in anchors and "mouth_right" in anchors) else None
    mouth_width = float(np.linalg.norm(anchors["mouth_left"] - anchors["mouth_right"])) if (
        mouth_centre is not None) else 0.0
    for _ in range(NONRIGID_ROUNDS):
        ids = dense.vertices[:, 0]
        _, _, target = _sided_closest(surface, placed[ids], info.lower_side[ids], mouth,
                                      mouth_centre, mouth_width, allowed_faces, character)
        offsets = np.zeros_like(placed)
        weight = np.zeros(flame.n_vertices)
        residual = np.linalg.norm(target - placed[ids], axis=1)
        ok = residual < 0.05 * c_height
        offsets[ids[ok]] = target[ok] - placed[ids[ok]]
        weight[ids[ok]] = 1.0
        offsets = _smooth(offsets, weight, flame_edges, SMOOTHING)
        placed = placed + offsets * region[:, None]
        if len(anchor_names):
            at = np.array([p.of(placed)[0] for p in anchor_flame])
            placed = placed + _rbf_warp(placed, at, anchor_target - at, 0.06 * c_height)
    dense_positions = dense.of(placed)
    dense_lower = dense.of(info.lower_side.astype(np.float64)) > 0.5
    triangles, barycentrics, _ = _sided_closest(surface, dense_positions, dense_lower, mouth,
                                                mouth_centre, mouth_width, allowed_faces,
                                                character)
    names = list(info.landmarks)
    marks = [info.landmarks[n] for n in names]
    positions = np.array([p.of(placed)[0] for p in marks])
    lower = np.array([p.of(info.lower_side.astype(np.float64))[0] > 0.5 for p in marks])
    _, _, on = _sided_closest(surface, positions, lower, mouth, mouth_centre, mouth_width,
                              allowed_faces, character)
    found = {name: anchors.get(name, on[i]) for i, name in enumerate(names)}
    full_beta = np.zeros(SHAPE_SPACE_DIM)
    full_beta[used] = beta
    lip_pairs = None if mouth is None else np.stack([mouth.upper, mouth.lower], axis=1)
    return FaceFit(scale=float(scale), rotation=rotation, translation=translation,
                   shape=full_beta, points=dense, triangles=triangles,
                   barycentrics=barycentrics, landmarks=found, lip_pairs=lip_pairs,
                   flame_face=info)


def _fit_shape(shape_dirs: np.ndarray, points: FlamePoints, anchor_flame: list[FlamePoints],
               v_flame: np.ndarray, scale: float, rotation: np.ndarray,
               translation: np.ndarray, target: np.ndarray, anchor_target: np.ndarray,
               robust: np.ndarray, anchor_weight: float) -> np.ndarray:
    """Ridge least squares for the identity coefficients on closest points and anchors."""
    rows, rhs, weights = [], [], []
    for p, goal, w in [(points, target, robust)] + [
            (a, anchor_target[i:i + 1], np.array([anchor_weight]))
            for i, a in enumerate(anchor_flame)]:
        basis = p.of(shape_dirs)  # (P, 3, n)
        rows.append(scale * np.einsum("ij,pjn->pin", rotation, basis).reshape(-1,
                                                                            basis.shape[2]))
        base = scale * p.of(v_flame) @ rotation.T + translation
        rhs.append((goal - base).reshape(-1))
        weights.append(np.repeat(w, 3))
    a = np.concatenate(rows)
    b = np.concatenate(rhs)
    w = np.concatenate(weights)
    gram = a.T @ (a * w[:, None])
    ridge = SHAPE_RIDGE * max(float(np.mean(np.diag(gram))), 1e-30)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), a.T @ (w * b))


def _rbf_warp(positions: np.ndarray, centres: np.ndarray, displacements: np.ndarray,
              sigma: float) -> np.ndarray:
    """A Gaussian radial-basis field (N, 3) that equals ``displacements`` at ``centres``."""
    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-0.5 * d2 / sigma**2)

    k = kernel(centres, centres) + 1e-6 * np.eye(len(centres))
    coefficients = np.linalg.solve(k, displacements)
    return kernel(positions, centres) @ coefficients


def _smooth(offsets: np.ndarray, weight: np.ndarray, edge_list: np.ndarray, sweeps: int
            ) -> np.ndarray:
    """Offsets where ``weight`` > 0, filled in and smoothed by neighbour averaging."""
    a, b = edge_list[:, 0], edge_list[:, 1]
    n = len(offsets)
    values = offsets * weight[:, None]
    mass = weight.astype(np.float64).copy()
    for _ in range(sweeps):
        summed = values.copy()
        count = mass.copy()
        np.add.at(summed, a, values[b])
        np.add.at(summed, b, values[a])
        np.add.at(count, a, mass[b])
        np.add.at(count, b, mass[a])
        degree = np.bincount(edge_list.ravel(), minlength=n) + 1.0
        values, mass = summed / degree[:, None], count / degree
    return values / np.maximum(mass, 1e-12)[:, None] * (mass > 1e-9)[:, None]


def _sided_closest(surface: Surface, points: np.ndarray, lower: np.ndarray,
                   mouth: CharacterMouth | None, centre: np.ndarray | None, width: float,
                   allowed_faces: np.ndarray | None, character: CharacterGeometry
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest points where, near the mouth, an upper-side point lands on the character's
    upper side and a lower-side point on its lower side."""
    triangles, barycentrics, positions = surface.closest(points, allowed_faces)
    if mouth is None or centre is None or width <= 0:
        return triangles, barycentrics, positions
    near = np.linalg.norm(points - centre, axis=1) < 0.9 * width
    face_lower = mouth.lower_side[character.faces].mean(axis=1) > 0.5
    for want_lower in (False, True):
        pick = near & (lower == want_lower)
        if not pick.any():
            continue
        mask = face_lower if want_lower else ~face_lower
        if allowed_faces is not None:
            mask = mask & allowed_faces
        t, b, p = surface.closest(points[pick], mask)
        triangles[pick], barycentrics[pick], positions[pick] = t, b, p
    return triangles, barycentrics, positions
