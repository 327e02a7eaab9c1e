# SPDX-License-Identifier: GPL-3.0-or-later
"""The generation flow: one job from Generate to a new take, and the takes' live controls.

A job is tied to its head and its sound strip by a token written on them when it starts (names
change, and another file may hold a head of the same name), and it is dropped when another file
is opened. What a job is doing (running, progress, the last message) lives here in Python, never
in the scene, so a file saved during a job reopens with a normal panel.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Vector

from . import compat, keys, motion, rig, strips
from .preferences import ADDON_ROOT, preferences
from .server import protocol
from .worker import Job, WorkerClient, WorkerError, describe_backends

GENERATE_TIMEOUT = 600.0  # seconds without any message from the worker
JOB_TAG = "emote_job"  # ID property on the head object and the strip of the running job

# What the loaded model offers; refreshed when the worker reports a loaded model.
MODEL_INFO: dict[str, Any] = {"styles": list(protocol.MEAD_STYLES),
                              "emotions": list(protocol.EMOTIONS)}


@dataclass
class State:
    """What the panel shows about the current or last job."""

    running: bool = False
    progress: float = 0.0
    status: str = ""
    level: str = "INFO"  # of the last message: INFO, WARNING or ERROR


STATE = State()


# -- the worker --------------------------------------------------------------------------------

_client: WorkerClient | None = None


def server_root() -> Path:
    """The folder holding the ``server`` package the worker runs (inside the extension)."""
    return ADDON_ROOT


def worker_python(context: Any = None) -> str:
    """The preference, else ``EMOTE_WORKER_PYTHON``; empty means Blender's own Python."""
    python = preferences(context).python
    if python:
        return bpy.path.abspath(python)
    return os.environ.get("EMOTE_WORKER_PYTHON", "")


def client(context: Any = None) -> WorkerClient:
    """The add-on's worker client; replaced when the interpreter preference changes."""
    global _client
    prefs = preferences(context)
    idle = prefs.idle_minutes * 60 if prefs.idle_minutes else None
    python = worker_python(context)
    if _client is None or _client.python != python or _client.idle_timeout != idle:
        if _client is not None:
            _client.stop(wait=False)
        _client = WorkerClient(python=python, server_root=server_root(), idle_timeout=idle)
    return _client


def stop_worker() -> None:
    global _client
    drop_generation("")
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


def check_worker(context: Any = None, wait: bool = True) -> tuple[str, str] | None:
    """(level, message) about the worker's inference backends, from its ``ready`` message;
    None while it is still starting (``wait`` False)."""
    worker = client(context)
    try:
        if wait:
            ready = worker.wait_ready()
        else:
            worker.start()
            worker.drain()
            if worker.starting:
                return None
            ready = worker.ready or worker.last_ready
            if ready is None:
                raise WorkerError(worker.failure or "The worker did not start.")
    except WorkerError as exc:
        return "ERROR", str(exc)
    return "INFO", describe_backends(ready)


# -- condition ---------------------------------------------------------------------------------

def static_condition(settings: Any) -> dict[str, Any]:
    emotion: Any = protocol.EMOTIONS[int(settings.emotion)]
    second = int(settings.second_emotion)
    if second >= 0 and settings.mix > 0:
        mixture = {emotion: 1.0 - settings.mix}
        other = protocol.EMOTIONS[second]
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


def label_parts(settings: Any) -> tuple[str, str, int]:
    """Emotion text, intensity and style index of the take about to be made."""
    emotion = protocol.EMOTIONS[int(settings.emotion)]
    second = int(settings.second_emotion)
    if second >= 0 and settings.mix > 0:
        emotion = f"{emotion} {1 - settings.mix:.0%} + {protocol.EMOTIONS[second]}"
    if settings.animated:
        emotion = "Animated"
    return emotion, protocol.INTENSITIES[int(settings.intensity)], int(settings.style or 0)


def take_label(parts: tuple[str, str, int]) -> str:
    """"Happy · strong · M003", with the style named by the model that made the take (known
    once the worker has loaded it)."""
    emotion, intensity, style = parts
    styles = MODEL_INFO["styles"]
    name = styles[style] if 0 <= style < len(styles) else f"style {style}"
    return f"{emotion} · {intensity} · {name}"


# -- the job -----------------------------------------------------------------------------------

