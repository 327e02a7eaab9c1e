# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME rigs in the scene: finding them, reading their naming convention, creating one.

Two naming conventions are recognised: the official FLAME add-on's (``Exp1..``, ``Pose1..18``,
bones ``root neck jaw left_eye right_eye``) and SMPL-X style (``Exp000..``, ``Pose000..``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np

OFFICIAL, SMPLX = "OFFICIAL", "SMPLX"
BONE_NAMES = ["root", "neck", "jaw", "left_eye", "right_eye"]
JOINTS = ("neck", "jaw", "left_eye", "right_eye")  # FLAME joints 1–4, nine pose features each
JAW_CORRECTIVES = range(9, 18)  # 0-based pose-feature indices of the jaw (after the neck's 9)
POSE_FEATURES = 36
# Bone names (lower case) that play each FLAME joint: the official add-on's, then common ones.
_BONE_ALIASES = {
    "neck": ("neck",),
    "jaw": ("jaw",),
    "left_eye": ("left_eye", "lefteye", "eye_l", "eye.l", "l_eye", "leye"),
    "right_eye": ("right_eye", "righteye", "eye_r", "eye.r", "r_eye", "reye"),
}
_SMPLX_EXP = re.compile(r"^Exp0\d\d$")  # zero-padded: Exp000, Exp001 … (Exp100 is official)
_OFFICIAL_EXP = re.compile(r"^Exp([1-9]\d*)$")


class RigError(ValueError):
    """The selection is not a usable FLAME rig; the message says what to do."""


@dataclass
class Rig:
    mesh: Any
    armature: Any | None
    convention: str
    expression_keys: list[str | None]  # index k → key of coefficient k (None: missing)
    corrective_keys: list[str | None]  # the 36 pose correctives (neck, jaw, eyes), None: missing
    jaw_bone: str | None
    notes: list[str] = field(default_factory=list)
    bones: dict[str, str] = field(default_factory=dict)  # FLAME joint name → bone name
    mapping: Any = None  # a character that is not a FLAME head: its CharacterMapping

    def bone(self, joint: str) -> str | None:
        """The bone playing FLAME joint ``joint`` (neck, jaw, left_eye, right_eye), if any."""
        return self.bones.get(joint)

    @property
    def shape_keys(self) -> Any:
        return self.mesh.data.shape_keys


def expression_key_name(convention: str, k: int) -> str:
    return f"Exp{k:03d}" if convention == SMPLX else f"Exp{k + 1}"


def pose_key_name(convention: str, i: int) -> str:
    return f"Pose{i:03d}" if convention == SMPLX else f"Pose{i + 1}"


def detect_convention(names: list[str], n_expression: int = 100) -> str | None:
    """The convention that names the most of the model's expression keys in ``names`` (a stray
    ``Exp000`` on an ``Exp1…Exp100`` rig does not switch it); None when neither names any."""
    present = set(names)
    counts = {convention: sum(expression_key_name(convention, k) in present
                              for k in range(n_expression)) for convention in (OFFICIAL, SMPLX)}
    best = max((OFFICIAL, SMPLX), key=lambda c: counts[c])  # a tie keeps the official naming
    return best if counts[best] else None


def stray_expression_keys(names: list[str], convention: str) -> list[str]:
    """Keys named like the other convention's expression keys, which this rig ignores."""
    if convention == OFFICIAL:
        return [n for n in names if _SMPLX_EXP.match(n)]
    # Exp100 and up read as SMPL-X's own later coefficients; Exp1…Exp99 cannot.
    return [n for n in names if (m := _OFFICIAL_EXP.match(n)) and int(m.group(1)) < 100]


def expression_names(pattern: str, n_expression: int) -> list[str]:
    """The key names of a user pattern such as ``Expr_{n:02d}``, or one sentence on why the
    pattern cannot be used."""
    problem = ("The expression-key pattern '{}' cannot be used: write {{n}} (from 1) or {{i}} "
               "(from 0) where the number goes, e.g. Expr_{{n:02d}}.")
    try:
        names = [pattern.format(i=k, n=k + 1) for k in range(n_expression)]
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise RigError(problem.format(pattern)) from None
    if len(set(names)) < len(names):
        raise RigError(problem.format(pattern))
    return names


def _listed(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def armature_of(mesh: Any) -> Any | None:
    if mesh.parent is not None and mesh.parent.type == "ARMATURE":
        return mesh.parent
    for modifier in mesh.modifiers:
        if modifier.type == "ARMATURE" and modifier.object is not None:
            return modifier.object
    return None


def has_expression_keys(obj: Any) -> bool:
    """Whether ``obj`` carries FLAME expression shape keys (Exp1… or Exp000…)."""
    return _has_expression_keys(obj)


def _has_expression_keys(obj: Any) -> bool:
    keys = getattr(getattr(obj, "data", None), "shape_keys", None)
    return bool(keys) and detect_convention([k.name for k in keys.key_blocks]) is not None


def is_character(obj: Any) -> bool:
    """A mesh the add-on can animate: a FLAME head, or a character with a mapping."""
    return obj is not None and obj.type == "MESH" and (
        _has_expression_keys(obj) or bool(getattr(obj, "emote_mapping", "")))


def find_rig_object(context: Any) -> Any | None:
    """The FLAME mesh implied by the selection: the active mesh, or a mesh of the active
    armature."""
    candidates = [context.active_object] + list(getattr(context, "selected_objects", []))
    for obj in candidates:
        if obj is None:
            continue
        if is_character(obj):
            return obj
        if obj.type == "ARMATURE":
            for child in obj.children:
                if is_character(child):
                    return child
    return None


def describe_rig(mesh: Any, n_expression: int = 100, exp_pattern: str = "") -> Rig:
    """Read ``mesh``'s keys and armature. ``exp_pattern`` overrides the expression key names:
    a format string with ``{i}`` (0-based) or ``{n}`` (1-based), e.g. ``Expr_{n:02d}``."""
    if mesh is None or mesh.type != "MESH":
        raise RigError("Select the FLAME head mesh (or its armature).")
    keys = mesh.data.shape_keys
    names = [k.name for k in keys.key_blocks] if keys else []
    if getattr(mesh, "emote_mapping", "") and not exp_pattern and detect_convention(
            names, n_expression) is None:
        return describe_character(mesh)
    convention = detect_convention(names, n_expression) or OFFICIAL
    if exp_pattern:
        wanted = expression_names(exp_pattern, n_expression)
    else:
        wanted = [expression_key_name(convention, k) for k in range(n_expression)]
    present = set(names)
    expression: list[str | None] = [name if name in present else None for name in wanted]
    while expression and expression[-1] is None:
        expression.pop()
    if not expression:
        raise RigError(f"'{mesh.name}' has no FLAME expression shape keys (Exp1… or Exp000…). "
                       "Use a head made by the FLAME add-on or 'Create FLAME Head', or, for "
                       "any other character, 'Set Up Character'.")
    notes = []
    missing = [wanted[k] for k, name in enumerate(expression) if name is None]
    used = len(expression) - len(missing)
    if missing:
        notes.append(f"The rig lacks the expression keys {_listed(missing)}; the other {used} "
                     "are used at their own coefficients.")
    if len(expression) < n_expression:
        notes.append(f"The rig has {used} expression keys; the first {len(expression)} of the "
                     f"model's {n_expression} coefficients are used.")
    stray = [] if exp_pattern else stray_expression_keys(names, convention)
    if stray:
        example = expression_key_name(convention, 0)
        notes.append(f"The keys {_listed(stray)} do not follow this rig's {example}… naming and "
                     "are ignored.")
    correctives = [pose_key_name(convention, i) if pose_key_name(convention, i) in present
                   else None for i in range(POSE_FEATURES)]
    armature = armature_of(mesh)
    bones: dict[str, str] = {}
    if armature is not None:
        by_name = {bone.name.lower(): bone.name for bone in armature.data.bones}
        for joint, aliases in _BONE_ALIASES.items():
            found = next((by_name[a] for a in aliases if a in by_name), None)
            if found is not None:
                bones[joint] = found
    jaw = bones.get("jaw")
    if jaw is None:
        notes.append("No jaw bone found: expression is applied, the jaw is not animated.")
    return Rig(mesh=mesh, armature=armature, convention=convention, expression_keys=expression,
               corrective_keys=correctives, jaw_bone=jaw, notes=notes, bones=bones)


def describe_character(mesh: Any) -> Rig:
    """A character with a mapping (ARKit-52 or its own keys): its mapped keys, jaw bone and
    the bones the living layers use (eyes; the head, or else the neck, for head motion)."""
    from .character import (
        HEAD_BONES,
        LEFT_EYE_BONES,
        RIGHT_EYE_BONES,
        CharacterError,
        find_bone,
        mapping_of,
    )

    try:
        mapping = mapping_of(mesh)
    except CharacterError as exc:
        raise RigError(str(exc)) from None
    keys = mesh.data.shape_keys
    present = {k.name for k in keys.key_blocks} if keys else set()
    missing = [name for name in mapping.key_names if name not in present]
    if missing:
        raise RigError(f"'{mesh.name}' lost the shape keys {_listed(missing)} since it was set "
                       "up: set the character up again.")
    armature = armature_of(mesh)
    bones: dict[str, str] = {}
    if armature is not None:
        if mapping.jaw_bone and mapping.jaw_bone in armature.data.bones:
            bones["jaw"] = mapping.jaw_bone
        for joint, aliases in (("left_eye", LEFT_EYE_BONES), ("right_eye", RIGHT_EYE_BONES),
                               ("neck", HEAD_BONES)):
            name = find_bone(armature, aliases)
            if name is not None:
                bones[joint] = name
    return Rig(mesh=mesh, armature=armature, convention="MAPPED", expression_keys=[],
               corrective_keys=[None] * POSE_FEATURES, jaw_bone=bones.get("jaw"),
               notes=[], bones=bones, mapping=mapping)


def check_editable(rig: Rig) -> None:
    """Keys go on the mesh's shape keys and on the armature object's pose, so both objects must
    be local or library overrides. An overridden armature's bone data may stay linked; linked
    mesh data is made an override when the take is applied (:func:`make_shape_keys_editable`).
    """
    for obj in (rig.mesh, rig.armature):
        if obj is not None and obj.library is not None:
            raise RigError(
                f"'{obj.name}' is linked from '{obj.library.filepath}' and cannot be "
                "animated. Make it editable with Object ▸ Library Override ▸ Make, then "
                "generate again.")


def make_shape_keys_editable(rig: Rig) -> Any | None:
    """Linked mesh data under an overridden (or local) object gets a library override of its
    own, so that its shape keys can hold a take; returns the linked mesh it replaced (None when
    the keys were already editable). Only this object is switched to the new override: other
    instances of the same character keep theirs."""
    keys = rig.shape_keys
    if keys is None or keys.library is None:
        return None
    linked = rig.mesh.data
    override = linked.override_create(remap_local_usages=False)
    if override is None:
        raise RigError(f"Could not make a library override of the mesh '{linked.name}' of "
                       f"'{rig.mesh.name}', so its shape keys cannot be animated.")
    rig.mesh.data = override
    return linked


# -- FLAME frame of a rig ----------------------------------------------------------------------

def flame_frame(rig: Rig, flame: Any | None) -> tuple[np.ndarray, float, str]:
    """(C, scale, note): the rotation taking FLAME coordinates to the rig's armature space.

    Heads made by this add-on store theirs. Otherwise, with the user's FLAME file, a rigid fit
    (Kabsch) of the rest mesh to FLAME's template; without it, armature space is taken as FLAME
    space and the note says so.
    """
    arm = rig.armature
    if arm is not None and "emote_flame_to_armature" in arm:
        c = np.asarray(arm["emote_flame_to_armature"], np.float64).reshape(3, 3)
        return c, float(arm.get("emote_flame_scale", 1.0)), ""
    if flame is not None and arm is not None and len(rig.mesh.data.vertices) == flame.n_vertices:
        rest = np.zeros(len(rig.mesh.data.vertices) * 3)
        rig.mesh.data.vertices.foreach_get("co", rest)
        rest = rest.reshape(-1, 3)
        to_arm = np.array(arm.matrix_world.inverted() @ rig.mesh.matrix_world)
        rest = rest @ to_arm[:3, :3].T + to_arm[:3, 3]
        rotation, scale = kabsch(flame.v_template, rest)
        return rotation, scale, ""
    return np.eye(3), 1.0, ("Armature space is taken as FLAME space (set the FLAME file in the "
                            "preferences for an exact fit).")


def kabsch(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation R and scale s minimising ‖s·R·(source − mean) − (target − mean)‖."""
    a = source - source.mean(0)
    b = target - target.mean(0)
    u, sigma, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rotation = u @ fix @ vt
    scale = float(np.trace(np.diag(sigma) @ fix) / np.sum(a * a))
    return rotation, scale


def joint_basis(rig: Rig, joint: str = "jaw") -> np.ndarray | None:
    """(3, E) movement of FLAME joint ``joint`` per expression coefficient, when the rig
    carries it (heads made here: ``emote_joint_bases`` for all four joints; heads made before
    the living layers: ``emote_jaw_joint_basis`` for the jaw)."""
    arm = rig.armature
    if arm is None:
        return None
    if "emote_joint_bases" in arm:
        bases = np.asarray(arm["emote_joint_bases"], np.float64).reshape(len(JOINTS), 3, -1)
        return bases[JOINTS.index(joint)]
    if joint == "jaw" and "emote_jaw_joint_basis" in arm:
        return np.asarray(arm["emote_jaw_joint_basis"], np.float64).reshape(3, -1)
    return None


def jaw_joint_basis(rig: Rig) -> np.ndarray | None:
    """(3, E) movement of the jaw joint per expression coefficient, when the rig carries it."""
    return joint_basis(rig, "jaw")


def lower_face_share(rig: Rig) -> np.ndarray:
    """Per expression key, the share of its motion in the lower face (for the mouth and upper
    face strengths). Heads made here store it; otherwise it is measured from the keys."""
    from .motion import lower_face_shares

    if "emote_lower_face_share" in rig.mesh:
        return np.asarray(rig.mesh["emote_lower_face_share"], np.float64)
    blocks = rig.shape_keys.key_blocks
    n = len(rig.mesh.data.vertices)
    basis = np.zeros(n * 3)
    rig.shape_keys.reference_key.data.foreach_get("co", basis)
    basis = basis.reshape(-1, 3)
    displacement = np.zeros((len(rig.expression_keys), n, 3))
    for k, name in enumerate(rig.expression_keys):
        if name is None:
            continue  # no motion: counted as lower face, and never keyed
        co = np.zeros(n * 3)
        blocks[name].data.foreach_get("co", co)
        displacement[k] = co.reshape(-1, 3) - basis
    up = np.array([0.0, 1.0, 0.0])  # FLAME's y in the mesh data of FLAME heads
    heights = basis @ up
    level = heights.min() + 0.55 * (heights.max() - heights.min())
    return lower_face_shares(displacement, heights, level)


# -- creating a head -----------------------------------------------------------------------

def create_flame_head(context: Any, flame: Any, name: str = "FLAME") -> tuple[Any, Any]:
    """Mesh + armature from a FLAME model, following the official add-on's conventions.

    The mesh and armature data are in FLAME's coordinates (metres, y up); the armature object
    is rotated 90° about X so the head stands z-up in Blender.
    """
    from .motion import lower_face_shares

    collection = context.collection
    arm_data = bpy.data.armatures.new(f"{name}-rig")
    armature = bpy.data.objects.new(f"{name}-rig", arm_data)
    collection.objects.link(armature)
    armature.rotation_euler = (math.pi / 2, 0.0, 0.0)
    joints = flame.rest_joints()
    parents = flame.parents
    previous_active = context.view_layer.objects.active
    context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    edit = arm_data.edit_bones
    for j, bone_name in enumerate(BONE_NAMES):
        bone = edit.new(bone_name)
        bone.head = joints[j]
        bone.tail = joints[j] + np.array([0.0, 0.02, 0.0])  # along FLAME's y: identity rest
        bone.roll = 0.0
        if parents[j] >= 0:
            bone.parent = edit[BONE_NAMES[parents[j]]]
    bpy.ops.object.mode_set(mode="OBJECT")
    context.view_layer.objects.active = previous_active
    for bone in armature.pose.bones:
        bone.rotation_mode = "AXIS_ANGLE"

    mesh_data = bpy.data.meshes.new(name)
    mesh_data.from_pydata([tuple(v) for v in flame.v_template], [],
                          [tuple(int(i) for i in f) for f in flame.faces])
    mesh_data.update()
    mesh = bpy.data.objects.new(name, mesh_data)
    collection.objects.link(mesh)
    mesh.parent = armature
    modifier = mesh.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    for j, bone_name in enumerate(BONE_NAMES):
        group = mesh.vertex_groups.new(name=bone_name)
        for v in np.nonzero(flame.weights[:, j] > 0)[0]:
            group.add([int(v)], float(flame.weights[v, j]), "REPLACE")

    mesh.shape_key_add(name="Basis", from_mix=False)
    template = flame.v_template

    def add_key(key_name: str, offsets: np.ndarray) -> None:
        block = mesh.shape_key_add(name=key_name, from_mix=False)
        block.data.foreach_set("co", (template + offsets).astype(np.float32).ravel())
        block.slider_min, block.slider_max = -10.0, 10.0
        block.value = 0.0  # new keys start at 1 when added from Python

    for k in range(300):
        add_key(f"Shape{k + 1}", flame.shapedirs[:, :, k])
    for k in range(flame.n_expression):
        add_key(f"Exp{k + 1}", flame.shapedirs[:, :, 300 + k])
    for i in range(18):  # neck then jaw, as the official add-on
        add_key(f"Pose{i + 1}", flame.posedirs[:, :, i])
    for i in range(18, POSE_FEATURES):  # then the eyes' (for the living layers' gaze)
        if np.any(flame.posedirs[:, :, i]):
            add_key(f"Pose{i + 1}", flame.posedirs[:, :, i])

    # What exact keying needs later: the frame (identity here), the jaw pivot's expression
    # dependence, and each expression component's lower-face share.
    armature["emote_flame_to_armature"] = np.eye(3).ravel().tolist()
    armature["emote_flame_scale"] = 1.0
    expression_dirs = flame.shapedirs[:, :, 300:]
    armature["emote_jaw_joint_basis"] = np.einsum(
        "v,vce->ce", flame.j_regressor[2], expression_dirs).ravel().tolist()
    armature["emote_joint_bases"] = np.einsum(
        "jv,vce->jce", flame.j_regressor[1:5], expression_dirs).ravel().tolist()
    store_head_geometry(mesh, flame)
    heights = template[:, 1]
    level = 0.5 * (joints[2, 1] + joints[3, 1])
    mesh["emote_lower_face_share"] = lower_face_shares(
        np.moveaxis(expression_dirs, 2, 0), heights, level).tolist()
    return mesh, armature


def store_head_geometry(mesh: Any, flame: Any) -> list[str]:
    """What the living layers need from the FLAME file, kept on a head made from it: the
    eyelid-closing direction in its expression space (server/living/eyelids.py) and the
    lip-closure operator (server/living/closure.py); an empty list where the file's lids or
    lips cannot be found. Returns notes saying so."""
    from .server.living.closure import lip_closure
    from .server.living.eyelids import eyelid_direction

    notes = []
    try:
        lids = eyelid_direction(flame)
        mesh["emote_eyelid_direction"] = np.asarray(lids.expression, np.float64).tolist()
        mesh["emote_eyelid_correction"] = np.asarray(lids.correction, np.float64).ravel().tolist()
    except ValueError as exc:
        mesh["emote_eyelid_direction"] = []
        notes.append(f"No blinks on this head: {exc}")
    try:
        mesh["emote_lip_closure"] = lip_closure(flame).to_list()
    except ValueError as exc:
        mesh["emote_lip_closure"] = []
        notes.append(f"No lip closure on this head: {exc}")
    return notes
