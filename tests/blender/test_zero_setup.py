# SPDX-License-Identifier: GPL-3.0-or-later
"""Install the zip and click Generate: nothing else set up.

The extension is installed from its zip as *Install from Disk* does (its wheels unpacked by
Blender), *Worker Python* is empty and ``EMOTE_WORKER_PYTHON`` unset, so the worker is this
Blender's own Python; a ``torch`` package that records any import of it and then fails sits on
the worker's path. Create FLAME Head makes the demo head, and Generate writes a take with the
built-in demo model and with a model laid out as the official EMOTE v2 download.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from tests.blender.scenes import add_strip

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_extension  # noqa: E402

ONNX_RUNTIME = dict(build_extension.requirements())["onnxruntime"]  # this platform's pin

FAKE_TORCH = """
import os
open(os.environ["EMOTE_TEST_TORCH_MARKER"], "a").write("torch was imported\\n")
raise ImportError("torch must not be imported by the worker")
"""


@pytest.fixture
def blender_python_worker(addon, tmp_path, monkeypatch):
    """Preferences as a fresh install has them, plus the torch trap on the worker's path."""
    site = tmp_path / "trap" / "site-packages"  # the worker's path takes site-packages folders
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH)
    marker = tmp_path / "torch-imported"
    monkeypatch.setenv("EMOTE_TEST_TORCH_MARKER", str(marker))
    monkeypatch.delenv("EMOTE_WORKER_PYTHON", raising=False)
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = {k: getattr(prefs, k) for k in ("python", "model_kind", "model_path", "flame_path")}
    addon.generation.stop_worker()
    prefs.python, prefs.model_kind, prefs.model_path, prefs.flame_path = "", "DEMO", "", ""
    yield prefs, marker
    addon.generation.stop_worker()
    for key, value in saved.items():
        setattr(prefs, key, value)


def _shape_key_motion(compat, mesh) -> float:
    """The largest change over time of any keyed expression value of the head's active take."""
    action = mesh.emote_takes[mesh.emote_active_take].shape_action
    spread = 0.0
    for curve in compat.fcurves(action, mesh.data.shape_keys):
        if curve.data_path.startswith('key_blocks["Exp'):
            co = np.zeros(len(curve.keyframe_points) * 2, np.float32)
            curve.keyframe_points.foreach_get("co", co)
            spread = max(spread, float(np.ptp(co[1::2])))
    return spread


def test_install_the_zip_and_generate_with_blenders_own_python(
        clean, addon, fixtures, tmp_path, blender_python_worker):
    prefs, marker = blender_python_worker
    add_strip(bpy.context.scene, fixtures / "speech.wav", start=20, trim=0, tmp=tmp_path)
    assert bpy.ops.emote.create_flame_head() == {"FINISHED"}  # no FLAME file: the demo head
    mesh = bpy.context.view_layer.objects.active
    assert mesh.name.startswith("FLAME-demo") and len(mesh.data.shape_keys.key_blocks) > 100

    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}, "demo model"
    assert len(mesh.emote_takes) == 1 and _shape_key_motion(addon.compat, mesh) > 0.05

    worker = addon.generation.client()
    assert worker.python == "" and Path(worker.process.args[0]) == Path(sys.executable)
    # ONNX Runtime came from the extension's wheels; the only torch in sight is the trap.
    assert worker.ready["backends"] == {"onnx": ONNX_RUNTIME, "torch": "unknown version"}

    prefs.model_kind = "OFFICIAL"
    prefs.model_path = str(fixtures / "release" / "TalkingHead" / "models" / "EMOTE_v2")
    assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}, "official layout"
    assert len(mesh.emote_takes) == 2 and _shape_key_motion(addon.compat, mesh) > 0.01
    assert not marker.exists(), marker.read_text() if marker.exists() else ""