@dataclass
class Generation:
    """A running job and what is needed to turn its result into a take."""

    job: Job
    load_job: Job | None
    load_key: tuple
    token: str  # also written on the head object and the strip (JOB_TAG)
    head_name: str  # for messages only: the head is found by its token
    audio: strips.AudioRequest
    exp_pattern: str
    label_parts: tuple[str, str, int]
    condition: Any
    notes: list[str] = field(default_factory=list)
    strip_id: str = ""  # the strip's lasting identity (STRIP_ID), kept on the take
    line: int = 1  # its place in a dialogue batch
    lines: int = 1


_pending: Generation | None = None  # the job the worker is on
_queued: list[Generation] = []  # the rest of a dialogue batch, already sent, in order
_batch_results: list[tuple[str, str]] = []

STRIP_ID = "emote_strip_id"  # ID property: a strip's identity for its takes (names change)


def pending() -> Generation | None:
    return _pending


def queued() -> list[Generation]:
    return list(_queued)


def strip_identity(strip: Any, scene: Any = None) -> str:
    """The strip's lasting identity (made on first use). A strip duplicated in the sequencer
    carries its original's custom properties: when another strip of ``scene`` holds the same
    identity, this one gets its own."""
    value = strip.get(STRIP_ID)
    shared = scene is not None and isinstance(value, str) and any(
        other != strip and other.get(STRIP_ID) == value for other in compat.all_strips(scene))
    if not isinstance(value, str) or not value or shared:
        value = uuid.uuid4().hex
        strip[STRIP_ID] = value
    return value


def _tag(owner: Any, token: str) -> None:
    """Add ``token`` to the job tokens on ``owner`` (a head may have several lines queued)."""
    with contextlib.suppress(TypeError, AttributeError, RuntimeError):
        if not hasattr(owner.get(JOB_TAG), "keys"):
            owner[JOB_TAG] = {}
        owner[JOB_TAG][token] = 1


def _tagged(owner: Any, token: str) -> bool:
    tags = owner.get(JOB_TAG)
    return hasattr(tags, "keys") and token in tags.keys()


def _untag(owner: Any, token: str) -> None:
    with contextlib.suppress(TypeError, AttributeError, RuntimeError, KeyError):
        tags = owner.get(JOB_TAG)
        if hasattr(tags, "keys") and token in tags.keys():
            del tags[token]
            if not tags.keys():
                del owner[JOB_TAG]


def tagged_head(job: Generation) -> Any | None:
    """The job's head object wherever it is now and whatever it is called (a copy made during
    the job carries the token too: the one with the old name wins)."""
    found = [obj for obj in bpy.data.objects if _tagged(obj, job.token)]
    named = [obj for obj in found if obj.name == job.head_name]
    return (named or found or [None])[0]


def tagged_strip(job: Generation) -> tuple[Any, Any] | tuple[None, None]:
    """(scene, strip) of the job's sound strip, found by its token."""
    for scene in bpy.data.scenes:
        for strip in compat.all_strips(scene):
            if _tagged(strip, job.token):
                return scene, strip
    return None, None


def start_generation(context: Any) -> Generation:
    """Check every input, then queue the requests (the worker starts in the background); the
    scene is not touched until the result, except for the job's token on the head and strip."""
    _refuse_while_running()
    settings = context.scene.emote
    mesh = settings.rig or rig.find_rig_object(context)
    if mesh is None:
        raise rig.RigError("No head found: select a FLAME head (a mesh with Exp shape keys) "
                           "or a character set up with 'Set Up Character', or its armature, or "
                           "set Head in the panel.")
    strip = strips.find_sound_strip(context, settings.strip)
    jobs = _queue_lines(context, [(strip, mesh)])
    return jobs[0]


def start_dialogue(context: Any) -> list[Generation]:
    """Generate every selected sound strip in one batch, each on its character (see
    :func:`strip_character`): one take per strip, queued on the worker in timeline order,
    one progress bar and one Cancel for the batch."""
    _refuse_while_running()
    scene = compat.sequencer_scene(context)
    selected = sorted((s for s in compat.all_strips(scene)
                       if compat.is_sound_strip(s) and s.select),
                      key=lambda s: (compat.strip_first_frame(s), s.channel))
    if not selected:
        raise strips.StripError("No sound strips are selected: select the dialogue's strips in "
                                "the Video Sequencer.")
    fallback = context.scene.emote.rig or rig.find_rig_object(context)
    lines, unrouted = [], []
    for strip in selected:
        head = strip_character(context.scene, strip, fallback)
        if head is None:
            unrouted.append(strip.name)
        else:
            lines.append((strip, head))
    if unrouted:
        raise rig.RigError(f"No character for the strips {', '.join(unrouted)}: set each "
                           "strip's Character, a character per channel, or name the strips "
                           "after their characters.")
    return _queue_lines(context, lines)


