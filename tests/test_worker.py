# SPDX-License-Identifier: GPL-3.0-or-later
"""The stdio worker as the add-on drives it: a real subprocess speaking JSON lines."""

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from server import protocol
from tests.builders import write_wav

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    def __init__(self, *args):
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "worker", *args], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
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
