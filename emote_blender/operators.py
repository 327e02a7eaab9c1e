# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators: thin layers that gather inputs, call the functions of the other modules, and
apply results. ``bpy.ops.emote.generate(wait=True)`` blocks until done (scripts, pipelines)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from bpy.props import BoolProperty, IntProperty, StringProperty

from . import compat, keys, motion, properties, rig, strips
from .preferences import ADDON_ROOT, check_python, preferences
from .server import protocol
from .worker import Job, WorkerClient, WorkerError

GENERATE_TIMEOUT = 600.0  # seconds without any message from the worker


# -- the worker --------------------------------------------------------------------------------

_client: WorkerClient | None = None


def server_root() -> Path:
    """The folder holding the ``server`` package the worker runs (inside the extension)."""
    return ADDON_ROOT


def client(context: Any = None) -> WorkerClient:
    """The add-on's worker client; replaced when the interpreter preference changes."""
    global _client
    prefs = preferences(context)
    idle = prefs.idle_minutes * 60 if prefs.idle_minutes else None
    python = bpy.path.abspath(prefs.python)
    if _client is None or _client.python != python or _client.idle_timeout != idle:
        if _client is not None:
            _client.stop()
        _client = WorkerClient(python=python, server_root=server_root(), idle_timeout=idle)
    return _client


def stop_worker() -> None:
    global _client
    if _client is not None:
        _client.stop()
        _client = None


def model_request(context: Any) -> dict[str, Any]:
    prefs = preferences(context)
    if prefs.model_kind == "DEMO":
        return {"model": None, "assets": None, "device": prefs.device}
    model = bpy.path.abspath(prefs.model_path).rstrip("/\\") if prefs.model_path else ""
    if not model:
        raise ValueError("No model is set: choose the EMOTE_v2 folder or a bundle in the "
                         "add-on preferences.")
    assets = bpy.path.abspath(prefs.assets_path) if (prefs.model_kind == "OFFICIAL"
                                                     and prefs.assets_path) else None
    return {"model": model, "assets": assets, "device": prefs.device}


def flame_file(context: Any) -> Any | None:
    path = preferences(context).flame_path
    if not path:
        return None
    from .server.flame import load_flame_file

    return load_flame_file(bpy.path.abspath(path))


# -- condition ---------------------------------------------------------------------------------

def static_condition(settings: Any) -> dict[str, Any]:
    emotion: Any = properties.EMOTIONS[int(settings.emotion)]
    second = int(settings.second_emotion)
    if second >= 0 and settings.mix > 0:
        mixture = {emotion: 1.0 - settings.mix}
        other = properties.EMOTIONS[second]
        mixture[other] = mixture.get(other, 0.0) + settings.mix
        emotion = mixture
    return {"emotion": emotion, "intensity": int(settings.intensity),
            "style": int(settings.style or 0)}


def animated_condition(scene: Any, request: strips.AudioRequest) -> dict[str, Any]:
    """Per-frame curves at 25 fps: the scene's emotion settings evaluated at each output frame
    (emotion mixtures and intensities; the style is fixed). The worker turns them into the
    model's condition rows, whatever its number of styles."""
    settings = scene.emote
    frames = max(1, int((request.end - request.start) * motion.TAKE_FPS))
    times = request.start + np.arange(frames) / motion.TAKE_FPS
    scene_frames = request.strip_start + (times + request.sound_offset) * request.fps
    action = compat.active_action(scene)
    curves = {}
    if action is not None:
        for curve in compat.fcurves(action, scene):
            if curve.data_path.startswith("emote."):
                curves[curve.data_path[len("emote."):]] = curve

    def value(name: str, frame: float, default: float) -> float:
        curve = curves.get(name)
        return float(curve.evaluate(frame)) if curve is not None else default

    emotions, intensities = [], []
    for frame in scene_frames:
        emotion = int(round(value("emotion", frame, int(settings.emotion))))
        second = int(round(value("second_emotion", frame, int(settings.second_emotion))))
        mix = float(np.clip(value("mix", frame, settings.mix), 0.0, 1.0)) if second >= 0 else 0.0
        mixture = {str(emotion): 1.0 - mix}
        if second >= 0:
            mixture[str(second)] = mixture.get(str(second), 0.0) + mix
        emotions.append(mixture)
        intensities.append(int(round(value("intensity", frame, int(settings.intensity)))))
    return {"emotion": emotions, "intensity": intensities, "style": int(settings.style or 0)}


