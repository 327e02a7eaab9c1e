# SPDX-License-Identifier: GPL-3.0-or-later
"""Takes as keys: bulk F-curve filling, take actions, switching, deleting, baking to the NLA.

A take is a pair of Actions (shape keys on the Key datablock, jaw bone on the armature) plus the
raw 25 fps result stored on the shape-key action, so the artist controls can rewrite its keys
instantly. Actions the artist made are never written to, except by an explicit bake into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from . import compat, motion
from .rig import JOINTS, Rig, joint_basis, lower_face_share
from .server.flame import axis_angle_to_matrix, corrective_weights

INTERPOLATION_LINEAR = 1  # enum index of 'LINEAR' in Keyframe.interpolation
SLIDER_LIMIT = 10.0  # Blender's widest shape-key slider range


@dataclass
class Placement:
    """Where a take sits in the scene (from the audio strip when it was generated)."""

    strip_start: float
    fps: float
    sound_offset: float
    audio_start: float
    frame_start: int
    frame_end: int

    def as_list(self) -> list[float]:
        return [self.strip_start, self.fps, self.sound_offset, self.audio_start,
                self.frame_start, self.frame_end]

    @classmethod
    def from_list(cls, values: Any) -> Placement:
        v = list(values)
        return cls(float(v[0]), float(v[1]), float(v[2]), float(v[3]), int(v[4]), int(v[5]))


@dataclass
class BoneChannel:
    """One bone's keys: its rotation in its own rotation mode, and its pivot offset."""

    bone: str
    rotation: np.ndarray  # (N, k) in the bone's rotation channel
    rotation_path: str
    location: np.ndarray | None  # (N, 3) in bone space


@dataclass
class Channels:
    """Per-scene-frame values ready to be keyed."""

    frames: np.ndarray  # (N,) scene frames
    expression: np.ndarray  # (N, E)
    correctives: np.ndarray  # (N, 36): the pose features of the neck, jaw and eyes
    bones: list[BoneChannel]
    keyed_joints: tuple[str, ...]  # the joints whose bones (and correctives) are keyed
    key_names: list[str] | None = None  # a mapped character: its keys, for ``key_values``
    key_values: np.ndarray | None = None  # (N, K)
    report: dict[str, float] | None = None  # a mapped take: the share of motion reproduced
    notes: list[str] | None = None

    def bone(self, joint_bone: str) -> BoneChannel | None:
        return next((b for b in self.bones if b.bone == joint_bone), None)


@dataclass
class HeadGeometry:
    """What the living layers need of a head's FLAME geometry (None where it is not known)."""

    eyelid_direction: np.ndarray | None = None  # (E,) expression that closes the lids
    eyelid_correction: np.ndarray | None = None  # (E, E): closing from a frame's expression
    lip_closure: Any | None = None  # server.living.closure.LipClosure
    flame: Any | None = None  # a mapped character's source FLAME (FlameData)
    lower_face_share: np.ndarray | None = None  # (E,) of the source FLAME's components


