# SPDX-License-Identifier: GPL-3.0-or-later
"""The stdio worker as the add-on drives it: a real subprocess speaking JSON lines."""

import os
import queue
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile

from server import protocol
from tests.builders import speech_like, write_overflowing_bundle, write_wav

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    def __init__(self, *args, env=None, preexec_fn=None):
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "worker", *args], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1,
            preexec_fn=preexec_fn)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.ready = self.next(timeout=120)
        assert self.ready["type"] == "ready"

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(protocol.decode(line))
        self.replies.put(None)

    def send(self, message):
        self.proc.stdin.write(message if isinstance(message, str) else protocol.encode(message))
        self.proc.stdin.flush()

    def send_bytes(self, raw: bytes):
        self.proc.stdin.flush()
        self.proc.stdin.buffer.write(raw)
        self.proc.stdin.buffer.flush()

    def next(self, timeout=60):
        return self.replies.get(timeout=timeout)

    def until(self, kind, request_id=None, timeout=120):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            reply = self.next(max(0.1, deadline - time.monotonic()))
            assert reply is not None, f"worker exited; saw {seen}"
            seen.append(reply)
            if reply["type"] == kind and (request_id is None or reply.get("id") == request_id):
                return reply, seen
            if reply["type"] == "error" and reply.get("id") == request_id:
                raise AssertionError(reply["message"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture
def worker():
    w = WorkerProcess()
    yield w
    w.close()
    if w.proc.poll() is None:
        w.proc.kill()


def load(worker, bundle, **extra):
    worker.send(protocol.request("load", "L", model=str(bundle), device="cpu", **extra))
    return worker.until("loaded", "L")[0]


def test_ping_load_generate_and_progress(worker, tiny_bundle, speech_wav):
    assert worker.ready["version"] == protocol.VERSION and worker.ready["pid"] == worker.proc.pid
    worker.send(protocol.request("ping", "p1"))
    assert worker.until("pong", "p1")[0]["id"] == "p1"
    info = load(worker, tiny_bundle)["info"]
    assert info["condition_dim"] == 43
    worker.send(protocol.request("generate", "g1", audio=str(speech_wav),
                                 condition={"emotion": "Happy", "intensity": 2, "style": 0}))
    result, seen = worker.until("result", "g1")
    assert any(r["type"] == "progress" and r["stage"] == "audio" for r in seen)
    assert result["frames"] == 75 and result["fps"] == 25 and result["cached"] is False
    assert np.array(result["expression"]).shape == (75, 100)
    assert np.array(result["jaw"]).shape == (75, 3)
    assert result["label"] == "Happy · strong · M003"
    worker.send(protocol.request("generate", "g2", audio=str(speech_wav), start=0.5, end=2.5,
                                 condition={"emotion": "Sad"}))
    assert worker.until("result", "g2")[0]["frames"] == 50
    worker.send(protocol.request("generate", "g3", audio=str(speech_wav),
                                 condition={"emotion": "Sad"}))
    assert worker.until("result", "g3")[0]["cached"] is True


def test_a_result_carries_what_the_living_layers_need(worker, tiny_bundle, speech_wav):
    """The speech activity, the seed from the audio's content and the per-frame emotion
    weights: enough to compute the living layers (server/living) without the audio."""
    from server.audio import load_audio
    from server.living import layers_from_activity, living_layers, seed_from_hash
    from server.living.speech import SpeechActivity

    load(worker, tiny_bundle)
    worker.send(protocol.request("generate", "g1", audio=str(speech_wav),
                                 condition={"emotion": {"Sad": 0.75, "Fear": 0.25}}))
    living = worker.until("result", "g1")[0]["living"]
    activity = SpeechActivity.from_dict(living["activity"])
    assert activity.frames == 75
    clip = load_audio(str(speech_wav))
    assert living["seed"] == seed_from_hash(clip.content_hash())
    weights = np.array(living["emotion_weights"])
    assert weights.shape == (75, len(living["emotions"]))
    sad, fear = living["emotions"].index("Sad"), living["emotions"].index("Fear")
    assert np.allclose(weights[:, sad], 0.75) and np.allclose(weights[:, fear], 0.25)
    closure = np.array(living["closure"])
    assert closure.shape == (75,) and closure.min() >= 0 and closure.max() <= 1
    emotions = {n: weights[:, i] for i, n in enumerate(living["emotions"])}
    stored = layers_from_activity(activity, emotions, living["seed"])
    direct = living_layers(clip.samples, 75, emotions, living["seed"])
    assert np.abs(stored.eyelids - direct.eyelids).max() < 1e-3
    assert np.abs(stored.eyes - direct.eyes).max() < 1e-3
    assert np.abs(stored.neck - direct.neck).max() < 1e-3
    worker.send(protocol.request("generate", "g2", audio=str(speech_wav), living=False,
                                 condition={"emotion": "Sad"}))
    assert "living" not in worker.until("result", "g2")[0]
    worker.send(protocol.request("generate", "g3", audio=str(speech_wav), living="yes",
                                 condition={"emotion": "Sad"}))
    error = worker.until("error", None)[0]
    assert error["id"] == "g3" and "'living' must be true or false" in error["message"]


def test_failures_are_replies_not_dead_pipes(worker, tiny_bundle, tmp_path):
    worker.send("this is not json\n")
    assert "Not a JSON line" in worker.until("error")[0]["message"]
    worker.send(protocol.request("generate", "early", audio="x.wav", condition={}))
    assert "No model is loaded" in worker.until("error", "early")[0]["message"]
    worker.send(protocol.request("load", "bad", model=str(tmp_path)))
    assert "is not an EMOTE model folder" in worker.until("error", "bad")[0]["message"]
    load(worker, tiny_bundle)
    worker.send(protocol.request("generate", "missing", audio=str(tmp_path / "no.wav"),
                                 condition={"emotion": "Happy"}))
    assert "not found" in worker.until("error", "missing")[0]["message"]
    worker.send(protocol.request("generate", "joy", audio=str(tmp_path / "no.wav"),
                                 condition={"emotion": "Joy"}))
    assert worker.until("error", "joy")[0]["message"]
    worker.send(protocol.request("ping", "alive"))
    assert worker.until("pong", "alive")


def test_load_without_a_model_loads_the_built_in_demo(worker, speech_wav):
    worker.send(protocol.request("load", "L", device="cpu"))
    assert worker.until("loaded", "L")[0]["info"]["styles"][0] == "moderate-neutral-brisk"
    worker.send(protocol.request("generate", "g", audio=str(speech_wav),
                                 condition={"emotion": "Sad"}))
    assert worker.until("result", "g")[0]["label"] == "Sad · strong · moderate-neutral-brisk"


def test_output_file_instead_of_inline_arrays(worker, tiny_bundle, speech_wav, tmp_path):
    load(worker, tiny_bundle)
    out = tmp_path / "take.npz"
    worker.send(protocol.request("generate", "g", audio=str(speech_wav), output=str(out),
                                 condition=[0.0] * 6 + [1.0] + [0.0] * 3 + [1.0] + [0.0] * 32))
    result = worker.until("result", "g")[0]
    assert result["output"] == str(out) and "expression" not in result
    assert np.load(out)["expression"].shape == (75, 100)


def test_cancel_stops_a_long_job_within_a_second(worker, tiny_bundle, tmp_path):
    long_clip = write_wav(tmp_path / "long.wav", 600.0)
    load(worker, tiny_bundle, window=64, overlap=16)
    worker.send(protocol.request("generate", "long", audio=str(long_clip),
                                 condition={"emotion": "Fear"}))
    worker.until("progress", "long")
    sent = time.monotonic()
    worker.send(protocol.request("cancel", "c", job="long"))
    worker.until("cancelled", "long")
    assert time.monotonic() - sent < 1.0
    worker.send(protocol.request("ping", "after"))
    assert worker.until("pong", "after")


def test_exits_when_stdin_closes_and_on_shutdown(tiny_bundle):
    first = WorkerProcess()
    first.proc.stdin.close()
    assert first.proc.wait(timeout=30) == 0
    second = WorkerProcess()
    second.send(protocol.request("shutdown"))
    assert second.until("bye")[0]["reason"] == "shutdown"
    assert second.proc.wait(timeout=30) == 0


def test_idle_timeout_exits():
    idle = WorkerProcess("--idle-timeout", "1")
    bye, _ = idle.until("bye", timeout=30)
    assert bye["reason"] == "idle" and idle.proc.wait(timeout=30) == 0


def test_200_back_to_back_requests_without_leaking(worker, tiny_bundle, tmp_path):
    clips = [write_wav(tmp_path / "a.wav", 2.0, seed=1), write_wav(tmp_path / "b.wav", 3.0,
                                                                   seed=2)]
    emotions = ["Happy", "Sad", "Anger", "Surprise"]
    load(worker, tiny_bundle)
    process = psutil.Process(worker.proc.pid)
    for i in range(200):
        worker.send(protocol.request("generate", f"r{i}", audio=str(clips[i % 2]),
                                     condition={"emotion": emotions[i % 4]}))
    answered = {}
    rss_after_10 = None
    while len(answered) < 200:
        reply = worker.next(timeout=120)
        assert reply is not None and reply["type"] != "error", reply
        if reply["type"] == "result":
            answered[reply["id"]] = reply["frames"]
            if len(answered) == 10:
                rss_after_10 = process.memory_info().rss
    rss_end = process.memory_info().rss
    assert sorted(answered) == sorted(f"r{i}" for i in range(200))
    assert {answered["r0"], answered["r1"]} == {50, 75}
    print(f"RSS after 10 requests {rss_after_10 / 2**20:.1f} MiB, "
          f"after 200 {rss_end / 2**20:.1f} MiB")
    assert rss_end <= 1.05 * rss_after_10, (rss_after_10, rss_end)


def _alive(worker, name="alive"):
    worker.send(protocol.request("ping", name))
    assert worker.until("pong", name)[0]["id"] == name


def _strict_locale():
    """What a real en_US.UTF-8 terminal gives Python: strict UTF-8 on stdin (also set through
    PYTHONIOENCODING, since that locale is not installed everywhere)."""
    env = {"PYTHONIOENCODING": "utf-8:strict"}
    if "en_US.utf8" in subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout:
        env["LC_ALL"] = "en_US.UTF-8"
    return env


def test_invalid_utf8_is_an_error_reply_and_the_worker_stays_alive():
    worker = WorkerProcess(env=_strict_locale())
    try:
        worker.send_bytes(b"\xff\xfe\xfa\n")
        assert "not UTF-8" in worker.until("error")[0]["message"]
        worker.send_bytes(b'{"type":"ping","id":"caf\xc3\xa9"}\n')
        assert worker.until("pong")[0]["id"] == "café"
        _alive(worker)
        worker.proc.stdin.close()
        assert worker.until("bye")[0]["reason"] == "stdin closed"
        assert worker.proc.wait(timeout=30) == 0
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()


def test_lines_that_used_to_kill_the_worker_get_error_replies(worker):
    lines = {
        "deep nesting": "[" * 10**6 + "]" * 10**6,
        "NaN id": '{"type":"ping","id":NaN}',
        "Infinity id": '{"type":"ping","id":Infinity}',
        "1e400 id": '{"type":"ping","id":1e400}',
        "5000-digit id": '{"type":"ping","id":' + "9" * 5000 + "}",
    }
    for name, line in lines.items():
        worker.send(line + "\n")
        reply = worker.until("error")[0]
        assert "Internal error" not in reply["message"] and len(reply["message"]) < 200, name
        _alive(worker, f"after {name}")
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=30) == 0


def test_wrong_field_types_are_one_sentence_naming_the_field(worker, tiny_bundle, speech_wav):
    cases = [
        (protocol.request("generate", "g1", audio=5, condition={}), "'audio' must be a path"),
        (protocol.request("generate", "g2", audio=None, condition={}), "'audio' must be a path"),
        (protocol.request("generate", "g3", audio=["a.wav"], condition={}),
         "'audio' must be a path"),
        (protocol.request("generate", "g4", audio="a.wav", output=5, condition={}),
         "'output' must be a path"),
        (protocol.request("load", "l1", model=123), "'model' must be a path"),
        (protocol.request("generate", "g5", audio="a.wav", start="x", condition={}),
         "'start' must be a number of seconds"),
        (protocol.request("load", "l2", threads="abc"), "'threads' must be a whole number"),
        (protocol.request("generate", "g6", audio="a.wav", condition="Happy"),
         "'condition' must be an object"),
        (protocol.request("ping", ["list", "id"]), "'id' must be a string or a number"),
    ]
    for message, expected in cases:
        worker.send(message)
        reply = worker.until("error")[0]
        assert expected in reply["message"], (message, reply)
        assert reply.get("id") == (message["id"] if isinstance(message["id"], str) else None)
    load(worker, tiny_bundle)
    for condition, expected in (({"emotion": {"Happy": None}}, "must be a number; got None"),
                                ([None] * 43, "must hold numbers only"),
                                ({"emotion": {"Happy": 1e30}}, "must be at most 10")):
        worker.send(protocol.request("generate", "w", audio=str(speech_wav),
                                     condition=condition))
        reply = worker.until("error")[0]
        assert expected in reply["message"] and "Internal error" not in reply["message"]
    _alive(worker)


@pytest.mark.parametrize("settings,message", [
    ({"window": 7}, "'window' must be a whole number of frames, a multiple of 8"),
    ({"window": -8}, "'window' must be a whole number of frames, a multiple of 8"),
    ({"window": 64}, "The overlap (96 frames) must be smaller than the window (64 frames)"),
    ({"threads": 100000}, "'threads' must be a whole number from 1 to"),
    ({"threads": -1}, "'threads' must be a whole number from 1 to"),
])
def test_bad_load_settings_are_refused_and_keep_the_loaded_model(worker, tiny_bundle,
                                                                 speech_wav, settings, message):
    load(worker, tiny_bundle)
    worker.send(protocol.request("load", "bad", model=str(tiny_bundle), device="cpu",
                                 **settings))
    assert message in worker.until("error", "bad")[0]["message"]
    worker.send(protocol.request("generate", "g", audio=str(speech_wav),
                                 condition={"emotion": "Happy"}))
    assert worker.until("result", "g")[0]["frames"] == 75


def test_a_model_that_overflows_is_a_sentence_not_invalid_json(worker, tmp_path, speech_wav):
    bundle = write_overflowing_bundle(tmp_path / "overflowing")
    load(worker, bundle)
    out = tmp_path / "take.npz"
    for request_id, extra in (("inline", {}), ("file", {"output": str(out)})):
        worker.send(protocol.request("generate", request_id, audio=str(speech_wav),
                                     condition={"emotion": "Happy"}, **extra))
        assert worker.until("error", request_id)[0]["message"] == (
            "The model produced non-finite values (NaN or infinity) for this take; the "
            "model's weights or the input are broken.")
    assert not out.exists()
    _alive(worker)


def test_the_output_may_not_be_the_audio_or_another_file(worker, tiny_bundle, tmp_path):
    line = tmp_path / "line.wav"
    soundfile.write(str(line), speech_like(2.0), 16_000)
    audio = line.read_bytes()
    notes = tmp_path / "notes.npz"
    np.savez(notes, mine=np.arange(4))
    load(worker, tiny_bundle)
    for out, message in ((line, "is the input audio"),
                         (notes, "already exists and is not a take")):
        worker.send(protocol.request("generate", "g", audio=str(line), output=str(out),
                                     condition={"emotion": "Happy"}))
        assert message in worker.until("error", "g")[0]["message"]
    assert line.read_bytes() == audio and set(np.load(notes)) == {"mine"}


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def test_a_4_gb_wav_is_an_error_reply_not_an_out_of_memory_kill(tiny_bundle, tmp_path):
    """37 hours of sparse WAV; the worker runs under an 8 GB address-space limit so that a
    worker that tried to decode it would fail there rather than exhaust the machine."""
    path = tmp_path / "huge.wav"
    data_bytes = 0xFFFF_0000
    with open(path, "wb") as f:
        f.write(b"RIFF" + (data_bytes + 36).to_bytes(4, "little") + b"WAVEfmt "
                + bytes.fromhex("10000000 0100 0100 803e0000 007d0000 0200 1000")
                + b"data" + data_bytes.to_bytes(4, "little"))
        f.truncate(44 + data_bytes)
    worker = WorkerProcess(preexec_fn=_limit_memory)
    try:
        load(worker, tiny_bundle)
        sent = time.monotonic()
        worker.send(protocol.request("generate", "huge", audio=str(path),
                                     condition={"emotion": "Happy"}))
        message = worker.until("error", "huge")[0]["message"]
        assert "37.3 hours of audio" in message and "at most 2 hours" in message
        assert time.monotonic() - sent < 10
        _alive(worker)
    finally:
        worker.close()


def test_relative_paths_are_documented():
    assert "a relative path is\nresolved against the worker's current folder" in protocol.__doc__


def test_unexpected_failures_are_one_sentence_on_one_line():
    from server.worker import _user_message

    loading = _user_message(ZeroDivisionError("division by zero"), "load")
    assert loading == ("The model could not be loaded (ZeroDivisionError: division by zero); its "
                    "config or weights are broken or made for another version, see the worker "
                    "log.")
    long = _user_message(RuntimeError("line one\n" + "x" * 5000), "generate")
    assert long.startswith("Generation failed inside the model (RuntimeError: line one x")
    assert "\n" not in long and len(long) < 400 and "Internal error" not in long


def test_nan_audio_is_refused_by_the_worker(worker, tiny_bundle, tmp_path):
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), np.full(32_000, np.nan, np.float32), 16_000, subtype="FLOAT")
    load(worker, tiny_bundle)
    worker.send(protocol.request("generate", "nan", audio=str(path),
                                 condition={"emotion": "Happy"}))
    assert "non-finite samples (NaN or infinity)" in worker.until("error", "nan")[0]["message"]
