# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m server worker``: the long-lived process the Blender add-on talks to.

The main thread reads requests from stdin; one job thread runs loads and generations in order,
so ``ping`` and ``cancel`` are answered while a job runs. Replies go to the real stdout, one JSON
line each, under a lock; everything else anything prints goes to stderr so the protocol stream
stays clean. See :mod:`server.protocol` for the messages.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from . import protocol


class Worker:
    def __init__(self, out: TextIO, idle_timeout: float | None = None) -> None:
        self.out = out
        self.idle_timeout = idle_timeout
        self._write_lock = threading.Lock()
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._cancel_events: dict[str, threading.Event] = {}
        self._busy = threading.Event()
        self.animator: Any = None
        self.model_key: tuple | None = None
        self._living_cache: dict[tuple, dict[str, Any]] = {}  # insertion order: oldest first

    # -- output ---------------------------------------------------------------------------
    def send(self, kind: str, **fields: Any) -> None:
        try:
            line = protocol.encode({"type": kind, **fields})
        except (ValueError, TypeError) as exc:  # never let one reply kill the worker
            traceback.print_exc(file=sys.stderr)
            line = protocol.encode({"type": protocol.ERROR, "id": _echo_id(fields.get("id")),
                                    "message": f"The '{kind}' reply could not be sent as JSON "
                                               f"({exc}); see the worker log."})
        with self._write_lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the client is gone; stdin will close and we exit

    # -- main loop ------------------------------------------------------------------------
    def run(self, stdin: BinaryIO | TextIO) -> int:
        from .backends import available

        # Nothing heavy before "ready": which backends exist is read from the installed
        # packages' metadata, without importing them (torch alone takes most of a second).
        self.send(protocol.READY, version=protocol.VERSION, pid=os.getpid(),
                  backends=available())
        job_thread = threading.Thread(target=self._job_loop, name="emote-jobs", daemon=True)
        job_thread.start()
        lines: queue.Queue[bytes | str | None] = queue.Queue()

        def read() -> None:
            # Lines are read as bytes and decoded one by one (protocol.decode), so a line that is
            # not UTF-8 gets an error reply; should reading itself ever fail, the worker exits
            # instead of living on deaf.
            try:
                for line in stdin:
                    lines.put(line)
            except Exception:
                traceback.print_exc(file=sys.stderr)
            finally:
                lines.put(None)

        threading.Thread(target=read, name="emote-stdin", daemon=True).start()
        reason = "stdin closed"
        last_activity = time.monotonic()
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if (self.idle_timeout and not self._busy.is_set() and self._jobs.empty()
                        and time.monotonic() - last_activity > self.idle_timeout):
                    reason = "idle"
                    break
                continue
            if line is None:
                break
            last_activity = time.monotonic()
            if not line.strip():
                continue
            try:
                message = protocol.decode(line)
            except protocol.ProtocolError as exc:
                self.send(protocol.ERROR, message=str(exc))
                continue
            try:
                protocol.validate_request(message)
            except protocol.ProtocolError as exc:
                self.send(protocol.ERROR, id=_echo_id(message.get("id")), message=str(exc))
                continue
            kind = message["type"]
            if kind == protocol.SHUTDOWN:
                reason = "shutdown"
                break
            if kind == protocol.PING:
                self.send(protocol.PONG, id=message["id"])
            elif kind == protocol.CANCEL:
                event = self._cancel_events.get(str(message["job"]))
                if event is not None:
                    event.set()
            elif kind in (protocol.LOAD, protocol.GENERATE):
                self._cancel_events[str(message["id"])] = threading.Event()
                self._jobs.put(message)
            else:
                self.send(protocol.ERROR, id=message.get("id"),
                          message=f"'{kind}' is a reply, not a request.")
        for event in list(self._cancel_events.values()):
            event.set()
        self._jobs.put(None)
        job_thread.join(timeout=5.0)
        self.send(protocol.BYE, reason=reason)
        return 0

    # -- jobs -----------------------------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            message = self._jobs.get()
            if message is None:
                return
            job_id = str(message["id"])
            cancel = self._cancel_events.setdefault(job_id, threading.Event())
            self._busy.set()
            try:
                if cancel.is_set():
                    raise _cancelled()
                if message["type"] == protocol.LOAD:
                    self._load(message)
                else:
                    self._generate(message, cancel)
            except Exception as exc:  # every failure is a reply, never a dead pipe
                from .animator import Cancelled

                if isinstance(exc, Cancelled):
                    self.send(protocol.CANCELLED, id=job_id)
                else:
                    self.send(protocol.ERROR, id=job_id,
                              message=_user_message(exc, message["type"]))
                    if not isinstance(exc, ValueError):
                        traceback.print_exc(file=sys.stderr)
            finally:
                self._busy.clear()
                self._cancel_events.pop(job_id, None)

    def _load(self, message: dict[str, Any]) -> None:
        from .animator import Animator
        from .backends import choose
        from .checkpoints import read_model

        threads = int(message["threads"]) if message.get("threads") else None
        window = {k: int(message[k]) for k in ("window", "overlap")
                  if message.get(k) is not None}
        device = message.get("device", "auto")
        backend = choose(message.get("backend", "auto"), device)
        key = (str(message.get("model")), str(message.get("assets")), device, backend, threads,
               tuple(sorted(window.items())))
        if self.animator is None or key != self.model_key:
            source = read_model(message.get("model"), message.get("assets"))
            self.animator = Animator(source, device=device, backend=backend, threads=threads,
                                     **window)
            self.model_key = key
        self.send(protocol.LOADED, id=message["id"], info=self.animator.info(),
                  device=str(self.animator.device))

    def _generate(self, message: dict[str, Any], cancel: threading.Event) -> None:
        from .audio import load_audio

        if self.animator is None:
            raise ValueError("No model is loaded: send a 'load' request first.")
        job_id = message["id"]
        started = time.perf_counter()
        if message.get("output"):
            from .output import check_output_file

            check_output_file(Path(message["output"]), [Path(message["audio"])])
        clip = load_audio(message["audio"], message.get("start"), message.get("end"),
                          bool(message.get("allow_low_rate", False)))
        cached = self.animator.cached(clip)
        last = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.perf_counter()
            if fraction >= 1.0 or now - last[0] > 0.1:
                last[0] = now
                self.send(protocol.PROGRESS, id=job_id, stage=stage, fraction=round(fraction, 4))

        take = self.animator.generate(clip, message["condition"], progress, cancel)
        if cancel.is_set():
            raise _cancelled()
        from .output import check_take_finite

        check_take_finite(take)
        reply: dict[str, Any] = {
            "id": job_id, "frames": take.frames, "fps": take.fps, "label": take.label,
            "cached": cached, "seconds": round(time.perf_counter() - started, 4),
            "warnings": clip.warnings,
        }
        if message.get("output"):
            from .output import write_take

            reply["output"] = str(write_take(Path(message["output"]), take))
        else:
            reply["expression"] = _rows(take.expression)
            reply["jaw"] = _rows(take.jaw)
            if message.get("living", True) is not False:
                reply["living"] = self._living(clip, take)
        self.send(protocol.RESULT, **reply)


    def _living(self, clip: Any, take: Any) -> dict[str, Any]:
        """:func:`living_data`, its audio part (speech activity, closures) cached by the
        audio's content like the model's audio features: another emotion costs nothing more."""
        key = (clip.content_hash(), take.frames)
        audio_part = self._living_cache.pop(key, None)
        data = living_data(clip, take, self.animator.space.emotions, audio_part)
        self._living_cache[key] = {k: data[k] for k in ("activity", "seed", "closure")}
        while len(self._living_cache) > LIVING_CACHE_SIZE:
            self._living_cache.pop(next(iter(self._living_cache)))
        return data


