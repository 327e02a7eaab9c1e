# SPDX-License-Identifier: GPL-3.0-or-later
"""Any character: EMOTE's FLAME motion retargeted onto ARKit-52 and custom shape-key faces.

``mapping = setup_character(character, flame)`` fits FLAME to the character's rest mesh and
measures its keys (once; the mapping is kept as JSON with the character);
``result = retarget(mapping, flame, expression, jaw)`` turns a take into the character's key
weights (T, K) and jaw-bone rotation, all frames in one solve, with a report of how much of the
motion the character can express. NumPy only: it runs inside Blender's Python.
"""

from .arkit import ARKIT_52, arkit_keys, canonical_arkit_name
from .character import CharacterGeometry, JawBone
from .fit import LANDMARK_NAMES
from .mapping import REGIONS, CharacterMapping
from .solve import (
    Retargeted,
    bone_rotations,
    lip_gap,
    pose_character,
    retarget,
    setup_character,
)

__all__ = [
    "ARKIT_52", "LANDMARK_NAMES", "REGIONS", "CharacterGeometry", "CharacterMapping", "JawBone",
    "Retargeted", "arkit_keys", "bone_rotations", "canonical_arkit_name", "lip_gap",
    "pose_character", "retarget", "setup_character",
]