# -- generation --------------------------------------------------------------------------------

@dataclass
class PendingGeneration:
    job: Job
    load_job: Job | None
    load_key: tuple
    mesh_name: str
    audio: strips.AudioRequest
    label_parts: tuple[str, str, int]  # emotion text, intensity, style index
    condition: Any
    scene_name: str
    notes: list[str] = field(default_factory=list)


_pending: PendingGeneration | None = None


def start_generation(context: Any) -> PendingGeneration:
    """Check every input, then send the requests; the scene is not touched until the result."""
    global _pending
    if _pending is not None and not _pending.job.done:
        raise ValueError("A generation is already running; cancel it first.")
    scene = context.scene
    settings = scene.emote
    mesh = settings.rig or rig.find_rig_object(context)
    if mesh is None:
        raise rig.RigError("No FLAME head found: select the head mesh (with Exp shape keys) or "
                           "its armature, or set Head in the panel.")
    target = rig.describe_rig(mesh, exp_pattern=settings.exp_pattern)
    rig.check_editable(target)
    strip = strips.find_sound_strip(context, settings.strip)
    audio = strips.audio_request(compat.sequencer_scene(context), strip)
    request = model_request(context)
    worker = client(context)
    load_job = None
    key = (request["model"], request["assets"], request["device"])
    if worker.loaded_key != key or not worker.alive:
        load_job = worker.send(protocol.LOAD, timeout=GENERATE_TIMEOUT, **request)
    condition: Any = animated_condition(scene, audio) if settings.animated else \
        static_condition(settings)
    label_parts = _label_parts(settings)
    job = worker.send(protocol.GENERATE, timeout=GENERATE_TIMEOUT, audio=audio.path,
                      start=audio.start, end=audio.end, condition=condition)
    _pending = PendingGeneration(job=job, load_job=load_job, load_key=key, mesh_name=mesh.name,
                                 audio=audio,
                                 label_parts=label_parts, condition=condition,
                                 scene_name=scene.name,
                                 notes=list(target.notes))
    settings.running, settings.progress, settings.status = True, 0.0, "Generating…"
    return _pending


def _label_parts(settings: Any) -> tuple[str, str, int]:
    emotion = properties.EMOTIONS[int(settings.emotion)]
    second = int(settings.second_emotion)
    if second >= 0 and settings.mix > 0:
        emotion = f"{emotion} {1 - settings.mix:.0%} + {properties.EMOTIONS[second]}"
    if settings.animated:
        emotion = "Animated"
    intensity = properties.INTENSITIES[int(settings.intensity)][1].lower()
    return emotion, intensity, int(settings.style or 0)


def take_label(parts: tuple[str, str, int]) -> str:
    """"Happy · strong · M003", with the style named by the model that made the take (known
    once the worker has loaded it)."""
    emotion, intensity, style = parts
    styles = properties.MODEL_INFO["styles"]
    name = styles[style] if 0 <= style < len(styles) else f"style {style}"
    return f"{emotion} · {intensity} · {name}"


