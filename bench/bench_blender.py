# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on benchmark in real Blender (PyPI bpy), the extension installed from its zip as a user
installs it, the worker being Blender's own Python (ONNX Runtime from the extension's wheels);
medians of repeated runs:

* writing a 60 s take at 30 fps (100 expression keys, jaw rotation + pivot, 9 correctives);
* Set Up Character on the procedural ARKit test head, and a 60 s take at 30 fps on it;
* the worker's cold start (process start → model loaded) with the built-in demo model and with
  the full-size EMOTE v2 architecture (wav2vec2-base, random weights);
* click → keys for a 10 s clip with a warm worker and the full-size model: first generation,
  and re-generation with another emotion (cached audio features).

    .venv-bpy50/bin/python bench/bench_blender.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
USER = Path(tempfile.mkdtemp(prefix="emote-bench-"))
os.environ["BLENDER_USER_RESOURCES"] = str(USER)

import bpy  # noqa: E402, I001  (after BLENDER_USER_RESOURCES is set)
import addon_utils  # noqa: E402  (importable once bpy is)
import numpy as np  # noqa: E402

from tests.blender.scenes import add_strip  # noqa: E402

WORKER = ROOT / ".venv" / "bin" / "python"
MODULE = "bl_ext.emote_bench.emote_lipsync"

FULL_BUNDLE = """
import sys, torch
from server.checkpoints import save_bundle
from server.models.emote import EmoteConfig, EmoteModel
torch.manual_seed(0)
save_bundle(sys.argv[1], EmoteModel(EmoteConfig()).eval(), flint_source="random")
"""


def setup(out: Path):
    subprocess.run([str(WORKER), "-m", "tests.make_fixtures", str(out)], cwd=ROOT, check=True)
    subprocess.run([str(WORKER), "-c", FULL_BUNDLE, str(out / "full")], cwd=ROOT, check=True)
    subprocess.run([str(WORKER), "-c", "import sys; from tests.builders import write_wav; "
                    "from pathlib import Path; write_wav(Path(sys.argv[1]), 10.0, seed=9)",
                    str(out / "ten.wav")], cwd=ROOT, check=True)
    sys.path.insert(0, str(ROOT / "tools"))
    from extension_install import install_extension

    install_extension(USER, "emote_bench")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python, prefs.model_kind = "", "BUNDLE"  # the worker: Blender's own Python
    prefs.model_path, prefs.device, prefs.idle_minutes = str(out / "full"), "cpu", 0
    return sys.modules[MODULE]


def cold_start(generation, model: str | None) -> float:
    """Seconds from no worker to ``model`` loaded (the worker process starts on the request)."""
    generation.stop_worker()
    client = generation.client()
    start = time.perf_counter()
    client.wait(client.send("load", model=model, assets=None, device="cpu"))
    return time.perf_counter() - start


def bake_60s(addon, runs: int) -> float:
    keys, motion, rig = addon.keys, addon.motion, addon.rig
    mesh = bpy.context.view_layer.objects.active
    target = rig.describe_rig(mesh)
    rng = np.random.default_rng(0)
    expression = rng.normal(0, 1, (1500, 100))
    jaw = rng.normal(0, 0.1, (1500, 3))
    placement = keys.Placement(strip_start=1, fps=30.0, sound_offset=0.0, audio_start=0.0,
                               frame_start=1, frame_end=1801)
    frame = (np.eye(3), 1.0)
    times = []
    for _ in range(runs):
        shape, armature = keys.new_take_actions(target, "bench")
        start = time.perf_counter()
        channels = keys.take_channels(target, expression, jaw, placement, motion.Controls(),
                                      frame)
        keys.write_channels(target, channels, shape, armature)
        times.append(time.perf_counter() - start)
        bpy.data.actions.remove(shape)
        bpy.data.actions.remove(armature)
    return statistics.median(times)


