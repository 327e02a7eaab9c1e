# SPDX-License-Identifier: GPL-3.0-or-later
"""A character's face as the retarget sees it: plain arrays, no ``bpy``.

The Blender side reads these from the character's mesh (object space, metres): the rest
vertices, the triangulated faces, every shape key's offset from the basis, the keys' slider
ranges and, when the character has one, its jaw bone (head, rest orientation, the vertex
group's weights) and its eye bones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLENDER_UP = (0.0, 0.0, 1.0)
BLENDER_FRONT = (0.0, -1.0, 0.0)  # Blender's front view looks along +Y: a face looks to −Y


@dataclass
class JawBone:
    """The character's jaw bone: ``head`` the pivot (3,) in object space, ``rest`` its rest
    orientation (3, 3) bone → object (``bone.matrix_local.to_3x3()`` under the armature's
    transform to the mesh's object space), ``weights`` (V,) its vertex group."""

    name: str
    head: np.ndarray
    rest: np.ndarray
    weights: np.ndarray


@dataclass
class CharacterGeometry:
    """One character's face: rest ``vertices`` (V, 3) in object space, metres; ``faces``
    (F, 3) triangles; ``key_names`` (K,); ``key_offsets`` (K, V, 3) each key's displacement at
    value 1; ``key_ranges`` (K, 2) slider min and max; an optional jaw bone and eye-bone heads
    (name → (3,)); the object's ``up`` and ``front`` axes (Blender's +Z and −Y)."""

    vertices: np.ndarray
    faces: np.ndarray
    key_names: list[str]
    key_offsets: np.ndarray
    key_ranges: np.ndarray | None = None
    jaw: JawBone | None = None
    eyes: dict[str, np.ndarray] = field(default_factory=dict)
    up: tuple[float, float, float] = BLENDER_UP
    front: tuple[float, float, float] = BLENDER_FRONT
    name: str = "character"

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, np.float64)
        self.faces = np.asarray(self.faces, np.int64)
        self.key_names = [str(n) for n in self.key_names]
        self.key_offsets = np.asarray(self.key_offsets, np.float64).reshape(
            len(self.key_names), -1, 3)
        if self.key_ranges is None:
            self.key_ranges = np.tile([0.0, 1.0], (len(self.key_names), 1))
        self.key_ranges = np.asarray(self.key_ranges, np.float64).reshape(-1, 2)
        check_character(self)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_keys(self) -> int:
        return len(self.key_names)


def check_character(character: CharacterGeometry) -> None:
    """``ValueError`` with one sentence when the arrays do not describe one mesh."""
    v, f = character.vertices, character.faces
    n = len(v)
    problem = None
    if v.ndim != 2 or v.shape[1] != 3 or n < 4 or not np.isfinite(v).all():
        problem = f"its vertices have shape {v.shape} or are not finite numbers"
    elif f.ndim != 2 or f.shape[1] != 3 or not len(f) or f.min() < 0 or f.max() >= n:
        problem = f"its faces (shape {f.shape}) are not triangles of its {n} vertices"
    elif character.key_offsets.shape != (len(character.key_names), n, 3):
        problem = (f"its key offsets have shape {character.key_offsets.shape}, expected "
                   f"({len(character.key_names)}, {n}, 3)")
    elif not np.isfinite(character.key_offsets).all():
        problem = "a shape key's offsets are not finite numbers"
    elif len(set(character.key_names)) != len(character.key_names):
        problem = "two shape keys have the same name"
    elif character.key_ranges.shape != (len(character.key_names), 2) or not (
            np.isfinite(character.key_ranges).all()
            and (character.key_ranges[:, 0] <= character.key_ranges[:, 1]).all()):
        problem = "its slider ranges are not one (min ≤ max) pair per key"
    elif character.jaw is not None and (
            np.shape(character.jaw.head) != (3,) or np.shape(character.jaw.rest) != (3, 3)
            or np.shape(character.jaw.weights) != (n,)
            or not np.isfinite(np.concatenate([np.ravel(character.jaw.head),
                                               np.ravel(character.jaw.rest),
                                               np.ravel(character.jaw.weights)])).all()):
        problem = "its jaw bone needs a head (3,), a rest rotation (3, 3) and one weight a vertex"
    else:
        up, front = np.asarray(character.up, float), np.asarray(character.front, float)
        if up.shape != (3,) or front.shape != (3,) or abs(np.dot(up, front)) > 1e-6 * (
                np.linalg.norm(up) * np.linalg.norm(front)) or not (
                np.linalg.norm(up) > 0 and np.linalg.norm(front) > 0):
            problem = "its up and front axes are not two perpendicular directions"
    if problem:
        raise ValueError(f"The character '{character.name}' cannot be retargeted: {problem}.")


def flame_to_object_rotation(up: np.ndarray, front: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) taking FLAME's axes (x the subject's left, y up, z front) to an
    object whose face looks along ``front`` with ``up`` up."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    front = np.asarray(front, np.float64) / np.linalg.norm(front)
    left = np.cross(up, front)
    return np.stack([left, up, front], axis=1)