def poll_generation() -> tuple[str, str] | None:
    """Drain worker events; when the pending job ends, apply it. Returns (level, message)
    when it ended (level: INFO, WARNING or ERROR), None while it runs."""
    global _pending
    pending = _pending
    if pending is None:
        return None
    worker = _client
    if worker is not None:
        worker.drain()
    scene = bpy.data.scenes.get(pending.scene_name)
    settings = scene.emote if scene is not None else None
    if pending.load_job is not None and pending.load_job.done:
        reply = pending.load_job.reply or {}
        if reply.get("type") == protocol.LOADED and worker is not None:
            worker.loaded_key = pending.load_key
            properties.MODEL_INFO.update(reply.get("info", {}))
    if not pending.job.done:
        if settings is not None:
            settings.progress = pending.job.progress
            settings.status = f"{pending.job.stage or 'starting'} {pending.job.progress:.0%}"
        return None
    _pending = None
    pending.audio.cleanup()
    if worker is not None:
        worker.forget(pending.job)
        if pending.load_job is not None:
            worker.forget(pending.load_job)
    if settings is not None:
        settings.running, settings.progress = False, 0.0
    reply = pending.job.reply or {}
    load_reply = pending.load_job.reply if pending.load_job is not None else None
    if load_reply is not None and load_reply.get("type") == protocol.ERROR:
        return _finish(settings, "ERROR", load_reply["message"])
    if reply.get("type") == protocol.CANCELLED:
        return _finish(settings, "INFO", "Generation cancelled; nothing was changed.")
    if reply.get("type") != protocol.RESULT:
        return _finish(settings, "ERROR", reply.get("message", "The worker failed."))
    try:
        message = apply_result(pending, reply)
    except Exception as exc:  # the scene is restored by apply_result; say what happened
        return _finish(settings, "ERROR", f"Could not apply the take: {exc}")
    return _finish(settings, "INFO", message)


def _finish(settings: Any, level: str, message: str) -> tuple[str, str]:
    if settings is not None:
        settings.status = message
    return level, message


def apply_result(pending: PendingGeneration, reply: dict[str, Any]) -> str:
    """The result becomes a new take: two new actions, keys, made active."""
    mesh = bpy.data.objects.get(pending.mesh_name)
    if mesh is None:
        raise ValueError(f"The head '{pending.mesh_name}' was deleted while generating.")
    pattern = bpy.context.scene.emote.exp_pattern
    target = rig.describe_rig(mesh, exp_pattern=pattern)
    linked_mesh = rig.make_shape_keys_editable(target)
    if linked_mesh is not None:
        target = rig.describe_rig(mesh, exp_pattern=pattern)
    expression = np.asarray(reply["expression"], np.float64)
    jaw = np.asarray(reply["jaw"], np.float64)
    audio = pending.audio
    placement = keys.Placement(strip_start=audio.strip_start, fps=audio.fps,
                               sound_offset=audio.sound_offset, audio_start=audio.start,
                               frame_start=audio.frame_start, frame_end=audio.frame_end)
    frame_info = flame_frame_for(target)
    previous = (compat.active_action(target.shape_keys),
                compat.active_action(target.armature) if target.armature else None,
                mesh.emote_active_take)
    created: list[Any] = []
    try:
        keys.remember_original_actions(mesh, target)
        label = take_label(pending.label_parts)
        shape_action, armature_action = keys.new_take_actions(target, label)
        created = [a for a in (shape_action, armature_action) if a is not None]
        keys.store_raw(shape_action, expression, jaw, placement)
        shape_action["emote_cached"] = int(bool(reply.get("cached")))
        shape_action["emote_flame_frame"] = np.asarray(frame_info[0]).ravel().tolist() + [
            frame_info[1]]
        channels = keys.take_channels(target, expression, jaw, placement, motion.Controls(),
                                      frame_info[:2])
        notes = keys.write_channels(target, channels, shape_action, armature_action)
        take = mesh.emote_takes.add()
        take.name = f"{label} #{len(mesh.emote_takes)}"
        take.label = label
        take.shape_action = shape_action
        take.armature_action = armature_action
        take.strip_name = audio.strip_name
        per_frame = any(isinstance(v, list) for v in pending.condition.values())
        take.condition = json.dumps("per-frame" if per_frame else pending.condition)
        keys.activate_take(target, take)
        with takes_switched_by_code(mesh):
            mesh.emote_active_take = len(mesh.emote_takes) - 1
    except Exception:
        # Nothing half-done stays in the scene.
        if len(mesh.emote_takes) and mesh.emote_takes[-1].shape_action in created:
            mesh.emote_takes.remove(len(mesh.emote_takes) - 1)
        for action in created:
            bpy.data.actions.remove(action)
        compat.assign_action(target.shape_keys, previous[0])
        if target.armature is not None:
            compat.assign_action(target.armature, previous[1])
        with takes_switched_by_code(mesh):
            mesh.emote_active_take = previous[2]
        if linked_mesh is not None:
            override, mesh.data = mesh.data, linked_mesh
            bpy.data.meshes.remove(override)
        raise
    if linked_mesh is not None:
        notes.append(f"The mesh '{linked_mesh.name}' is linked: this head now uses a library "
                     "override of it, so its shape keys can take keys.")
    all_notes = pending.notes + notes + ([frame_info[2]] if frame_info[2] else []) + list(
        reply.get("warnings", []))
    message = f"New take '{take.name}': {len(channels.frames)} frames."
    return " ".join([message] + all_notes)