def character(addon, runs: int) -> tuple[float, float]:
    """(Set Up Character, write a 60 s take at 30 fps) on the procedural ARKit test head
    (7,159 vertices, 52 keys, a jaw bone): reading the mesh, the FLAME fit and the mapping's
    JSON; then the retarget solve and the keys. Medians."""
    import importlib

    from server.demo.head import build_demo_head
    from tests.blender.test_character import build_character
    from tests.characters import arkit_character

    mesh = build_character(arkit_character())
    flame = build_demo_head().flame
    setups = []
    for _ in range(runs):
        start = time.perf_counter()
        importlib.import_module(MODULE + ".character").set_up(mesh, flame)
        setups.append(time.perf_counter() - start)
    keys, motion, rig = addon.keys, addon.motion, addon.rig
    target = rig.describe_rig(mesh)
    geometry = addon.generation._flame_geometry(flame)
    rng = np.random.default_rng(0)
    expression = np.zeros((1500, 100))
    expression[:, :18] = rng.normal(0, 0.5, (1500, 18))
    jaw = np.abs(rng.normal(0, 0.1, (1500, 3))) * [1, 0, 0]
    placement = keys.Placement(strip_start=1, fps=30.0, sound_offset=0.0, audio_start=0.0,
                               frame_start=1, frame_end=1801)
    writes = []
    for _ in range(runs):
        shape, armature = keys.new_take_actions(target, "bench")
        start = time.perf_counter()
        channels = keys.take_channels(target, expression, jaw, placement, motion.Controls(),
                                      (np.eye(3), 1.0), None, geometry)
        keys.write_channels(target, channels, shape, armature)
        writes.append(time.perf_counter() - start)
        bpy.data.actions.remove(shape)
        bpy.data.actions.remove(armature)
    return statistics.median(setups), statistics.median(writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="emote-bench-fixtures-"))
    addon = setup(out)
    try:
        add_strip(bpy.context.scene, out / "ten.wav", fps=30, start=1, trim=0, tmp=out)
        bpy.ops.emote.create_flame_head(filepath=str(out / "flame.pkl"))
        bake = bake_60s(addon, args.runs)

        generation = addon.generation
        demo_cold, cold, first, again = [], [], [], []
        emotions = ["1", "2", "6", "3", "4", "5", "7", "0"]
        for i in range(args.runs):
            demo_cold.append(cold_start(generation, None))
            cold.append(cold_start(generation, str(out / "full")))
            generation.client().loaded_key = (str(out / "full"), None, "cpu")
            bpy.context.scene.emote.emotion = emotions[i % 8]
            start = time.perf_counter()
            assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}
            first.append(time.perf_counter() - start)
            bpy.context.scene.emote.emotion = emotions[(i + 1) % 8]
            start = time.perf_counter()
            assert bpy.ops.emote.generate(wait=True) == {"FINISHED"}
            again.append(time.perf_counter() - start)
        backends = generation.client().ready["backends"]
        setup_s, character_s = character(addon, args.runs)  # last: it changes the selection
        print(f"Blender {bpy.app.version_string}, worker: Blender's own Python "
              f"(ONNX Runtime {backends['onnx']}, torch {backends['torch']}), CPU, "
              f"medians of {args.runs} runs")
        print(f"  write a 60 s take at 30 fps (100 Exp + jaw + 9 correctives): "
              f"{bake * 1000:.1f} ms")
        print(f"  Set Up Character, ARKit test head (7,159 vertices, 52 keys, jaw bone): "
              f"{setup_s:.2f} s")
        print(f"  a 60 s take at 30 fps on it (retarget + 52 keys + jaw): "
              f"{character_s * 1000:.0f} ms")
        print(f"  worker cold start to the demo model loaded: "
              f"{statistics.median(demo_cold):.2f} s")
        print(f"  worker cold start to model loaded (wav2vec2-base size): "
              f"{statistics.median(cold):.2f} s")
        print(f"  click → keys, 10 s clip, warm worker, first generation: "
              f"{statistics.median(first):.2f} s")
        print(f"  click → keys, 10 s clip, another emotion (cached audio): "
              f"{statistics.median(again) * 1000:.0f} ms")
    finally:
        addon.generation.stop_worker()
        addon_utils.disable(MODULE, default_set=True)


if __name__ == "__main__":
    main()