def strip_character(scene: Any, strip: Any, fallback: Any = None) -> Any | None:
    """The head a strip is spoken by: its own Character, else the character set for its
    channel, else the head whose name starts the strip's name (the longest such, ignoring
    case: "Alice_line03" → "Alice"), else ``fallback``."""
    own = getattr(strip, "emote_character", None)
    if own is not None:
        return own
    for entry in scene.emote.channel_characters:
        if entry.channel == strip.channel and entry.character is not None:
            return entry.character
    name = strip.name.lower()
    heads = [obj for obj in scene.objects if obj.type == "MESH" and (
        rig.has_expression_keys(obj) or "emote_mapping" in obj)]
    named = [obj for obj in heads if name.startswith(obj.name.lower())]
    if named:
        return max(named, key=lambda obj: len(obj.name))
    return fallback


def _refuse_while_running() -> None:
    if _pending is not None and _pending.job.done:
        poll_generation()  # a finished job that no timer has applied yet goes first
    if _pending is not None:
        raise ValueError("A generation is already running; cancel it first.")


def _queue_lines(context: Any, lines: list[tuple[Any, Any]]) -> list[Generation]:
    """Check every line's head and audio first (nothing is sent when one fails), then send
    the load and every generate request."""
    global _pending, _queued
    scene = context.scene
    settings = scene.emote
    checked = []
    try:
        for strip, mesh in lines:
            target = rig.describe_rig(mesh, exp_pattern=settings.exp_pattern)
            rig.check_editable(target)
            audio = strips.audio_request(compat.sequencer_scene(context), strip)
            checked.append((strip, mesh, target, audio))
        request = model_request(context)
        worker = client(context)
        key = (request["model"], request["assets"], request["device"])
        load_job = None
        if worker.loaded_key != key or not worker.alive:
            load_job = worker.send(protocol.LOAD, timeout=GENERATE_TIMEOUT, **request)
        jobs = []
        for n, (strip, mesh, target, audio) in enumerate(checked, 1):
            condition: Any = animated_condition(scene, audio) if settings.animated else \
                static_condition(settings)
            job = worker.send(protocol.GENERATE, timeout=GENERATE_TIMEOUT, audio=audio.path,
                              start=audio.start, end=audio.end, condition=condition)
            jobs.append(Generation(
                job=job, load_job=load_job if n == 1 else None, load_key=key,
                token=uuid.uuid4().hex, head_name=mesh.name, audio=audio,
                exp_pattern=settings.exp_pattern, label_parts=label_parts(settings),
                condition=condition, notes=list(target.notes),
                strip_id=strip_identity(strip, compat.sequencer_scene(context)), line=n,
                lines=len(checked)))
    except BaseException:
        for _, _, _, audio in checked:
            audio.cleanup()  # a packed sound's copy never outlives a failed start
        raise
    for (strip, mesh, _, _), job in zip(checked, jobs, strict=True):
        _tag(mesh, job.token)
        _tag(strip, job.token)
    _pending, _queued = jobs[0], jobs[1:]
    _batch_results.clear()
    STATE.running, STATE.progress, STATE.status, STATE.level = True, 0.0, "Starting…", "INFO"
    return jobs


def _end(job: Generation) -> None:
    """Whatever the outcome: no temporary file, no token, no job left behind; the batch's next
    line becomes the pending job."""
    global _pending
    if job in _queued:
        _queued.remove(job)
    if _pending is job:
        _pending = _queued.pop(0) if _queued else None
    job.audio.cleanup()
    worker = _client
    if worker is not None:
        worker.forget(job.job)
        if job.load_job is not None:
            worker.forget(job.load_job)
    for obj in bpy.data.objects:  # the head, and any copy of it made during the job
        _untag(obj, job.token)
    _, strip = tagged_strip(job)
    if strip is not None:
        _untag(strip, job.token)
    if _pending is None:
        STATE.running, STATE.progress = False, 0.0


