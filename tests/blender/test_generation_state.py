# SPDX-License-Identifier: GPL-3.0-or-later
"""A job's life in real Blender: tied to its head, strip and file; never saved; a worker start
that never blocks Blender and leaves nothing behind; the rig's keys read without surprises."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import bpy
import numpy as np
import pytest

from tests.blender.conftest import WORKER_PYTHON
from tests.blender.scenes import has_audio
from tests.blender.test_faults import RecordingLayout, scene_state
from tests.blender.test_generate import fcurve_values, generate, make_scene

# -- helpers -----------------------------------------------------------------------------------

def interpreter(tmp_path: Path, name: str, body: str) -> str:
    """An executable that stands in for the worker's Python."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def fake_worker(tmp_path: Path, generate_reply: dict | None = None,
                ready: dict | None = None) -> str:
    """A worker speaking the protocol from a script: ready, loaded, then ``generate_reply``."""
    ready = ready or {"type": "ready", "version": 1, "pid": 0,
                      "backends": {"onnx": "1.23.2", "torch": None}, "cuda": False,
                      "mps": False}
    script = tmp_path / "fake_worker.py"
    script.write_text(f"""
import json, sys
def send(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()
send({ready!r})
for line in sys.stdin:
    request = json.loads(line)
    if request["type"] == "load":
        send({{"type": "loaded", "id": request["id"], "info": {{}}, "device": "cpu"}})
    elif request["type"] == "generate":
        send(dict({generate_reply or {}!r}, id=request["id"]))
    elif request["type"] == "shutdown":
        break
""")
    return interpreter(tmp_path, "fake-python", f'exec "{sys.executable}" "{script}"')


def silent_interpreter(tmp_path: Path) -> tuple[str, str]:
    """An interpreter that never answers: it waits on a child of its own. Returns it and the
    child's command line (unique, so other runs' processes are not counted)."""
    child = f"sleep {300000 + time.monotonic_ns() % 100000}"
    return interpreter(tmp_path, "silent-python", child), child


def processes_running(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry.name))
    return found


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("emote-worker")]


@pytest.fixture
def worker_python(addon):
    """Set the Worker Python preference for one test; the torch venv again afterwards."""
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = prefs.python

    def use(python: str) -> None:
        prefs.python = python

    yield use
    addon.generation.stop_worker()
    prefs.python = saved


@pytest.fixture
def temp_folder(tmp_path, monkeypatch):
    """A temporary folder of its own, so a leaked copy of a packed sound shows."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def poll_until_done(addon, timeout: float = 120.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = addon.generation.poll_generation()
        if result is not None:
            return result
        time.sleep(0.01)
    raise AssertionError("the job did not end")


def run_until_busy(addon) -> None:
    """Start a job and wait until the worker is busy with it (progress reported)."""
    job = addon.generation.start_generation(bpy.context)
    deadline = time.monotonic() + 120
    while job.job.progress == 0 and not job.job.done and time.monotonic() < deadline:
        assert addon.generation.poll_generation() is None
        time.sleep(0.01)
    assert not job.job.done


def start_running_job(addon, fixtures, tmp_path, wav: str = "long.wav"):
    """A scene with a job the worker is busy with, not applied yet."""
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, wav=wav)
    run_until_busy(addon)
    return scene, strip, mesh


def panel_operators(addon) -> list[str]:
    layout = RecordingLayout()
    addon.panels.draw_emote(layout, bpy.context)
    return [args[0] for name, args, _ in layout.log if name == "operator"]


# -- the worker command ----------------------------------------------------------------------

def test_blenders_own_python_command_and_environment(addon):
    worker = addon.worker
    root = Path("/ext/emote_lipsync")
    assert worker.worker_command("") == [sys.executable, "-m", "server", "worker"]
    assert worker.worker_command("", 60.0)[-2:] == ["--idle-timeout", "60.0"]
    base = {"PATH": "/bin", "PYTHONHOME": "/blender/python", "PYTHONPATH": "/elsewhere"}
    sys_path = ["/blender/scripts/modules", "/blender/python/lib/python3.11",
                "/blender/python/lib/python3.11/site-packages",
                "/user/extensions/.local/lib/python3.11/site-packages",
                "/usr/lib/python3/dist-packages", "/blender/python/lib/python3.11/site-packages"]
    env = worker.worker_environment("", root, base, sys_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [
        str(root), "/blender/python/lib/python3.11/site-packages",
        "/user/extensions/.local/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"]
    assert "PYTHONHOME" not in env and env["PYTHONNOUSERSITE"] == "1"
    assert env["PATH"] == "/bin" and env["HF_HUB_OFFLINE"] == "1"
    assert base["PYTHONHOME"] == "/blender/python"  # the caller's mapping is left alone
    # A Python of the user's (with torch) keeps its own packages.
    env = worker.worker_environment("/venv/bin/python", root, base, sys_path)
    assert env["PYTHONPATH"] == str(root) and "PYTHONHOME" not in env
    assert "PYTHONNOUSERSITE" not in env
    assert worker.worker_command("/venv/bin/python")[0] == "/venv/bin/python"


def test_worker_python_preference_and_environment_variable(addon, worker_python, monkeypatch):
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    assert prefs.bl_rna.properties["python"].default == ""  # Blender's Python by default
    worker_python("")
    monkeypatch.delenv("EMOTE_WORKER_PYTHON", raising=False)
    assert addon.generation.worker_python() == ""
    assert addon.generation.client().interpreter == sys.executable
    monkeypatch.setenv("EMOTE_WORKER_PYTHON", "/opt/torch/bin/python")
    assert addon.generation.worker_python() == "/opt/torch/bin/python"
    worker_python(str(WORKER_PYTHON))
    assert addon.generation.worker_python() == str(WORKER_PYTHON)


def test_blenders_own_python_runs_the_extensions_server(addon, tmp_path):
    """The worker process really is this Blender's Python, in the extension folder, with
    Blender's packages (numpy) and none of the user's site-packages."""
    root = tmp_path / "extension"
    (root / "server").mkdir(parents=True)
    (root / "server" / "__init__.py").write_text("")
    (root / "server" / "__main__.py").write_text("""
