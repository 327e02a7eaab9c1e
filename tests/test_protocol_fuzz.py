# SPDX-License-Identifier: GPL-3.0-or-later
"""A bounded, seeded fuzz of the worker protocol: thousands of random and mutated lines sent to a
real ``python -m server worker``. Every line gets a reply (or, for a cancel, none is due), the
pings in between are answered in order, no reply is an internal error, and at the end the worker
still answers and exits cleanly when its stdin closes.

No model is ever loaded: ``load`` and ``shutdown`` lines are left out, so each generate is
answered at once and the whole run takes seconds."""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time

from tests.builders import ROOT

SEED = 20261201
LINES = 5000
PING_EVERY = 25

TEMPLATES = [
    {"type": "ping", "id": "tpl"},
    {"type": "generate", "id": "g", "audio": "/nonexistent/line.wav", "start": 0.5, "end": 2.0,
     "condition": {"emotion": {"Happy": 0.7, "Sad": 0.3}, "intensity": 2, "style": "M003"},
     "output": "/nonexistent/take.npz", "allow_low_rate": False},
    {"type": "generate", "id": 7, "audio": "x.wav", "condition": [0.0] * 43},
    {"type": "cancel", "id": "c", "job": "g"},
    {"type": "result", "id": "r", "frames": 3},
    {"type": "load", "id": "L", "model": "/nonexistent", "threads": 2, "window": 64,
     "overlap": 16},
]
ODD_VALUES = [None, True, False, 0, -1, 5, 2**63, 1e308, -1e308, "", "x", "\udcff", [], {},
              [[[]]], {"a": {"b": None}}, "9" * 60, [None] * 43, {"Happy": None}]
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1e-400", '"\\ud800"',
              "[" * 3000 + "]" * 3000, '{"a":' * 2000 + "1" + "}" * 2000]
BAD_UTF8 = [b"\xff", b"\xfe\xfa", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


def _mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.3:
            data[at] = rng.randrange(256)
        elif choice < 0.5:
            del data[at:at + rng.randint(1, 8)]
        elif choice < 0.7:
            data[at:at] = rng.choice(BAD_UTF8)
        elif choice < 0.85:
            data.insert(at, rng.choice(b'{}[]",:0123456789.-eE '))
        else:
            del data[at:]
    return bytes(data)


def _line(rng: random.Random) -> bytes:
    kind = rng.random()
    template = dict(rng.choice(TEMPLATES))
    if kind < 0.15:
        line = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    elif kind < 0.45:
        line = _mutate(rng, json.dumps(template).encode())
    elif kind < 0.7:
        field = rng.choice([*template, "threads", "window", "start", "condition", "output"])
        template[field] = rng.choice(ODD_VALUES)
        line = json.dumps(template).encode("utf-8", "surrogatepass")
    elif kind < 0.9:
        field = rng.choice(list(template))
        text = json.dumps({**template, field: "@@"}).replace('"@@"', rng.choice(RAW_TOKENS))
        line = text.encode()
    else:
        depth = rng.choice([10, 1000, 100_000])
        line = (rng.choice(["[", '{"a":']) * depth).encode()
    return line.replace(b"\n", b" ")


def _expected_reply(line: bytes) -> bool | None:
    """False for lines that get no reply (blank, or a well-formed cancel); None for lines the
    fuzz must not send (they would load a model or stop the worker); True otherwise."""
    if not line.strip():
        return False
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    if not isinstance(message, dict):
        return True
    if message.get("type") in ("load", "shutdown"):
        return None
    if message.get("type") == "cancel" and {"id", "job"} <= set(message):
        ok = [isinstance(message[k], (str, int, float)) and not isinstance(message[k], bool)
              for k in ("id", "job")]
        if all(ok) and all(_finite(message[k]) for k in ("id", "job")):
            return False
    return True


def _finite(value) -> bool:
    """What the worker takes as an id: no NaN or infinity, no integer over 30 digits."""
    if isinstance(value, int):
        return len(str(abs(value))) <= 30
    return not isinstance(value, float) or value == value and abs(value) != float("inf")


def _finite_tokens(text: str) -> float:
    raise ValueError(f"the worker sent {text}")


def test_the_worker_survives_thousands_of_random_and_mutated_lines():
    rng = random.Random(SEED)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               PYTHONIOENCODING="utf-8:strict")
    proc = subprocess.Popen([sys.executable, "-m", "server", "worker"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    replies: queue.Queue = queue.Queue()

    def read() -> None:
        for raw in proc.stdout:
            replies.put(json.loads(raw, parse_constant=_finite_tokens))
        replies.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert replies.get(timeout=120)["type"] == "ready"
        started = time.monotonic()
        due, pings, lines = 0, [], []
        while len(lines) < LINES:
            line = _line(rng)
            expected = _expected_reply(line)
            if expected is None:
                continue
            due += expected
            lines.append(line + b"\n")
            if len(lines) % PING_EVERY == 0:
                pings.append(f"fz-{len(lines)}")
                lines.append(b'{"type":"ping","id":"%s"}\n' % pings[-1].encode())
        pings.append("fz-last")
        lines.append(b'{"type":"ping","id":"fz-last"}\n')

        def write() -> None:  # a thread: a worker that stops reading must not hang the test
            try:
                for line in lines:
                    proc.stdin.write(line)
                    proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answered, our_pongs = 0, []

        def take_reply() -> None:
            nonlocal answered
            try:
                reply = replies.get(timeout=30)
            except queue.Empty:
                raise AssertionError(f"the worker went deaf after {answered} replies") from None
            assert reply is not None, f"the worker exited after {answered} replies"
            assert reply["type"] in ("error", "pong", "cancelled"), reply
            if reply["type"] == "error":
                assert "Internal error" not in reply["message"], reply
                assert "could not be sent" not in reply["message"], reply
                assert "\n" not in reply["message"]
            if reply["type"] == "pong" and str(reply["id"]).startswith("fz-"):
                our_pongs.append(reply["id"])
            else:
                answered += 1

        # Pings are answered by the reading thread, generate errors by the job thread: the
        # last of those may come after the last pong.
        while not our_pongs or our_pongs[-1] != "fz-last" or answered < due:
            take_reply()
        assert our_pongs == pings
        assert time.monotonic() - started < 60
        writer.join(timeout=10)
        proc.stdin.write(b'{"type":"ping","id":"fz-still-here"}\n')
        proc.stdin.flush()
        while our_pongs[-1] != "fz-still-here":
            take_reply()
        assert answered == due, (answered, due)
        proc.stdin.close()
        assert replies.get(timeout=30) == {"type": "bye", "reason": "stdin closed"}
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