def cancel_generation() -> bool:
    """Ask the worker to stop the running job and the rest of its batch (also while it is
    still starting); each ends as cancelled at the next poll, and the lines already applied
    keep their takes. False when nothing runs."""
    jobs = ([_pending] if _pending is not None else []) + _queued
    if not jobs or _client is None:
        return False
    for job in jobs:
        for request in (job.job, job.load_job):
            if request is not None:
                _client.cancel(request)
    return True


def drop_generation(message: str) -> None:
    """Cancel the running jobs and forget them now (another file is being opened: their
    results must not be applied to whatever that file holds)."""
    if _pending is None:
        return
    cancel_generation()
    if _client is not None:
        _client.drain()
    for job in [_pending] + list(_queued):
        if job is not None:
            _end(job)
    if message:
        _finish("INFO", message)


def poll_generation() -> tuple[str, str] | None:
    """Drain worker events; when the pending job ends, apply it. Returns (level, message)
    when it ended (level: INFO, WARNING or ERROR), None while it runs."""
    job = _pending
    if job is None:
        return None
    worker = _client
    if worker is not None:
        worker.drain()
    if job.load_job is not None and job.load_job.done:
        reply = job.load_job.reply or {}
        if reply.get("type") == protocol.LOADED and worker is not None:
            worker.loaded_key = job.load_key
            MODEL_INFO.update(reply.get("info", {}))
    if not job.job.done:
        STATE.progress = (job.line - 1 + job.job.progress) / job.lines
        line = f"line {job.line}/{job.lines}: " if job.lines > 1 else ""
        if worker is not None and worker.starting:
            STATE.status = "Starting the worker…"
        else:
            STATE.status = f"{line}{job.job.stage or 'starting'} {job.job.progress:.0%}"
        return None
    reply = job.job.reply or {}
    load_reply = job.load_job.reply if job.load_job is not None else None
    try:
        if load_reply is not None and load_reply.get("type") == protocol.ERROR:
            return _finish("ERROR", load_reply["message"])
        if reply.get("type") == protocol.CANCELLED:
            return _finish("INFO", "Generation cancelled; nothing was changed.")
        if reply.get("type") != protocol.RESULT:
            return _finish("ERROR", reply.get("message", "The worker failed."))
        try:
            message = apply_result(job, reply)
        except rig.RigError as exc:
            return _finish("ERROR", str(exc))
        except Exception as exc:  # the scene is restored by apply_result; say what happened
            return _finish("ERROR", f"Could not apply the take: {exc}")
        return _finish("INFO", message)
    finally:
        _end(job)


def _finish(level: str, message: str) -> tuple[str, str]:
    job = _pending
    if job is not None and job.lines > 1:
        _batch_results.append((level, message))
        if job.line == job.lines or not _queued:
            made = sum(1 for lvl, m in _batch_results if lvl == "INFO"
                       and m.startswith("New take"))
            failed = [m for lvl, m in _batch_results if lvl == "ERROR"]
            cancelled = sum(1 for _, m in _batch_results if "cancelled" in m)
            summary = f"Dialogue: {made} of {job.lines} lines made takes."
            if cancelled:
                summary += f" {cancelled} cancelled; the finished takes are kept."
            if failed:
                summary += f" {len(failed)} failed: {failed[0]}"
            level = "ERROR" if failed else "INFO"
            STATE.status, STATE.level = summary, level
            return level, summary
    STATE.status, STATE.level = message, level
    return level, message


# -- applying a result -------------------------------------------------------------------------

def placement_now(job: Generation) -> tuple[keys.Placement, str]:
    """Where the take goes: the job's strip as it is now (the scene's frame rate or the strip
    may have changed while the worker ran), keyed at the scene's current frame rate; the note
    says what changed. A strip deleted meanwhile leaves the take where the strip was."""
    audio = job.audio
    scene, strip = tagged_strip(job)
    if strip is None:
        placement = keys.Placement(strip_start=audio.strip_start, fps=audio.fps,
                                   sound_offset=audio.sound_offset, audio_start=audio.start,
                                   frame_start=audio.frame_start, frame_end=audio.frame_end)
        return placement, (f"The strip '{audio.strip_name}' was removed while generating; the "
                           "take is placed where it was.")
    fps = scene.render.fps / scene.render.fps_base
    placement = keys.Placement(strip_start=float(compat.strip_content_start(strip)), fps=fps,
                               sound_offset=float(getattr(strip, "sound_offset", 0.0)),
                               audio_start=audio.start,
                               frame_start=int(compat.strip_first_frame(strip)),
                               frame_end=int(compat.strip_end_frame(strip)))
    note = ""
    if abs(fps - audio.fps) > 1e-6:
        note = (f"The frame rate changed while generating ({audio.fps:g} → {fps:g} fps): the "
                f"take is keyed at {fps:g} fps over the strip's frames "
                f"{placement.frame_start}–{placement.frame_end - 1}.")
    elif (placement.frame_start, placement.frame_end) != (audio.frame_start, audio.frame_end):
        note = (f"The strip moved while generating: the take follows it (frames "
                f"{placement.frame_start}–{placement.frame_end - 1}).")
    return placement, note


