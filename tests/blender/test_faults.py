# SPDX-License-Identifier: GPL-3.0-or-later
"""Packaging, bad input, crashes and cancellation: clear messages and an unchanged scene."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import bpy
import pytest

from tests.blender.conftest import ROOT
from tests.blender.scenes import link_head_from_library
from tests.blender.test_generate import make_scene


def scene_state(mesh=None):
    return ({a.name for a in bpy.data.actions}, len(mesh.emote_takes) if mesh else None,
            mesh.data.shape_keys.animation_data.action if mesh and
            mesh.data.shape_keys.animation_data else None)


def assert_refused_unchanged(mesh, match):
    """Generate fails with a message matching ``match`` and the scene is as it was."""
    before = scene_state(mesh)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.emote.generate(wait=True)
    assert scene_state(mesh) == before


def test_zip_validates_and_installs(addon):
    scripts = bpy.utils.system_resource("SCRIPTS")
    tool = os.path.join(scripts, "addons_core", "bl_pkg", "cli", "blender_ext.py")
    result = subprocess.run([sys.executable, tool, "validate", str(addon.archive)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert addon.archive.name.startswith("emote_lipsync-0.1.0") and addon.archive.suffix == ".zip"
    assert hasattr(bpy.ops.emote, "generate") and hasattr(bpy.ops.emote, "bake")
    assert hasattr(bpy.context.scene, "emote")
    assert (addon.generation.server_root() / "server" / "protocol.py").is_file()


class RecordingLayout:
    """Stands in for UILayout (panels are never drawn headless): records what is shown."""

    def __init__(self, log=None):
        self.log = [] if log is None else log
        self.enabled = True

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.log.append((name, args, kwargs))
            return RecordingLayout(self.log)
        return record


def test_panel_shows_the_workflow(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    layout = RecordingLayout()
    addon.panels.draw_emote(layout, bpy.context)
    operators = [args[0] for name, args, _ in layout.log if name == "operator"]
    assert "emote.generate" in operators and "emote.bake" not in operators
    labels = [kwargs.get("text") for name, _, kwargs in layout.log if name == "label"]
    assert f"Head: {mesh.name}" in labels and "Audio: dialogue" in labels
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}
    layout = RecordingLayout()
    addon.panels.draw_emote(layout, bpy.context)
    operators = [args[0] for name, args, _ in layout.log if name == "operator"]
    assert "emote.bake" in operators and "emote.take_delete" in operators
    props = [args[1] for name, args, _ in layout.log if name == "prop"]
    for name in ("emotion", "intensity", "style", "second_emotion", "mix", "animated",
                 "offset", "mouth", "upper", "smoothing"):
        assert name in props


def test_no_strip_selected(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    strip.select = False
    editor = scene.sequence_editor
    editor.active_strip = None
    assert_refused_unchanged(mesh, "No sound strip is selected")


def test_strip_with_missing_file(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    strip.sound.filepath = str(tmp_path / "moved_away.wav")
    assert_refused_unchanged(mesh, "sound file of strip 'dialogue' is missing")


def test_rig_without_expression_keys(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.view_layer.objects.active
    scene.emote.rig = cube
    with pytest.raises(RuntimeError, match="has no FLAME expression shape keys"):
        bpy.ops.emote.generate(wait=True)
    scene.emote.rig = None
    for obj in list(bpy.context.selected_objects):
        obj.select_set(False)
    bpy.context.view_layer.objects.active = cube
    with pytest.raises(RuntimeError, match="No head found"):
        bpy.ops.emote.generate(wait=True)
    assert len(mesh.emote_takes) == 0


def test_rig_without_jaw_bone_still_gets_expression(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    armature = mesh.parent
    mesh.parent = None
    mesh.modifiers.remove(mesh.modifiers["Armature"])
    bpy.data.objects.remove(armature)
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}
    take = mesh.emote_takes[0]
    assert take.shape_action is not None and take.armature_action is None
    assert "No jaw bone found" in addon.generation.STATE.status


def test_worker_python_without_torch(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    good = prefs.python
    # A Python without torch (this Blender's), started the way a worker is.
    python = tmp_path / "python-without-torch"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import torch"\n')
    python.chmod(0o755)
    prefs.python = str(python)
    try:
        assert_refused_unchanged(mesh, "has no torch installed")
        with pytest.raises(RuntimeError, match="has no torch installed"):
            bpy.ops.emote.check_worker()
    finally:
        prefs.python = good
    assert bpy.ops.emote.check_worker() == {"FINISHED"}
    assert addon.generation.client().ready is not None  # the check left the worker warm
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}


def _start_long_job(addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, wav="long.wav")
    generation = addon.generation
    pending = generation.start_generation(bpy.context)
    deadline = time.monotonic() + 120
    while pending.job.progress == 0 and time.monotonic() < deadline:
        assert generation.poll_generation() is None
        time.sleep(0.01)
    return scene, mesh, pending


def test_cancel_stops_within_a_second_and_changes_nothing(clean, addon, fixtures, tmp_path):
    scene, mesh, pending = _start_long_job(addon, fixtures, tmp_path)
    before = scene_state(mesh)
    sent = time.monotonic()
    assert bpy.ops.emote.cancel() == {"FINISHED"}
    result = None
    while result is None:
        result = addon.generation.poll_generation()
        time.sleep(0.005)
    assert time.monotonic() - sent < 1.0
    assert result == ("INFO", "Generation cancelled; nothing was changed.")
    assert scene_state(mesh) == before and not addon.generation.STATE.running


def test_killed_worker_is_reported_and_restarted(clean, addon, fixtures, tmp_path):
    scene, mesh, pending = _start_long_job(addon, fixtures, tmp_path)
    before = scene_state(mesh)
    os.kill(addon.generation.client().process.pid, signal.SIGKILL)
    result = None
    deadline = time.monotonic() + 30
    while result is None and time.monotonic() < deadline:
        result = addon.generation.poll_generation()
        time.sleep(0.01)
    level, message = result
    assert level == "ERROR" and "worker stopped unexpectedly" in message
    assert scene_state(mesh) == before
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}  # a fresh worker
    assert len(mesh.emote_takes) == 1


def test_bake_into_current_action(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}
    scene.emote.bake_mode = "ACTION"
    assert bpy.ops.emote.bake() == {"FINISHED"}
    key = mesh.data.shape_keys
    target = key.animation_data.action
    assert target is not None and target != mesh.emote_takes[0].shape_action
    compat = addon.compat
    curve = compat.fcurves(target, key).find('key_blocks["Exp1"].value', index=0)
    assert len(curve.keyframe_points) == (compat.strip_end_frame(strip)
                                          - compat.strip_first_frame(strip))


def test_disabling_the_addon_stops_the_worker(clean, addon, fixtures, tmp_path):
    import addon_utils

    client = addon.generation.client()
    client.start()
    process = client.process
    assert process.poll() is None
    addon_utils.disable(addon.__name__, default_set=True)
    try:
        assert process.wait(timeout=10) is not None
    finally:
        addon_utils.enable(addon.__name__, default_set=True)
        module = sys.modules[addon.__name__]
        prefs = bpy.context.preferences.addons[addon.__name__].preferences
        prefs.python = str(ROOT / ".venv" / "bin" / "python")
        prefs.model_kind, prefs.model_path = "BUNDLE", str(fixtures / "bundle")
        prefs.flame_path, prefs.device, prefs.idle_minutes = str(fixtures / "flame.pkl"), \
            "cpu", 0
        module.archive = addon.archive


def test_linked_rig_without_override_is_explained(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    linked = link_head_from_library(scene, mesh, tmp_path / "head_library.blend")
    head = [o for o in linked.objects if o.type == "MESH"][0]
    assert head.library is not None
    scene.emote.rig = head
    before = {a.name for a in bpy.data.actions}
    with pytest.raises(RuntimeError, match="is linked from .* Library Override"):
        bpy.ops.emote.generate(wait=True)
    assert {a.name for a in bpy.data.actions} == before
