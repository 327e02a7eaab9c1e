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
from .rig import Rig, jaw_joint_basis, lower_face_share
from .server.flame import axis_angle_to_matrix, jaw_corrective_weights

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
class Channels:
    """Per-scene-frame values ready to be keyed."""

    frames: np.ndarray  # (N,) scene frames
    expression: np.ndarray  # (N, E)
    correctives: np.ndarray  # (N, 9)
    jaw_rotation: np.ndarray | None  # (N, k) in the bone's rotation channel
    jaw_location: np.ndarray | None  # (N, 3) in bone space
    rotation_path: str


def take_channels(rig: Rig, expression: np.ndarray, jaw: np.ndarray, placement: Placement,
                  controls: motion.Controls, flame_frame: tuple[np.ndarray, float]) -> Channels:
    """Everything to key, at every scene frame the strip plays (shifted by the offset)."""
    # Coefficients beyond the rig's keys count as lower face (np.resize would repeat them).
    share = np.ones(expression.shape[1])
    measured = lower_face_share(rig)[:len(share)]
    share[:len(measured)] = measured
    expression, jaw = motion.apply_controls(expression, jaw, controls, share)
    frames = np.arange(placement.frame_start, placement.frame_end, dtype=np.float64)
    positions = motion.sample_positions(frames, placement.strip_start, placement.fps,
                                        placement.sound_offset, placement.audio_start)
    expression, jaw = motion.resample(expression, jaw, positions)
    frames = frames + controls.offset
    correctives = jaw_corrective_weights(jaw)
    rotation = location = None
    path = ""
    if rig.jaw_bone is not None:
        c, scale = flame_frame
        bone = rig.armature.data.bones[rig.jaw_bone]
        rest = np.array(bone.matrix_local.to_3x3())
        rot_bone = motion.flame_to_bone(axis_angle_to_matrix(jaw), rest, c)
        pose_bone = rig.armature.pose.bones[rig.jaw_bone]
        rotation, path = _rotation_channel(pose_bone, rot_bone)
        n = min(len(rig.expression_keys), expression.shape[1])
        shown = np.zeros(expression.shape[1])  # the pivot moves with the keys the rig has
        shown[:n] = [name is not None for name in rig.expression_keys[:n]]
        offsets = motion.jaw_pivot_offsets(jaw, expression * shown, jaw_joint_basis(rig))
        if offsets is not None:
            location = scale * (offsets @ c.T) @ rest  # FLAME → armature → bone rest frame
    return Channels(frames=frames, expression=expression, correctives=correctives,
                    jaw_rotation=rotation, jaw_location=location, rotation_path=path)



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
    for k in range(n):
        if rig.expression_keys[k] is None:
            continue  # the rig lacks this key (the report names it)
        values = channels.expression[:, k]
        clipped += int(np.count_nonzero(np.abs(values) > SLIDER_LIMIT))
        _widen_slider(blocks[rig.expression_keys[k]], values)
        fill_fcurve(curves, f'key_blocks["{rig.expression_keys[k]}"].value', 0,
                    channels.frames, np.clip(values, -SLIDER_LIMIT, SLIDER_LIMIT))
    for i, name in enumerate(rig.corrective_keys):
        if name is None or rig.jaw_bone is None:
            continue
        values = channels.correctives[:, i]
        _widen_slider(blocks[name], values)
        fill_fcurve(curves, f'key_blocks["{name}"].value', 0, channels.frames, values)
    if clipped:
        notes.append(f"{clipped} expression values beyond ±{SLIDER_LIMIT:.0f} were clipped.")
    if armature_action is not None and channels.jaw_rotation is not None:
        bone_curves = compat.fcurves(armature_action, rig.armature)
        base = f'pose.bones["{rig.jaw_bone}"]'
        for i in range(channels.jaw_rotation.shape[1]):
            fill_fcurve(bone_curves, f"{base}.{channels.rotation_path}", i, channels.frames,
                        channels.jaw_rotation[:, i])
        if channels.jaw_location is not None:
            for i in range(3):
                fill_fcurve(bone_curves, f"{base}.location", i, channels.frames,
                            channels.jaw_location[:, i])
    return notes


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
    if rig.armature is not None and rig.jaw_bone is not None:
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