def apply_result(job: Generation, reply: dict[str, Any]) -> str:
    """The result becomes a new take on the job's head: two new actions, keys, made active."""
    mesh = tagged_head(job)
    if mesh is None:
        raise rig.RigError(f"The head '{job.head_name}' was deleted while generating.")
    target = rig.describe_rig(mesh, exp_pattern=job.exp_pattern)
    linked_mesh = rig.make_shape_keys_editable(target)
    if linked_mesh is not None:
        target = rig.describe_rig(mesh, exp_pattern=job.exp_pattern)
    expression = np.asarray(reply["expression"], np.float64)
    jaw = np.asarray(reply["jaw"], np.float64)
    placement, placement_note = placement_now(job)
    frame_info = flame_frame_for(target)
    previous = (compat.active_action(target.shape_keys),
                compat.active_action(target.armature) if target.armature else None,
                mesh.emote_active_take)
    created: list[Any] = []
    try:
        keys.remember_original_actions(mesh, target)
        label = take_label(job.label_parts)
        shape_action, armature_action = keys.new_take_actions(target, label)
        created = [a for a in (shape_action, armature_action) if a is not None]
        keys.store_raw(shape_action, expression, jaw, placement)
        shape_action["emote_cached"] = int(bool(reply.get("cached")))
        shape_action["emote_flame_frame"] = np.asarray(frame_info[0]).ravel().tolist() + [
            frame_info[1]]
        if isinstance(reply.get("living"), dict):
            shape_action["emote_living"] = json.dumps(reply["living"])
        living = motion.LivingControls()  # a new take's controls are the defaults
        layers, geometry, living_notes = take_living(target, living, shape_action,
                                                     len(expression))
        channels = keys.take_channels(target, expression, jaw, placement, motion.Controls(),
                                      frame_info[:2], layers, geometry, living.lip_closure)
        notes = keys.write_channels(target, channels, shape_action, armature_action)
        notes += living_notes
        if channels.report is not None:
            from .character import quality_text

            shape_action["emote_report"] = json.dumps(channels.report)
            notes.append(f"The character reproduces {quality_text(channels.report)} of the "
                         "motion.")
            notes += channels.notes or []
        take = mesh.emote_takes.add()
        take.name = f"{label} #{len(mesh.emote_takes)}"
        take.label = label
        take.shape_action = shape_action
        take.armature_action = armature_action
        _, strip = tagged_strip(job)
        take.strip_name = strip.name if strip is not None else job.audio.strip_name
        take.strip_id = job.strip_id
        per_frame = any(isinstance(v, list) for v in job.condition.values())
        take.condition = json.dumps("per-frame" if per_frame else job.condition)
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
    all_notes = (job.notes + ([placement_note] if placement_note else []) + notes
                 + ([frame_info[2]] if frame_info[2] else []) + list(reply.get("warnings", [])))
    message = f"New take '{take.name}': {len(channels.frames)} frames."
    return " ".join([message] + all_notes)


def flame_frame_for(target: rig.Rig) -> tuple[np.ndarray, float, str]:
    if target.mapping is not None:  # a character's bones go through its mapping's fit
        return np.eye(3), 1.0, ""
    flame = None
    if target.armature is not None and "emote_flame_to_armature" not in target.armature:
        try:
            flame = flame_file(bpy.context)
        except ValueError:
            flame = None
    return rig.flame_frame(target, flame)