def flame_frame_for(target: rig.Rig) -> tuple[np.ndarray, float, str]:
    flame = None
    if target.armature is not None and "emote_flame_to_armature" not in target.armature:
        try:
            flame = flame_file(bpy.context)
        except ValueError:
            flame = None
    return rig.flame_frame(target, flame)


def reapply_take_controls(mesh: Any, take: Any) -> None:
    """Rewrite a take's keys from its stored result with its current controls."""
    if take.shape_action is None or "emote_expression" not in take.shape_action:
        return
    target = rig.describe_rig(mesh, exp_pattern=bpy.context.scene.emote.exp_pattern)
    expression, jaw, placement = keys.load_raw(take.shape_action)
    stored = np.asarray(take.shape_action.get("emote_flame_frame", []), np.float64)
    frame = (stored[:9].reshape(3, 3), float(stored[9])) if len(stored) == 10 else \
        flame_frame_for(target)[:2]
    controls = motion.Controls(offset=take.offset, mouth=take.mouth, upper=take.upper,
                               smoothing=take.smoothing)
    channels = keys.take_channels(target, expression, jaw, placement, controls, frame)
    keys.write_channels(target, channels, take.shape_action, take.armature_action)


@contextlib.contextmanager
def takes_switched_by_code(mesh: Any) -> Any:
    """Change ``emote_active_take`` without its update callback re-assigning actions (the
    caller assigns them itself)."""
    mesh["emote_switching"] = True
    try:
        yield
    finally:
        del mesh["emote_switching"]


def switch_take(mesh: Any) -> None:
    if mesh.get("emote_switching"):
        return
    index = mesh.emote_active_take
    if 0 <= index < len(mesh.emote_takes):
        target = rig.describe_rig(mesh, exp_pattern=bpy.context.scene.emote.exp_pattern)
        keys.activate_take(target, mesh.emote_takes[index])


def _timer() -> float | None:
    result = poll_generation()
    if result is None:
        if _pending is not None:
            _redraw()
            return 0.1
        return None
    level, message = result
    _redraw()
    print(f"EMOTE: {message}")
    if level == "INFO":
        try:
            bpy.ops.ed.undo_push(message="EMOTE take")
        except RuntimeError:
            pass
    return None


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


# -- operators ---------------------------------------------------------------------------------

