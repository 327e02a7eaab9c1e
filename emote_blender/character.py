# SPDX-License-Identifier: GPL-3.0-or-later
"""Characters that are not FLAME heads: ARKit-52 and custom shape-key faces.

*Set Up Character* reads the character's mesh into plain arrays
(:class:`server.retarget.CharacterGeometry`: rest vertices, triangles, every shape key's
offsets and slider range, the jaw bone with its vertex group, all in the mesh's object space),
fits FLAME to it (:func:`server.retarget.setup_character`) and keeps the resulting mapping as
JSON on the object (``Object.emote_mapping``, saved in the .blend and overridable, so a mapping
made in a character's library file works through a library override). Its landmarks can be
moved in the viewport: *Edit Landmarks* puts one empty per landmark on the character, and
setting up again uses where they are.

A take on a mapped character is solved from the FLAME take (:func:`server.retarget.retarget`)
and keyed on the character's own keys and jaw bone by :mod:`.keys`; the living layers join
in: blinks on ``eyeBlinkLeft/Right`` (or through FLAME's eyelid direction), gaze on the eye
bones (or the ``eyeLook…`` keys), head motion on the head (or neck) bone.
"""

from __future__ import annotations

import hashlib
from typing import Any

import bpy
import numpy as np

from . import rig

LANDMARK_TAG = "emote_landmark"  # ID property on the landmark empties: the landmark's name
HEAD_BONES = ("head", "neck")  # a character's head rotation: its head bone, else its neck
JAW_BONES = ("jaw", "mandible", "jaw_bone", "jawbone", "cc_base_jawroot", "def-jaw",
             "jaw_master", "lowerjaw", "jaw.001")
LEFT_EYE_BONES = ("left_eye", "lefteye", "eye_l", "eye.l", "l_eye", "leye",
                  "cc_base_l_eye", "def-eye.l")
RIGHT_EYE_BONES = ("right_eye", "righteye", "eye_r", "eye.r", "r_eye", "reye",
                   "cc_base_r_eye", "def-eye.r")


class CharacterError(ValueError):
    """The character cannot be set up or used; the message says what to do."""


def find_bone(armature: Any | None, aliases: tuple[str, ...]) -> str | None:
    """The armature's bone whose name (ignoring case) is one of ``aliases``, in their order."""
    if armature is None:
        return None
    by_name = {bone.name.lower(): bone.name for bone in armature.data.bones}
    return next((by_name[a] for a in aliases if a in by_name), None)


def to_mesh_space(mesh: Any, armature: Any) -> np.ndarray:
    """(4, 4): armature space → the mesh's object space."""
    return np.array(mesh.matrix_world.inverted() @ armature.matrix_world)