# -- takes -------------------------------------------------------------------------------------

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
    living = living_controls(take, target, frame) if take.living else None
    layers, geometry, _ = take_living(target, living, take.shape_action, len(expression))
    channels = keys.take_channels(target, expression, jaw, placement, controls, frame, layers,
                                  geometry, take.lip_closure)
    keys.write_channels(target, channels, take.shape_action, take.armature_action)
    if channels.report is not None:
        take.shape_action["emote_report"] = json.dumps(channels.report)


# -- the living layers ---------------------------------------------------------------------------

_flame_geometries: dict[tuple, keys.HeadGeometry] = {}  # by FLAME file and version
FLAME_GEOMETRIES = 4


def flame_geometry(path: str) -> keys.HeadGeometry:
    """What the living layers (and a mapped character's take) need of the FLAME file at
    ``path`` (absolute; "" for the built-in demo head), computed once per version of the file.
    ``OSError`` when it cannot be read, ``ValueError`` when it is not a FLAME file."""
    key = (path, os.stat(path).st_mtime_ns) if path else ("demo",)
    if key not in _flame_geometries:
        if path:
            from .server.flame import load_flame_file

            flame = load_flame_file(path)
        else:
            from .server.demo.head import build_demo_head

            flame = build_demo_head().flame
        while len(_flame_geometries) >= FLAME_GEOMETRIES:
            _flame_geometries.pop(next(iter(_flame_geometries)))
        _flame_geometries[key] = _flame_geometry(flame)
    return _flame_geometries[key]


def _model_flame_path(context: Any) -> str:
    """The model's FLAME head: "" for the built-in demo model (the demo head), else the FLAME
    file of the preferences; ``RigError`` when that is not set."""
    prefs = preferences(context)
    if prefs.model_kind == "DEMO":
        return ""
    if not prefs.flame_path:
        raise rig.RigError("Set the FLAME file in the add-on preferences: a character is "
                           "fitted to, and its takes come from, the model's FLAME head.")
    return bpy.path.abspath(prefs.flame_path)


def source_geometry(target: rig.Rig) -> keys.HeadGeometry:
    """A mapped character's source FLAME head, with what the living layers need of it: the
    built-in demo head for the demo model, else the FLAME file of the preferences (the one the
    character was set up with). ``RigError`` when neither fits the mapping."""
    path = _model_flame_path(bpy.context)
    try:
        geometry = flame_geometry(path)
    except OSError:
        raise rig.RigError(f"The FLAME file '{path}' cannot be read.") from None
    except ValueError as exc:
        raise rig.RigError(str(exc)) from None
    if geometry.flame.n_vertices != target.mapping.flame_vertex_count:
        raise rig.RigError(
            f"'{target.mesh.name}' was set up with a FLAME head of "
            f"{target.mapping.flame_vertex_count} vertices, but the model's head has "
            f"{geometry.flame.n_vertices}: set the character up again.")
    return geometry


def flame_for_setup(context: Any) -> Any:
    """The FLAME head a character is fitted to: the model's (see :func:`source_geometry`)."""
    path = _model_flame_path(context)
    try:
        return flame_geometry(path).flame
    except OSError:
        raise rig.RigError(f"The FLAME file '{path}' cannot be read.") from None


def _flame_geometry(flame: Any) -> keys.HeadGeometry:
    """What the living layers (and a mapped character's take) need of a FLAME head."""
    from .motion import lower_face_shares
    from .server.living.closure import lip_closure
    from .server.living.eyelids import eyelid_direction

    geometry = keys.HeadGeometry(flame=flame)
    try:
        lids = eyelid_direction(flame)
        geometry.eyelid_direction = np.asarray(lids.expression)
        geometry.eyelid_correction = lids.correction
    except ValueError:
        pass
    try:
        geometry.lip_closure = lip_closure(flame)
    except ValueError:
        pass
    joints = flame.rest_joints()
    heights = flame.v_template[:, 1]
    geometry.lower_face_share = lower_face_shares(
        np.moveaxis(flame.shapedirs[:, :, 300:], 2, 0), heights,
        0.5 * (joints[2, 1] + joints[3, 1]))
    return geometry