def take_channels(rig: Rig, expression: np.ndarray, jaw: np.ndarray, placement: Placement,
                  controls: motion.Controls, flame_frame: tuple[np.ndarray, float],
                  living: motion.LivingLayers | None = None,
                  geometry: HeadGeometry | None = None, lip_closure: float = 1.0) -> Channels:
    """Everything to key, at every scene frame the strip plays (shifted by the offset). With
    ``living``, the take's living layers join in: lips shut at the closures, eyelids through
    the head's eyelid direction, and the neck and eye bones. A mapped character's keys come
    from the retarget (:func:`mapped_channels`)."""
    if rig.mapping is not None:
        return mapped_channels(rig, expression, jaw, placement, controls, living,
                               geometry or HeadGeometry(), lip_closure)
    # Coefficients beyond the rig's keys count as lower face (np.resize would repeat them).
    share = np.ones(expression.shape[1])
    measured = lower_face_share(rig)[:len(share)]
    share[:len(measured)] = measured
    expression, jaw = motion.apply_controls(expression, jaw, controls, share)
    geometry = geometry or HeadGeometry()
    if living is not None:
        expression, jaw = _living_face(expression, jaw, living, geometry, lip_closure)
    frames = np.arange(placement.frame_start, placement.frame_end, dtype=np.float64)
    positions = motion.sample_positions(frames, placement.strip_start, placement.fps,
                                        placement.sound_offset, placement.audio_start)
    expression, jaw = motion.resample(expression, jaw, positions)
    rotations = {"jaw": jaw}
    if living is not None:
        rotations["neck"] = motion.resample_rotations(living.neck, positions)
        rotations["left_eye"] = motion.resample_rotations(living.eyes[:, 0], positions)
        rotations["right_eye"] = motion.resample_rotations(living.eyes[:, 1], positions)
    frames = frames + controls.offset
    correctives = np.zeros((len(frames), 36))
    for j, joint in enumerate(JOINTS):
        if joint in rotations:
            correctives[:, 9 * j: 9 * j + 9] = corrective_weights(rotations[joint])
    bones = []
    keyed = tuple(joint for joint in JOINTS if joint in rotations and rig.bone(joint))
    if keyed:
        c, scale = flame_frame
        n = min(len(rig.expression_keys), expression.shape[1])
        shown = np.zeros(expression.shape[1])  # pivots move with the keys the rig has
        shown[:n] = [name is not None for name in rig.expression_keys[:n]]
        for joint in keyed:
            name = rig.bone(joint)
            bone = rig.armature.data.bones[name]
            rest = np.array(bone.matrix_local.to_3x3())
            rot_bone = motion.flame_to_bone(axis_angle_to_matrix(rotations[joint]), rest, c)
            values, path = _rotation_channel(rig.armature.pose.bones[name], rot_bone)
            offsets = motion.pivot_offsets(rotations[joint], expression * shown,
                                           joint_basis(rig, joint))
            location = None
            if offsets is not None:
                location = scale * (offsets @ c.T) @ rest  # FLAME → armature → bone rest frame
            bones.append(BoneChannel(bone=name, rotation=values, rotation_path=path,
                                     location=location))
    return Channels(frames=frames, expression=expression, correctives=correctives,
                    bones=bones, keyed_joints=keyed)


def mapped_channels(rig: Rig, expression: np.ndarray, jaw: np.ndarray, placement: Placement,
                    controls: motion.Controls, living: motion.LivingLayers | None,
                    geometry: HeadGeometry, lip_closure: float = 1.0) -> Channels:
    """A FLAME take on a character that is not a FLAME head: the artist controls and the
    source's lip closure on the FLAME motion, then all frames solved onto the character's keys
    at once (:func:`server.retarget.retarget`), resampled to the scene's frames; its jaw bone
    as the solve turns it; blinks on its eyeBlink keys (or through FLAME's eyelid direction),
    gaze on its eye bones (or eyeLook keys), head motion on its head bone."""
    from .character import bone_rest_in_mesh, gaze_key_values
    from .server.retarget import retarget

    mapping, flame = rig.mapping, geometry.flame
    if flame is None:
        raise ValueError("A character's take needs its source FLAME head (the demo head, or "
                         "the FLAME file of the preferences).")
    share = geometry.lower_face_share
    expression, jaw = motion.apply_controls(
        expression, jaw, controls, None if share is None else share[:expression.shape[1]])
    closure = None
    if living is not None:
        expression, jaw = _shut_lips(expression, jaw, living, geometry, lip_closure)
        if living.closure is not None and geometry.lip_closure is not None:
            closure = living.closure if lip_closure >= 0.999 else None
        if not all(n in mapping.arkit for n in ("eyeBlinkLeft", "eyeBlinkRight")):
            expression = _add_eyelids(expression, living.eyelids, geometry)
    expression = expression[:, :flame.n_expression]
    result = retarget(mapping, flame, expression, jaw, closure=closure)
    weights = np.array(result.weights, np.float64)
    names = list(mapping.key_names)
    index = {name: i for i, name in enumerate(names)}
    if living is not None:
        extra = {}
        for canonical in ("eyeBlinkLeft", "eyeBlinkRight"):
            if canonical in mapping.arkit:
                extra[mapping.arkit[canonical]] = living.eyelids
        if not (rig.bone("left_eye") or rig.bone("right_eye")):
            for canonical, values in gaze_key_values(living.eyes).items():
                if canonical in mapping.arkit:
                    extra[mapping.arkit[canonical]] = values
        for name, values in extra.items():
            i = index[name]
            lo, hi = mapping.key_ranges[i]
            weights[:, i] = np.clip(np.maximum(weights[:, i], values), lo, hi)
    frames = np.arange(placement.frame_start, placement.frame_end, dtype=np.float64)
    positions = motion.sample_positions(frames, placement.strip_start, placement.fps,
                                        placement.sound_offset, placement.audio_start)
    values = motion.resample_values(weights, positions)
    frames = frames + controls.offset
    rotations = {}
    if result.jaw is not None and rig.bone("jaw"):
        rotations["jaw"] = motion.resample_rotations(result.jaw, positions)
    if living is not None:
        rotations["neck"] = motion.resample_rotations(living.neck, positions)
        rotations["left_eye"] = motion.resample_rotations(living.eyes[:, 0], positions)
        rotations["right_eye"] = motion.resample_rotations(living.eyes[:, 1], positions)
    bones = []
    keyed = tuple(joint for joint in JOINTS if joint in rotations and rig.bone(joint))
    c = mapping.rotation
    for joint in keyed:
        name = rig.bone(joint)
        rest = mapping.jaw_rest if joint == "jaw" else bone_rest_in_mesh(
            rig.mesh, rig.armature, name)[1]
        turn = axis_angle_to_matrix(rotations[joint])
        rot_bone = rest.T @ (c @ turn @ c.T) @ rest
        channel, path = _rotation_channel(rig.armature.pose.bones[name], rot_bone)
        bones.append(BoneChannel(bone=name, rotation=channel, rotation_path=path,
                                 location=None))
    return Channels(frames=frames, expression=np.zeros((len(frames), 0)),
                    correctives=np.zeros((len(frames), 36)), bones=bones, keyed_joints=keyed,
                    key_names=names, key_values=values, report=dict(result.report),
                    notes=list(result.notes))