import json, os, sys
import numpy
print("a banner without a newline ", end="")
print(json.dumps({"type": "ready", "version": 1, "pid": os.getpid(),
                  "backends": {"onnx": None, "torch": None}, "argv": sys.argv,
                  "executable": sys.executable, "cwd": os.getcwd(), "path": sys.path,
                  "home": os.environ.get("PYTHONHOME"), "no_user_site": sys.flags.no_user_site,
                  "numpy": numpy.__version__}), flush=True)
sys.stdin.read()
""")
    client = addon.worker.WorkerClient(python="", server_root=root,
                                       env=dict(os.environ, PYTHONHOME="/nowhere"))
    try:
        ready = client.wait_ready()
    finally:
        client.stop()
    assert Path(ready["executable"]).resolve() == Path(sys.executable).resolve()
    assert ready["argv"][1:] == ["worker"] and Path(ready["cwd"]) == root
    assert ready["home"] is None and ready["no_user_site"] == 1
    import numpy

    assert ready["numpy"] == numpy.__version__
    for folder in sys.path:  # where Blender keeps its packages and the extension's wheels
        if Path(folder).name in ("site-packages", "dist-packages"):
            assert folder in ready["path"]


def test_check_reports_the_workers_backends(clean, addon, worker_python, tmp_path, capfd):
    describe = addon.worker.describe_backends
    assert describe({"backends": {"onnx": "1.23.2", "torch": None}, "cuda": False}) == \
        "ONNX Runtime 1.23.2 (CPU)"
    assert describe({"backends": {"onnx": None, "torch": "2.13.0"}, "cuda": True}) == \
        "torch 2.13.0, CUDA yes"
    assert describe({"torch": "2.13.0", "cuda": False}) == "torch 2.13.0, CUDA no"
    # Today's worker lists its backends without importing torch, so it says nothing of CUDA.
    assert describe({"backends": {"onnx": "1.23.2", "torch": "2.13.0"}}) == \
        "torch 2.13.0; ONNX Runtime 1.23.2 (CPU)"
    worker_python(fake_worker(tmp_path))
    capfd.readouterr()
    assert bpy.ops.emote.check_worker() == {"FINISHED"}
    assert "ONNX Runtime 1.23.2 (CPU)" in capfd.readouterr().out


# -- starting the worker -----------------------------------------------------------------------

def test_a_worker_that_never_answers_fails_without_blocking_or_orphans(
        clean, addon, fixtures, tmp_path, worker_python, temp_folder, monkeypatch):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, pack=True)
    monkeypatch.setattr(addon.worker, "START_TIMEOUT", 2.0)
    python, child = silent_interpreter(tmp_path)
    worker_python(python)
    before = scene_state(mesh)
    started = time.monotonic()
    assert bpy.ops.emote.generate() == {"FINISHED"}
    assert time.monotonic() - started < 0.5  # the operator returned at once
    assert "emote.cancel" in panel_operators(addon)
    deadline = time.monotonic() + 5
    while not processes_running(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert processes_running(child)  # the interpreter's own child
    level, message = poll_until_done(addon, 30)
    assert level == "ERROR" and "did not start within 2 s" in message
    assert 1.9 < time.monotonic() - started < 10
    time.sleep(0.2)
    assert not processes_running(child)  # the whole process group went
    assert not list(temp_folder.iterdir())  # the packed sound's copy is gone
    deadline = time.monotonic() + 10  # and no reader or writer thread is left waiting
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker_threads()
    assert scene_state(mesh) == before and "emote.generate" in panel_operators(addon)


def test_cancel_during_the_start(clean, addon, fixtures, tmp_path, worker_python, temp_folder):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, pack=True)
    python, child = silent_interpreter(tmp_path)
    worker_python(python)
    before = scene_state(mesh)
    assert bpy.ops.emote.generate() == {"FINISHED"}
    deadline = time.monotonic() + 5
    while not processes_running(child) and time.monotonic() < deadline:
        assert addon.generation.poll_generation() is None
        time.sleep(0.01)
    assert processes_running(child)
    sent = time.monotonic()
    assert bpy.ops.emote.cancel() == {"FINISHED"}
    assert poll_until_done(addon, 5) == ("INFO", "Generation cancelled; nothing was changed.")
    assert time.monotonic() - sent < 1.0
    time.sleep(0.2)
    assert not processes_running(child)
    assert not list(temp_folder.iterdir())
    assert scene_state(mesh) == before


def test_a_failed_start_removes_the_packed_sounds_copy(clean, addon, fixtures, tmp_path,
                                                       worker_python, temp_folder):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, pack=True)
    worker_python(str(tmp_path / "no-such-python"))
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.emote.generate(wait=True)
    worker_python("/bin/false")
    with pytest.raises(RuntimeError, match="did not start"):
        bpy.ops.emote.generate(wait=True)
    assert not list(temp_folder.iterdir())


def test_a_banner_without_newline_before_ready(clean, addon, fixtures, tmp_path, worker_python,
                                               temp_folder):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, pack=True)
    worker_python(interpreter(tmp_path, "banner-python",
                              f"printf 'Welcome to the render farm. '\n"
                              f'exec "{WORKER_PYTHON}" "$@"'))
    assert generate() == {"FINISHED"}
    assert len(mesh.emote_takes) == 1
    assert not list(temp_folder.iterdir())


def test_the_workers_own_sentence_reaches_the_user(clean, addon, fixtures, tmp_path,
                                                   worker_python):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    sentence = "The model produced NaN values: check the audio file and the model."
    worker_python(fake_worker(tmp_path, {"type": "error", "message": sentence}))
    before = scene_state(mesh)
    with pytest.raises(RuntimeError) as failure:
        bpy.ops.emote.generate(wait=True)
    assert str(failure.value).strip() == f"Error: {sentence}"
    assert scene_state(mesh) == before


# -- the job and its file ----------------------------------------------------------------------

def test_a_file_saved_during_a_job_reopens_with_a_normal_panel(clean, addon, fixtures,
                                                               tmp_path):
    start_running_job(addon, fixtures, tmp_path)
    assert "emote.cancel" in panel_operators(addon)
    assert "emote.generate" not in panel_operators(addon)
    shot = tmp_path / "saved_during_a_job.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(shot))
    bpy.ops.wm.open_mainfile(filepath=str(shot))
    operators = panel_operators(addon)
    assert "emote.generate" in operators and "emote.cancel" not in operators
    assert not addon.generation.STATE.running
    assert "running" not in bpy.context.scene.emote.keys()  # nothing of the job was saved
    assert bpy.ops.emote.cancel() == {"CANCELLED"}  # "Nothing is running."
    addon.generation.start_generation(bpy.context)  # not stuck: a new job starts here
    assert bpy.ops.emote.cancel() == {"FINISHED"}
    assert poll_until_done(addon, 30) == ("INFO", "Generation cancelled; nothing was changed.")


def clip_wav(source: Path, target: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``source``: a job that runs a little while."""
    with wave.open(str(source)) as reader:
        params = reader.getparams()
        frames = reader.readframes(int(seconds * reader.getframerate()))
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames)
    return target