def head_geometry(target: rig.Rig) -> tuple[keys.HeadGeometry, list[str]]:
    """The head's eyelid direction (and lip-closure operator): stored on heads made here, else
    from the FLAME file in the preferences when it matches the mesh; notes say what is
    missing."""
    mesh = target.mesh
    direction = mesh.get("emote_eyelid_direction")
    lips = mesh.get("emote_lip_closure")
    correction = mesh.get("emote_eyelid_correction")
    geometry = keys.HeadGeometry(
        eyelid_direction=np.asarray(direction, np.float64) if direction else None,
        lip_closure=_lip_closure_from(lips) if lips else None)
    if direction and correction and len(correction) == len(direction) ** 2:
        geometry.eyelid_correction = np.asarray(correction, np.float64).reshape(
            len(direction), len(direction))
    notes: list[str] = []
    if direction is not None:  # a head made here: what its FLAME file gave is all there is
        if not direction:
            notes.append("This head's FLAME file has no eyelids that close: no blinks.")
        return geometry, notes
    if geometry.eyelid_direction is None or geometry.lip_closure is None:
        from_file, problem = _geometry_from_flame_file(target)
        if from_file is not None:
            if geometry.eyelid_direction is None:
                geometry.eyelid_direction = from_file.eyelid_direction
                geometry.eyelid_correction = from_file.eyelid_correction
            geometry.lip_closure = geometry.lip_closure or from_file.lip_closure
        elif problem:
            notes.append(problem)
    return geometry, notes


def _lip_closure_from(values: Any) -> Any | None:
    from .server.living.closure import LipClosure

    try:
        return LipClosure.from_list(list(values))
    except ValueError:
        return None


def _geometry_from_flame_file(target: rig.Rig) -> tuple[keys.HeadGeometry | None, str]:
    path = preferences(bpy.context).flame_path
    if not path:
        return None, ("No blinks or lip closure on this head: it was not made by 'Create FLAME "
                      "Head', so set the FLAME file in the add-on preferences.")
    path = bpy.path.abspath(path)
    try:
        geometry = flame_geometry(path)
    except OSError:
        return None, f"The FLAME file '{path}' cannot be read, so this head has no blinks."
    except ValueError as exc:
        return None, str(exc)
    flame = geometry.flame
    if flame.n_vertices != len(target.mesh.data.vertices):  # each head, cached or not
        return None, (f"The FLAME file has {flame.n_vertices} vertices and "
                      f"'{target.mesh.name}' has {len(target.mesh.data.vertices)}: no "
                      "blinks or lip closure on this head.")
    return geometry, ""


def living_controls(take: Any, target: rig.Rig, frame: tuple[np.ndarray, float]
                    ) -> motion.LivingControls:
    """The take's living-layer controls, with its look-at object as a direction in FLAME's
    frame (from the eyes, at the object's current position)."""
    direction = None
    look_at = take.look_at
    if look_at is not None and target.mapping is not None:
        direction = _character_look_direction(target, np.array(look_at.matrix_world.translation))
    elif look_at is not None and target.armature is not None:
        c, scale = frame
        to_armature = np.array(target.armature.matrix_world.inverted())
        point = to_armature[:3, :3] @ np.array(look_at.matrix_world.translation) + \
            to_armature[:3, 3]
        eyes = [target.bone(j) for j in ("left_eye", "right_eye") if target.bone(j)]
        if eyes:
            bones = target.armature.data.bones
            centre = np.mean([np.array(bones[name].head_local) for name in eyes], axis=0)
            direction = (c.T @ (point - centre)) / max(scale, 1e-12)
            if np.linalg.norm(direction) < 1e-9:
                direction = None
    return motion.LivingControls(blinks=take.blinks, blink_rate=take.blink_rate,
                                 eyes=take.eye_motion, head=take.head_motion,
                                 lip_closure=take.lip_closure, seed=take.variation,
                                 target=direction)


def _character_look_direction(target: rig.Rig, world_point: np.ndarray) -> np.ndarray | None:
    """A look-at point as a FLAME-frame direction from a mapped character's eyes (its eye
    bones' heads, else its eye landmarks), through the mapping's fit."""
    from .character import bone_rest_in_mesh

    mesh = target.mesh
    point = np.array(mesh.matrix_world.inverted() @ Vector(world_point.tolist()))
    eyes = [bone_rest_in_mesh(mesh, target.armature, target.bone(j))[0]
            for j in ("left_eye", "right_eye") if target.bone(j)]
    if not eyes:
        marks = target.mapping.landmarks
        eyes = [np.asarray(v) for name, v in marks.items() if "eye" in name]
    if not eyes:
        return None
    direction = target.mapping.rotation.T @ (point - np.mean(eyes, axis=0))
    return direction if np.linalg.norm(direction) > 1e-9 else None