LIVING_CACHE_SIZE = 16


def living_data(clip: Any, take: Any, emotions: Any,
                audio_part: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the add-on computes a take's living layers from (blinks, gaze, head motion, lip
    closure) with its own controls, without the audio: the speech activity, the seed, the
    per-frame emotion weights and the p/b/m closure weights (see :mod:`server.living`)."""
    from .living import seed_from_hash, speech_activity
    from .living.closure import closure_weights

    names = list(emotions)
    weights = np.asarray(take.condition, np.float64)[:, :len(names)]
    if audio_part is None:
        audio_part = {
            "activity": speech_activity(clip.samples, take.frames).to_dict(),
            "seed": seed_from_hash(clip.content_hash()),
            "closure": np.round(closure_weights(clip.samples, take.frames), 4).tolist()}
    return {**audio_part, "emotions": names,
            "emotion_weights": np.round(weights, 5).tolist()}


def _rows(array: np.ndarray) -> list[list[float]]:
    return np.asarray(array, np.float64).tolist()


def _cancelled() -> Exception:
    from .animator import Cancelled

    return Cancelled("Cancelled.")


def _echo_id(value: Any) -> Any:
    """The request's id when a reply can carry it back (protocol.validate_request's kinds)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return value


MAX_DETAIL_CHARS = 300  # of an unexpected exception's text in an error reply


def _user_message(exc: BaseException, kind: str = protocol.GENERATE) -> str:
    """One sentence on one line for the user; the traceback goes to the worker log."""
    if isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = ("Out of memory while loading the model; the model is too big for this machine."
                if kind == protocol.LOAD else
                "Out of memory while generating; try a shorter clip or the CPU device.")
    else:
        detail = f"{type(exc).__name__}: {exc}"
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[:MAX_DETAIL_CHARS - 1] + "…"
        text = (f"The model could not be loaded ({detail}); its config or weights are broken "
                "or made for another version, see the worker log." if kind == protocol.LOAD
                else f"Generation failed inside the model ({detail}); see the worker log.")
    return " ".join(text.split())


def main(idle_timeout: float | None = None) -> int:
    """Run the worker on this process's stdin/stdout."""
    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
    worker = Worker(protocol_out, idle_timeout=idle_timeout)
    # Bytes from a reader of our own (over a copy of the descriptor), not sys.stdin.buffer:
    # the interpreter must not wait at exit for the lock the blocked reader thread holds.
    return worker.run(open(os.dup(sys.stdin.fileno()), "rb"))