def bone_rest_in_mesh(mesh: Any, armature: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(head (3,), rest rotation (3, 3) bone → mesh object space) of bone ``name``."""
    m = to_mesh_space(mesh, armature)
    bone = armature.data.bones[name]
    linear = m[:3, :3]
    u, _, vt = np.linalg.svd(linear)  # the rotation of the (possibly scaled) transform
    rotation = u @ vt
    head = linear @ np.array(bone.head_local) + m[:3, 3]
    return head, rotation @ np.array(bone.matrix_local.to_3x3())


def character_geometry(mesh: Any) -> Any:
    """The mesh as :class:`server.retarget.CharacterGeometry` (object space, metres); the
    world's up (+Z) and front (−Y) seen from the object."""
    from .server.retarget import CharacterGeometry, JawBone

    keys = mesh.data.shape_keys
    if keys is None or len(keys.key_blocks) < 2:
        raise CharacterError(f"'{mesh.name}' has no shape keys to animate: a character needs "
                             "its face's shape keys (ARKit-52 or its own).")
    data = mesh.data
    n = len(data.vertices)
    basis_block = keys.reference_key
    basis = np.zeros(n * 3)
    basis_block.data.foreach_get("co", basis)
    basis = basis.reshape(n, 3)
    blocks = [b for b in keys.key_blocks if b != basis_block]
    offsets = np.zeros((len(blocks), n, 3))
    co = np.zeros(n * 3)
    for i, block in enumerate(blocks):
        block.data.foreach_get("co", co)
        offsets[i] = co.reshape(n, 3) - basis
    data.calc_loop_triangles()
    triangles = np.zeros(len(data.loop_triangles) * 3, np.int64)
    data.loop_triangles.foreach_get("vertices", triangles)
    if not len(triangles):
        raise CharacterError(f"'{mesh.name}' has no faces.")
    ranges = np.array([[b.slider_min, b.slider_max] for b in blocks], np.float64)
    rotation = np.array(mesh.matrix_world.to_3x3())
    u, _, vt = np.linalg.svd(rotation)
    to_object = (u @ vt).T  # world directions → object directions
    jaw = None
    armature = rig.armature_of(mesh)
    jaw_name = find_bone(armature, JAW_BONES)
    if jaw_name is not None:
        head, rest = bone_rest_in_mesh(mesh, armature, jaw_name)
        weights = _bone_weights(mesh, armature, jaw_name)
        if weights.any():
            jaw = JawBone(name=jaw_name, head=head, rest=rest, weights=weights)
    eyes = {}
    for side, aliases in (("left", LEFT_EYE_BONES), ("right", RIGHT_EYE_BONES)):
        name = find_bone(armature, aliases)
        if name is not None:
            eyes[side] = bone_rest_in_mesh(mesh, armature, name)[0]
    return CharacterGeometry(
        vertices=basis, faces=triangles.reshape(-1, 3), key_names=[b.name for b in blocks],
        key_offsets=offsets, key_ranges=ranges, jaw=jaw, eyes=eyes,
        up=tuple(to_object @ np.array([0.0, 0.0, 1.0])),
        front=tuple(to_object @ np.array([0.0, -1.0, 0.0])), name=mesh.name)


def _bone_weights(mesh: Any, armature: Any, bone: str) -> np.ndarray:
    """(V,) how much ``bone`` moves each vertex, as Blender's Armature modifier blends: its
    group's weight over the sum of the weights of all groups of deforming bones."""
    n = len(mesh.data.vertices)
    weights = np.zeros(n)
    group = mesh.vertex_groups.get(bone)
    if group is None:
        return weights
    deforming = {g.index for g in mesh.vertex_groups
                 if g.name in armature.data.bones and armature.data.bones[g.name].use_deform}
    for v in mesh.data.vertices:
        total = own = 0.0
        for g in v.groups:
            if g.group in deforming:
                total += g.weight
            if g.group == group.index:
                own = g.weight
        if total > 0:
            weights[v.index] = own / total
    return weights


# -- the mapping on the object -------------------------------------------------------------------

_mappings: dict[str, Any] = {}  # JSON digest → CharacterMapping (parsing is not free)


def mapping_of(mesh: Any) -> Any | None:
    """The object's mapping (None when it has none); ``CharacterError`` when it is damaged."""
    text = getattr(mesh, "emote_mapping", "")
    if not text:
        return None
    from .server.retarget import CharacterMapping

    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    if digest not in _mappings:
        try:
            mapping = CharacterMapping.from_json(text)
        except ValueError as exc:
            raise CharacterError(f"The character mapping of '{mesh.name}' cannot be read: "
                                 f"{exc} Set the character up again.") from None
        if len(_mappings) > 16:
            _mappings.clear()
        _mappings[digest] = mapping
    return _mappings[digest]


def landmark_empties(mesh: Any) -> dict[str, Any]:
    """The character's landmark empties (children tagged with their landmark), by name."""
    return {child[LANDMARK_TAG]: child for child in mesh.children
            if child.type == "EMPTY" and isinstance(child.get(LANDMARK_TAG), str)}


def edited_landmarks(mesh: Any) -> dict[str, np.ndarray] | None:
    """Where the artist put the landmark empties, in the mesh's object space."""
    empties = landmark_empties(mesh)
    if not empties:
        return None
    inverse = mesh.matrix_world.inverted()
    return {name: np.array(inverse @ empty.matrix_world.translation)
            for name, empty in empties.items()}


def set_up(mesh: Any, flame: Any) -> Any:
    """Fit and store the mapping of ``mesh`` (with its landmark empties where there are
    some); returns the mapping."""
    from .server.retarget import setup_character

    geometry = character_geometry(mesh)
    try:
        mapping = setup_character(geometry, flame, landmarks=edited_landmarks(mesh))
    except ValueError as exc:
        raise CharacterError(str(exc)) from None
    mesh.emote_mapping = mapping.to_json()
    return mapping


def export_mapping(mesh: Any, path: str) -> str:
    """Write the mapping's JSON to ``path``; an existing file is replaced only when it is a
    mapping itself (never a .blend, an audio file or anything else)."""
    import os

    mapping = mapping_of(mesh)
    if mapping is None:
        raise CharacterError(f"'{mesh.name}' is not set up yet: Set Up Character first.")
    if not path:
        raise CharacterError("Choose a file to write the mapping to.")
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        raise CharacterError(f"'{path}' is not a plain file; choose another name.")
    if os.path.isfile(path):
        from .server.retarget import CharacterMapping

        try:
            with open(path, "rb") as f:
                CharacterMapping.from_json(f.read(64 * 1024 * 1024))
        except (ValueError, OSError):
            raise CharacterError(f"'{path}' exists and is not a character mapping; it is left "
                                 "as it is. Choose another name.") from None
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(mesh.emote_mapping)
    os.replace(temporary, path)
    return path


def show_landmarks(context: Any, mesh: Any, mapping: Any) -> list[Any]:
    """One small empty per landmark of ``mapping``, parented to the character, to move in the
    viewport (existing ones are moved back to the mapping's positions)."""
    existing = landmark_empties(mesh)
    made = []
    size = 0.02 * max(mesh.dimensions) if max(mesh.dimensions) > 0 else 0.005
    for name, position in mapping.landmarks.items():
        empty = existing.get(name)
        if empty is None:
            empty = bpy.data.objects.new(f"{mesh.name} {name}", None)
            empty.empty_display_type = "SPHERE"
            empty[LANDMARK_TAG] = name
            for collection in mesh.users_collection:
                collection.objects.link(empty)
                break
            else:
                context.scene.collection.objects.link(empty)
            empty.parent = mesh
        empty.empty_display_size = size / max(max(mesh.scale), 1e-9)
        empty.matrix_parent_inverse.identity()
        empty.location = tuple(float(c) for c in position)
        made.append(empty)
    return made


def quality_text(quality: dict[str, float]) -> str:
    """"mouth 93 %, jaw 88 %, brows 71 %" (regions in the mapping's order)."""
    return ", ".join(f"{region} {share:.0%}" for region, share in quality.items())


# -- the take's extra channels on a character ---------------------------------------------------

EYE_LIMIT_DEG = (30.0, 25.0)  # yaw, pitch at which an eyeLook key reaches 1


def gaze_key_values(eyes: np.ndarray) -> dict[str, np.ndarray]:
    """ARKit eyeLook weights (T,) from the eyes' FLAME-frame axis-angles (T, 2, 3): the
    gaze's yaw (toward the subject's left, FLAME +x) and pitch (up) of each eye, divided by
    30° and 25° and split into In/Out and Up/Down; the left eye looks *out* to its left."""
    from .server.flame import axis_angle_to_matrix

    out: dict[str, np.ndarray] = {}
    for side, index in (("Left", 0), ("Right", 1)):
        forward = axis_angle_to_matrix(np.asarray(eyes)[:, index])[..., :, 2]
        yaw = np.degrees(np.arctan2(forward[:, 0], forward[:, 2])) / EYE_LIMIT_DEG[0]
        pitch = np.degrees(np.arcsin(np.clip(forward[:, 1], -1, 1))) / EYE_LIMIT_DEG[1]
        outward = yaw if side == "Left" else -yaw
        out[f"eyeLookOut{side}"] = np.clip(outward, 0, 1)
        out[f"eyeLookIn{side}"] = np.clip(-outward, 0, 1)
        out[f"eyeLookUp{side}"] = np.clip(pitch, 0, 1)
        out[f"eyeLookDown{side}"] = np.clip(-pitch, 0, 1)
    return out