def take_living(target: rig.Rig, controls: motion.LivingControls | None, shape_action: Any,
                frames: int
                ) -> tuple[motion.LivingLayers | None, keys.HeadGeometry | None, list[str]]:
    """The take's living layers with ``controls`` (None for a take without living-face data,
    or with the layers turned off: ``controls`` None), the head's geometry for them, and
    notes."""
    if target.mapping is not None:
        geometry = source_geometry(target)
        stored = shape_action.get("emote_living")
        if not stored or controls is None:
            return None, geometry, []
        try:
            layers = motion.living_layers(json.loads(stored), controls, frames)
        except (ValueError, TypeError) as exc:
            return None, geometry, [f"The take's living-face layers were left out: {exc}"]
        return layers, geometry, []
    stored = shape_action.get("emote_living")
    if not stored or controls is None:
        return None, None, []
    try:
        data = json.loads(stored)
        layers = motion.living_layers(data, controls, frames)
    except (ValueError, TypeError) as exc:
        return None, None, [f"The take's living-face layers were left out: {exc}"]
    geometry, notes = head_geometry(target)
    missing = [j for j in ("neck", "left_eye", "right_eye") if not target.bone(j)]
    if missing and target.armature is not None:
        notes.append(f"The armature has no {', '.join(missing)} bone: "
                     "that part of the living face is not keyed.")
    return layers, geometry, notes


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


def active_take(context: Any) -> tuple[Any, rig.Rig, Any]:
    """(head, rig, take) of the selected take, for baking and deleting."""
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


def dialogue_takes(context: Any) -> list[tuple[Any, rig.Rig, Any]]:
    """(head, rig, take) for every selected sound strip that has a take on its character:
    the head's active take when it was made for that strip, else the strip's newest take."""
    scene = compat.sequencer_scene(context)
    selected = [s for s in compat.all_strips(scene) if compat.is_sound_strip(s) and s.select]
    if not selected:
        raise ValueError("No sound strips are selected.")
    fallback = context.scene.emote.rig or rig.find_rig_object(context)
    lines, missing = [], []
    for strip in selected:
        head = strip_character(context.scene, strip, fallback)
        identity = strip.get(STRIP_ID)
        made = [t for t in head.emote_takes if identity and t.strip_id == identity] \
            if head is not None else []
        if not made:
            missing.append(strip.name)
            continue
        active = head.emote_takes[head.emote_active_take] \
            if 0 <= head.emote_active_take < len(head.emote_takes) else None
        take = active if active is not None and active in made else made[-1]
        target = rig.describe_rig(head, exp_pattern=context.scene.emote.exp_pattern)
        rig.check_editable(target)
        lines.append((head, target, take))
    if missing:
        raise ValueError(f"The strips {', '.join(missing)} have no take yet: generate the "
                         "dialogue first.")
    return lines


# -- the UI's clock ----------------------------------------------------------------------------

def wait_for_generation(poll: float = 0.02) -> tuple[str, str]:
    """Block until the running job, or every line of the batch, is applied (scripts:
    ``generate(wait=True)``); returns the last line's (level, message), for a batch its
    summary."""
    last = None
    while True:
        result = poll_generation()
        if result is not None:
            last = result
        if _pending is None:
            return last or ("INFO", STATE.status or "Nothing is running.")
        if result is None:
            time.sleep(poll)


def watch() -> None:
    """Poll the running job from a timer (the UI never waits for the worker)."""
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=0.1, persistent=True)


def _timer() -> float | None:
    result = poll_generation()
    if result is None:
        _redraw()
        return 0.1 if _pending is not None else None
    level, message = result
    _redraw()
    print(f"EMOTE: {message}")
    if level == "INFO" and (message.startswith("New take") or message.startswith("Dialogue")):
        with contextlib.suppress(RuntimeError):
            bpy.ops.ed.undo_push(message="EMOTE take")
    return 0.1 if _pending is not None else None


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR"):
                area.tag_redraw()


@bpy.app.handlers.persistent
def _on_load_pre(*args: Any) -> None:
    if _pending is not None:
        drop_generation("The generation was cancelled: another file was opened.")
        print(f"EMOTE: {STATE.status}")
    else:
        STATE.status, STATE.level = "", "INFO"


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(stop_worker)  # no orphan worker when Blender quits


def unregister() -> None:
    stop_worker()
    atexit.unregister(stop_worker)
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    while _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