class EMOTE_OT_generate(bpy.types.Operator):
    """Generate emotional lip-sync for the selected audio strip on the FLAME head"""

    bl_idname = "emote.generate"
    bl_label = "Generate Emotional Lip-Sync"
    bl_options = {"REGISTER", "UNDO"}

    wait: BoolProperty(name="Wait", description="Block until the take is applied (scripts)",
                       default=False, options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        try:
            start_generation(context)
        except (ValueError, WorkerError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self.wait:
            result = None
            while result is None:
                result = poll_generation()
                if result is None:
                    time.sleep(0.02)
            level, message = result
            self.report({level}, message)
            return {"FINISHED"} if level == "INFO" else {"CANCELLED"}
        if not bpy.app.timers.is_registered(_timer):
            bpy.app.timers.register(_timer, first_interval=0.1)
        self.report({"INFO"}, "Generating…")
        return {"FINISHED"}


class EMOTE_OT_cancel(bpy.types.Operator):
    """Cancel the running generation"""

    bl_idname = "emote.cancel"
    bl_label = "Cancel"

    def execute(self, context: Any) -> set[str]:
        if _pending is None or _client is None:
            self.report({"INFO"}, "Nothing is running.")
            return {"CANCELLED"}
        _client.cancel(_pending.job)
        return {"FINISHED"}


def _active_take(context: Any) -> tuple[Any, rig.Rig, Any]:
    settings = context.scene.emote
    mesh = settings.rig or rig.find_rig_object(context)
    if mesh is None or not len(mesh.emote_takes):
        raise ValueError("There is no take to use: generate one first.")
    index = mesh.emote_active_take
    if not 0 <= index < len(mesh.emote_takes):
        raise ValueError("Select a take in the list.")
    target = rig.describe_rig(mesh, exp_pattern=settings.exp_pattern)
    rig.check_editable(target)
    return mesh, target, mesh.emote_takes[index]


class EMOTE_OT_bake(bpy.types.Operator):
    """Commit the active take to the timeline (NLA strips, or into the current actions)"""

    bl_idname = "emote.bake"
    bl_label = "Bake to Timeline"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set[str]:
        try:
            mesh, target, take = _active_take(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if context.scene.emote.bake_mode == "NLA":
            keys.bake_to_nla(mesh, target, take)
            self.report({"INFO"}, f"'{take.name}' baked to NLA strips.")
        else:
            keys.bake_into_actions(mesh, target, take)
            self.report({"INFO"}, f"'{take.name}' written into the current actions.")
        return {"FINISHED"}


class EMOTE_OT_take_delete(bpy.types.Operator):
    """Delete the active take and its actions"""

    bl_idname = "emote.take_delete"
    bl_label = "Delete Take"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, options={"SKIP_SAVE"})

    def execute(self, context: Any) -> set[str]:
        try:
            mesh, target, _ = _active_take(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        index = self.index if self.index >= 0 else mesh.emote_active_take
        with takes_switched_by_code(mesh):
            keys.delete_take(mesh, target, index)
        return {"FINISHED"}


class EMOTE_OT_create_flame_head(bpy.types.Operator):
    """Create a FLAME head (mesh, Exp/Pose shape keys, armature) from your FLAME file, or the built-in demo head when no file is set"""  # noqa: E501

    bl_idname = "emote.create_flame_head"
    bl_label = "Create FLAME Head"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="FLAME File", subtype="FILE_PATH", default="")

    def execute(self, context: Any) -> set[str]:
        from .server.flame import load_flame_file

        path = self.filepath or preferences(context).flame_path
        if path:
            try:
                flame = load_flame_file(bpy.path.abspath(path))
            except ValueError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            name = "FLAME"
        else:  # no FLAME file: the built-in procedural demo head
            from .server.demo.head import build_demo_head

            flame, name = build_demo_head().flame, "FLAME-demo"
        mesh, armature = rig.create_flame_head(context, flame, name=name)
        for obj in context.selected_objects:
            obj.select_set(False)
        mesh.select_set(True)
        context.view_layer.objects.active = mesh
        self.report({"INFO"}, f"Created '{mesh.name}' with {flame.n_expression} expression "
                              "keys.")
        return {"FINISHED"}

class EMOTE_OT_check_worker(bpy.types.Operator):
    """Check that the worker Python has torch (and CUDA)"""

    bl_idname = "emote.check_worker"
    bl_label = "Check Worker Python"

    def execute(self, context: Any) -> set[str]:
        message = check_python(bpy.path.abspath(preferences(context).python))
        level = "INFO" if message.startswith("torch") else "ERROR"
        self.report({level}, message)
        return {"FINISHED"} if level == "INFO" else {"CANCELLED"}


CLASSES = (EMOTE_OT_generate, EMOTE_OT_cancel, EMOTE_OT_bake, EMOTE_OT_take_delete,
           EMOTE_OT_create_flame_head, EMOTE_OT_check_worker)