def _living_face(expression: np.ndarray, jaw: np.ndarray, living: motion.LivingLayers,
                 geometry: HeadGeometry, lip_closure: float) -> tuple[np.ndarray, np.ndarray]:
    """The lips shut at the take's p/b/m closures, then the eyelids added (25 fps)."""
    expression, jaw = _shut_lips(expression, jaw, living, geometry, lip_closure)
    return _add_eyelids(expression, living.eyelids, geometry), jaw


def _shut_lips(expression: np.ndarray, jaw: np.ndarray, living: motion.LivingLayers,
               geometry: HeadGeometry, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """The take with its lips shut by ``amount`` where its closure track says (when the head's
    closing operator is known)."""
    if living.closure is None or geometry.lip_closure is None or amount <= 0:
        return expression, jaw
    from .server.living.closure import close_lips

    return close_lips(expression, jaw, living.closure, geometry.lip_closure, amount)


def _add_eyelids(expression: np.ndarray, eyelids: np.ndarray,
                 geometry: HeadGeometry) -> np.ndarray:
    """The eyelid closure (T,) through the head's eyelid direction, widening the expression
    to the direction's components where it is longer."""
    direction = geometry.eyelid_direction
    if direction is None or not np.any(eyelids):
        return expression
    from .server.living.eyelids import closing_offsets

    width = max(expression.shape[1], len(direction))
    out = np.zeros((len(expression), width))
    out[:, :expression.shape[1]] = expression
    out[:, :len(direction)] += closing_offsets(direction, geometry.eyelid_correction, eyelids,
                                               expression)
    return out


def _rotation_channel(pose_bone: Any, rotations: np.ndarray) -> tuple[np.ndarray, str]:
    """Values for the bone's own rotation mode (the artist's choice is kept)."""
    mode = pose_bone.rotation_mode
    quats = motion.continuous_quaternions(motion.matrix_to_quaternion(rotations))
    if mode == "QUATERNION":
        return quats, "rotation_quaternion"
    if mode == "AXIS_ANGLE":
        angle, axis = motion.quaternion_to_axis_angle(quats)
        return np.concatenate([angle[:, None], axis], axis=1), "rotation_axis_angle"
    from mathutils import Matrix

    eulers = []
    previous = None
    for r in rotations:
        euler = Matrix(r.tolist()).to_euler(mode, previous) if previous is not None else \
            Matrix(r.tolist()).to_euler(mode)
        eulers.append(tuple(euler))
        previous = euler
    return np.asarray(eulers), "rotation_euler"


# -- writing ---------------------------------------------------------------------------------

def fill_fcurve(curves: Any, data_path: str, index: int, frames: np.ndarray,
                values: np.ndarray) -> Any:
    """One F-curve holding exactly these keys (linear), written in bulk: ``keyframe_insert``
    per key is hundreds of times slower."""
    curve = curves.find(data_path, index=index)
    if curve is None:
        curve = curves.new(data_path, index=index)
    else:
        curve.keyframe_points.clear()
    count = len(frames)
    curve.keyframe_points.add(count)
    co = np.empty(count * 2, np.float32)
    co[0::2] = frames
    co[1::2] = values
    curve.keyframe_points.foreach_set("co", co)
    curve.keyframe_points.foreach_set("interpolation", np.full(count, INTERPOLATION_LINEAR,
                                                               np.int32))
    curve.update()
    return curve


def write_channels(rig: Rig, channels: Channels, shape_action: Any,
                   armature_action: Any | None) -> list[str]:
    """Key ``channels`` into the take's two actions; returns notes for the report."""
    notes = []
    key = rig.shape_keys
    curves = compat.fcurves(shape_action, key)
    blocks = key.key_blocks
    n = min(len(rig.expression_keys), channels.expression.shape[1])
    clipped = 0
    if channels.key_names is not None:
        for k, name in enumerate(channels.key_names):
            values = channels.key_values[:, k]  # within the key's own slider range
            fill_fcurve(curves, f'key_blocks["{name}"].value', 0, channels.frames, values)
    for k in range(n):
        if rig.expression_keys[k] is None:
            continue  # the rig lacks this key (the report names it)
        values = channels.expression[:, k]
        clipped += int(np.count_nonzero(np.abs(values) > SLIDER_LIMIT))
        _widen_slider(blocks[rig.expression_keys[k]], values)
        fill_fcurve(curves, f'key_blocks["{rig.expression_keys[k]}"].value', 0,
                    channels.frames, np.clip(values, -SLIDER_LIMIT, SLIDER_LIMIT))
    unkeyed = [j for j in JOINTS if j not in channels.keyed_joints]
    # A layer turned off leaves no keys of its own behind in the take's actions, and what its
    # keys moved goes back to rest.
    for i, name in enumerate(rig.corrective_keys):
        if name is not None and JOINTS[i // 9] in unkeyed and _remove_curves(
                curves, {f'key_blocks["{name}"].value'}):
            blocks[name].value = 0.0
    if armature_action is not None:
        bone_curves = compat.fcurves(armature_action, rig.armature)
        for joint in unkeyed:
            name = rig.bone(joint)
            if name and _remove_curves(bone_curves, {f'pose.bones["{name}"]'}, prefix=True):
                _rest_pose(rig.armature.pose.bones[name])
    for i, name in enumerate(rig.corrective_keys):
        if name is None or JOINTS[i // 9] not in channels.keyed_joints:
            continue
        values = channels.correctives[:, i]
        _widen_slider(blocks[name], values)
        fill_fcurve(curves, f'key_blocks["{name}"].value', 0, channels.frames, values)
    if clipped:
        notes.append(f"{clipped} expression values beyond ±{SLIDER_LIMIT:.0f} were clipped.")
    if armature_action is not None and channels.bones:
        bone_curves = compat.fcurves(armature_action, rig.armature)
        for bone in channels.bones:
            base = f'pose.bones["{bone.bone}"]'
            for i in range(bone.rotation.shape[1]):
                fill_fcurve(bone_curves, f"{base}.{bone.rotation_path}", i, channels.frames,
                            bone.rotation[:, i])
            if bone.location is not None:
                for i in range(3):
                    fill_fcurve(bone_curves, f"{base}.location", i, channels.frames,
                                bone.location[:, i])
    return notes


def _remove_curves(curves: Any, paths: set[str], prefix: bool = False) -> bool:
    """Remove the F-curves at ``paths`` (with ``prefix``: under them) from a take's action;
    True when there were any."""
    def doomed(path: str) -> bool:
        return path in paths or (prefix and any(path.startswith(p + ".") for p in paths))

    found = [c for c in curves if doomed(c.data_path)]
    for curve in found:
        curves.remove(curve)
    return bool(found)


def _rest_pose(pose_bone: Any) -> None:
    pose_bone.location = (0.0, 0.0, 0.0)
    pose_bone.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
    pose_bone.rotation_axis_angle = (0.0, 0.0, 1.0, 0.0)
    pose_bone.rotation_euler = (0.0, 0.0, 0.0)


def _widen_slider(block: Any, values: np.ndarray) -> None:
    """Blender clamps shape-key values to the slider range even when animated."""
    low = max(-SLIDER_LIMIT, float(np.floor(values.min(initial=0.0))))
    high = min(SLIDER_LIMIT, float(np.ceil(values.max(initial=1.0))))
    if block.slider_min > low:
        block.slider_min = low
    if block.slider_max < high:
        block.slider_max = high


# -- takes -------------------------------------------------------------------------------------

def new_take_actions(rig: Rig, label: str) -> tuple[Any, Any | None]:
    shape = compat.new_action(f"EMOTE {label} (face)", rig.shape_keys)
    shape["emote_take"] = True
    armature = None
    if rig.armature is not None and rig.bones:
        armature = compat.new_action(f"EMOTE {label} (jaw)", rig.armature)
        armature["emote_take"] = True
    return shape, armature


def store_raw(action: Any, expression: np.ndarray, jaw: np.ndarray, placement: Placement) -> None:
    action["emote_expression"] = np.asarray(expression, np.float64).ravel().tolist()
    action["emote_jaw"] = np.asarray(jaw, np.float64).ravel().tolist()
    action["emote_frames"] = int(len(expression))
    action["emote_placement"] = placement.as_list()


def load_raw(action: Any) -> tuple[np.ndarray, np.ndarray, Placement]:
    frames = int(action["emote_frames"])
    expression = np.asarray(action["emote_expression"], np.float64).reshape(frames, -1)
    jaw = np.asarray(action["emote_jaw"], np.float64).reshape(frames, 3)
    return expression, jaw, Placement.from_list(action["emote_placement"])


def remember_original_actions(mesh: Any, rig: Rig) -> None:
    """Keep a reference to the artist's own actions before a take replaces them (first time)."""
    if mesh.get("emote_originals_saved"):
        return
    mesh.emote_original_shape_action = compat.active_action(rig.shape_keys)
    if rig.armature is not None:
        mesh.emote_original_armature_action = compat.active_action(rig.armature)
    mesh["emote_originals_saved"] = True


def activate_take(rig: Rig, take: Any) -> None:
    compat.assign_action(rig.shape_keys, take.shape_action)
    if rig.armature is not None and take.armature_action is not None:
        compat.assign_action(rig.armature, take.armature_action)


def restore_originals(mesh: Any, rig: Rig) -> None:
    compat.assign_action(rig.shape_keys, mesh.emote_original_shape_action)
    if rig.armature is not None:
        original = mesh.emote_original_armature_action
        if compat.active_action(rig.armature) is not original:
            compat.assign_action(rig.armature, original)


def delete_take(mesh: Any, rig: Rig, index: int) -> None:
    """Remove take ``index`` and only its actions."""
    takes = mesh.emote_takes
    take = takes[index]
    was_active = index == mesh.emote_active_take
    for action in (take.shape_action, take.armature_action):
        if action is not None and action.get("emote_take"):
            bpy.data.actions.remove(action)
    takes.remove(index)
    if not takes:
        mesh.emote_active_take = -1
        restore_originals(mesh, rig)
    elif was_active or mesh.emote_active_take >= len(takes):
        mesh.emote_active_take = min(index, len(takes) - 1)
        activate_take(rig, takes[mesh.emote_active_take])
    elif mesh.emote_active_take > index:
        mesh.emote_active_take -= 1


def bake_to_nla(mesh: Any, rig: Rig, take: Any) -> list[Any]:
    """Push the take's actions to NLA tracks where its keys are; the artist's own actions
    become active again so they play on top."""
    placement = Placement.from_list(take.shape_action["emote_placement"])
    start = placement.frame_start + int(round(take.offset))
    strips = [compat.new_nla_strip(rig.shape_keys, f"EMOTE {take.name}", take.shape_action,
                                   start)]
    if take.armature_action is not None and rig.armature is not None:
        strips.append(compat.new_nla_strip(rig.armature, f"EMOTE {take.name}",
                                           take.armature_action, start))
    restore_originals(mesh, rig)
    return strips


def bake_into_actions(mesh: Any, rig: Rig, take: Any) -> None:
    """Copy the take's keys into the artist's current actions over the take's frame range
    (creating actions where there are none); other keys outside that range stay."""
    pairs = [(rig.shape_keys, take.shape_action, "emote_original_shape_action")]
    if rig.armature is not None and take.armature_action is not None:
        pairs.append((rig.armature, take.armature_action, "emote_original_armature_action"))
    for owner, source, attribute in pairs:
        target = getattr(mesh, attribute)
        if target is None:
            target = compat.new_action(f"{owner.name} animation", owner)
            setattr(mesh, attribute, target)
        target_curves = compat.fcurves(target, owner)
        for curve in compat.fcurves(source, owner):
            count = len(curve.keyframe_points)
            co = np.zeros(count * 2, np.float32)
            curve.keyframe_points.foreach_get("co", co)
            frames, values = co[0::2], co[1::2]
            existing = target_curves.find(curve.data_path, index=curve.array_index)
            if existing is not None:
                old = np.zeros(len(existing.keyframe_points) * 2, np.float32)
                existing.keyframe_points.foreach_get("co", old)
                keep = (old[0::2] < frames.min()) | (old[0::2] > frames.max())
                frames = np.concatenate([old[0::2][keep], frames])
                values = np.concatenate([old[1::2][keep], values])
                order = np.argsort(frames, kind="stable")
                frames, values = frames[order], values[order]
            fill_fcurve(target_curves, curve.data_path, curve.array_index, frames, values)
    restore_originals(mesh, rig)