def test_a_job_is_never_applied_to_another_files_head(clean, addon, fixtures, tmp_path):
    wav = clip_wav(fixtures / "long.wav", tmp_path / "line.wav", 30.0)
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, wav=str(wav))
    shot_b = tmp_path / "shot_b.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(shot_b))  # the same head name, no take
    run_until_busy(addon)
    bpy.ops.wm.open_mainfile(filepath=str(shot_b))
    head = bpy.data.objects["FLAME"]
    worker = addon.generation.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the worker is done with the job
        if addon.generation.poll_generation() is not None:
            break
        if not any(not job.done for job in worker.jobs.values()):
            break
        time.sleep(0.01)
    addon.generation.poll_generation()
    assert len(head.emote_takes) == 0 and not len(bpy.data.actions)
    assert "emote_job" not in head.keys()
    assert "cancelled: another file was opened" in addon.generation.STATE.status


def test_a_renamed_head_gets_its_take(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    addon.generation.start_generation(bpy.context)
    mesh.name = "Hero head"
    strip.name = "hero line"
    level, message = poll_until_done(addon)
    assert level == "INFO" and message.startswith("New take"), message
    head = bpy.data.objects["Hero head"]
    assert len(head.emote_takes) == 1 and head.emote_takes[0].strip_name == "hero line"
    assert head.data.shape_keys.animation_data.action == head.emote_takes[0].shape_action
    assert "emote_job" not in head.keys() and "emote_job" not in strip.keys()


def test_a_deleted_head_is_reported_deleted(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    actions = {a.name for a in bpy.data.actions}
    addon.generation.start_generation(bpy.context)
    bpy.data.objects.remove(mesh)
    assert poll_until_done(addon) == ("ERROR",
                                      "The head 'FLAME' was deleted while generating.")
    assert {a.name for a in bpy.data.actions} == actions


def test_a_frame_rate_change_during_a_job(clean, addon, fixtures, tmp_path):
    """Started at 25 fps, applied after the scene went to 30 fps: keys at 30 fps over the frames
    the (re-timed) strip plays now, the same file times as at the start."""
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path, fps=25)
    job = addon.generation.start_generation(bpy.context)
    audio = job.audio
    scene.render.fps = 30
    level, message = poll_until_done(addon)
    assert level == "INFO" and "frame rate changed" in message, message
    first, end = compat.strip_first_frame(strip), compat.strip_end_frame(strip)
    retimed = has_audio()  # Blender re-times sound strips it can read (4.2's PyPI bpy cannot)
    if retimed:
        assert end - first > audio.frame_end - audio.frame_start
    take = mesh.emote_takes[0]
    take.living = False  # the model's own output, re-keyed where the job placed it
    frames, values = fcurve_values(take.shape_action, mesh.data.shape_keys,
                                   'key_blocks["Exp1"].value')
    np.testing.assert_array_equal(frames, np.arange(first, end))
    raw = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    # what the strip plays at each frame
    file_time = (frames - compat.strip_content_start(strip)) / 30.0
    positions = (file_time - audio.start) * 25
    np.testing.assert_allclose(values, np.interp(positions, np.arange(len(raw)), raw[:, 0]),
                               atol=1e-5)
    if retimed:  # the same stretch of the file as when the job started
        assert abs(file_time[0] - audio.start) < 1 / 30
        assert abs(file_time[-1] - audio.end) < 2 / 30


# -- reading the rig ---------------------------------------------------------------------------

def test_one_smplx_named_key_does_not_switch_the_convention(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    mesh.shape_key_add(name="Exp000", from_mix=False)
    rig = addon.rig.describe_rig(mesh)
    assert rig.convention == addon.rig.OFFICIAL
    assert rig.expression_keys == [f"Exp{k}" for k in range(1, 101)]
    assert any("Exp000" in note and "ignored" in note for note in rig.notes)
    assert generate() == {"FINISHED"}
    key = mesh.data.shape_keys
    curves = {c.data_path for c in addon.compat.fcurves(mesh.emote_takes[0].shape_action, key)}
    assert 'key_blocks["Exp100"].value' in curves and 'key_blocks["Exp000"].value' not in curves
    assert "Exp000" in addon.generation.STATE.status


def test_a_missing_key_leaves_the_others_at_their_coefficients(clean, addon, fixtures,
                                                               tmp_path):
    compat = addon.compat
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    mesh.shape_key_remove(mesh.data.shape_keys.key_blocks["Exp5"])
    rig = addon.rig.describe_rig(mesh)
    assert rig.expression_keys[4] is None and rig.expression_keys[5] == "Exp6"
    assert len(rig.expression_keys) == 100
    assert generate() == {"FINISHED"}
    assert "Exp5" in addon.generation.STATE.status
    take = mesh.emote_takes[0]
    take.living = False  # the model's own output
    key = mesh.data.shape_keys
    curves = {c.data_path for c in addon.compat.fcurves(take.shape_action, key)}
    assert 'key_blocks["Exp5"].value' not in curves
    assert {f'key_blocks["Exp{k}"].value' for k in (1, 4, 6, 50, 100)} <= curves
    raw = np.asarray(take.shape_action["emote_expression"]).reshape(-1, 100)
    frames, exp6 = fcurve_values(take.shape_action, key, 'key_blocks["Exp6"].value')
    positions = (frames - compat.strip_first_frame(strip)) / 25 * 25
    np.testing.assert_allclose(exp6, np.interp(positions, np.arange(len(raw)), raw[:, 5]),
                               atol=1e-5)


@pytest.mark.parametrize("pattern", ["{x}", "{0}", "{", "Exp", "{n!z}"])
def test_a_bad_expression_key_pattern_gets_one_sentence(clean, addon, fixtures, tmp_path,
                                                        pattern):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    scene.emote.exp_pattern = pattern
    before = scene_state(mesh)
    with pytest.raises(RuntimeError) as failure:
        bpy.ops.emote.generate(wait=True)
    message = str(failure.value).strip()
    assert message == (f"Error: The expression-key pattern '{pattern}' cannot be used: write {{n}}"
                       " (from 1) or {i} (from 0) where the number goes, e.g. Expr_{n:02d}.")
    assert scene_state(mesh) == before


def test_a_good_expression_key_pattern(clean, addon, fixtures, tmp_path):
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    for k in range(1, 101):
        mesh.data.shape_keys.key_blocks[f"Exp{k}"].name = f"Expr_{k:02d}"
    rig = addon.rig.describe_rig(mesh, exp_pattern="Expr_{n:02d}")
    assert rig.expression_keys[:2] == ["Expr_01", "Expr_02"] and rig.expression_keys[-1] == \
        "Expr_100"
    assert not any("ignored" in note for note in rig.notes)


def test_a_worker_that_quit_is_started_again(addon, tmp_path):
    """A worker that said bye (idle shutdown) is replaced by the next request."""
    root = tmp_path / "extension"
    (root / "server").mkdir(parents=True)
    (root / "server" / "__init__.py").write_text("")
    (root / "server" / "__main__.py").write_text("""
import json, os
print(json.dumps({"type": "ready", "version": 1, "pid": os.getpid()}), flush=True)
print(json.dumps({"type": "bye", "reason": "idle"}), flush=True)
""")
    client = addon.worker.WorkerClient(python="", server_root=root)
    try:
        first = client.wait_ready()["pid"]
        deadline = time.monotonic() + 10
        while client.process is not None and client.process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job = client.send("ping")
        assert client.process is not None and client.process.pid != first
        client.wait(job)
        assert job.reply["type"] == "error"  # this one quits at once too: it says so
    finally:
        client.stop()


def test_changing_the_worker_python_does_not_wait_for_the_old_worker(clean, addon,
                                                                     worker_python, tmp_path):
    old = addon.generation.client()
    old.wait_ready()
    process = old.process
    worker_python(fake_worker(tmp_path))
    started = time.monotonic()
    new = addon.generation.client()
    assert new is not old and time.monotonic() - started < 0.2
    assert process.wait(timeout=10) is not None  # the old worker still went
    assert new.wait_ready()["backends"]["onnx"] == "1.23.2"


def test_the_default_worker_is_blenders_own_python(clean, addon, fixtures, tmp_path,
                                                   worker_python, monkeypatch, capfd):
    """Worker Python empty: Blender's Python runs the extension's server with the wheels Blender
    installed for it, and a take comes back."""
    monkeypatch.delenv("EMOTE_WORKER_PYTHON", raising=False)
    worker_python("")
    scene, strip, mesh = make_scene(addon, fixtures, tmp_path)
    capfd.readouterr()
    assert bpy.ops.emote.check_worker() == {"FINISHED"}
    assert "ONNX Runtime" in capfd.readouterr().out
    client = addon.generation.client()
    assert Path(os.readlink(f"/proc/{client.process.pid}/exe")).resolve() == \
        Path(sys.executable).resolve()
    assert generate() == {"FINISHED"}
    assert len(mesh.emote_takes) == 1
