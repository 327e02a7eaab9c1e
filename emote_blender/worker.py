# SPDX-License-Identifier: GPL-3.0-or-later
"""The client of the inference worker: plain Python, never touches ``bpy``.

Reader threads turn the worker's stdout into events on a queue and a writer thread sends the
requests, so Blender's main thread never waits on the worker: it drains the queue (a timer in
the UI, a loop when an operator is called with ``wait=True``), and that is also where a start
that never answers is given up. The worker stays warm between clicks; a crashed worker is
reported and restarted on the next request.

The worker runs in Blender's own Python by default (the extension's wheels provide ONNX
Runtime and the audio libraries), or in a Python of the user's choice (one with torch, for
CUDA). It gets a process group of its own, so stopping it stops anything it started too.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .server import protocol

START_TIMEOUT = 120.0  # seconds for "ready" (importing torch on a cold disk is slow)
SITE_FOLDERS = ("site-packages", "dist-packages")


class WorkerError(RuntimeError):
    """The worker could not be started, or stopped."""


# -- how the worker is started -------------------------------------------------------------------

def worker_command(python: str, idle_timeout: float | None = None) -> list[str]:
    """``python -m server worker``; an empty ``python`` means Blender's own interpreter."""
    command = [python or sys.executable, "-m", "server", "worker"]
    if idle_timeout:
        command += ["--idle-timeout", str(idle_timeout)]
    return command


def worker_environment(python: str, server_root: Path, base: Mapping[str, str],
                       sys_path: Sequence[str]) -> dict[str, str]:
    """The worker's environment: ``base`` with the folder that holds ``server/`` importable.

    Blender's own Python (``python`` empty) also needs Blender's site-packages folders, which
    hold numpy and, for an installed extension, the wheels Blender unpacked (ONNX Runtime,
    soundfile, soxr); the user's own site-packages stay out. A Python of the user's keeps its
    own packages. Blender's PYTHONHOME must never leak into either.
    """
    env = dict(base)
    env.pop("PYTHONHOME", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if python:
        env["PYTHONPATH"] = str(server_root)
    else:
        folders = [str(server_root)] + [p for p in sys_path if Path(p).name in SITE_FOLDERS]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(folders))
        env["PYTHONNOUSERSITE"] = "1"
    return env


def decode_reply(line: str) -> dict[str, Any]:
    """The protocol message in ``line``, also when something printed text without a newline
    before it (a wrapper's banner): the first JSON object in the line that is a message."""
    try:
        return protocol.decode(line)
    except protocol.ProtocolError:
        pass
    decoder = json.JSONDecoder()
    start = line.find("{")
    while start >= 0:
        try:
            message, _ = decoder.raw_decode(line, start)
            return protocol.decode(json.dumps(message))
        except (ValueError, protocol.ProtocolError):
            start = line.find("{", start + 1)
    raise protocol.ProtocolError("No protocol message in the line.")


def describe_backends(ready: Mapping[str, Any]) -> str:
    """"ONNX Runtime 1.23.2 (CPU)" or "torch 2.13.0", from a ``ready`` message (workers that
    predate ``backends`` report ``torch``, ``cuda`` and ``mps``: "torch 2.13.0, CUDA yes")."""
    backends = ready.get("backends")
    if not isinstance(backends, Mapping):
        backends = {"torch": ready.get("torch")}
    parts = []
    if backends.get("torch"):
        # A worker names its GPUs only when it reports them (the current one does not import
        # torch before it is asked to load a model, so it cannot know).
        gpu = ""
        if "cuda" in ready:
            gpu = f", CUDA {'yes' if ready.get('cuda') else 'no'}"
            if ready.get("mps"):
                gpu += ", MPS yes"
        parts.append(f"torch {backends['torch']}{gpu}")
    if backends.get("onnx"):
        parts.append(f"ONNX Runtime {backends['onnx']} (CPU)")
    return "; ".join(parts) or "The worker runs, but reports no inference backend."


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the worker and everything it started (its own process group)."""
    if os.name == "nt":
        if process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)],
                           capture_output=True, check=False)
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def _shut_down(process: subprocess.Popen, outbox: queue.Queue | None, polite: bool,
               timeout: float) -> None:
    """Ask the worker to quit (``polite``: through its request queue), then kill its group; the
    writer thread ends either way."""
    if outbox is not None:
        if polite:
            outbox.put(protocol.encode({"type": protocol.SHUTDOWN}))
        outbox.put(None)  # closes its stdin: the worker exits even if it missed the request
    if polite:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(process)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


# -- the client --------------------------------------------------------------------------------

@dataclass
class Job:
    id: str
    kind: str
    started: float
    timeout: float | None
    last_activity: float
    progress: float = 0.0
    stage: str = ""
    done: bool = False
    reply: dict[str, Any] | None = None  # result / loaded / error / cancelled
    cancel_requested: bool = False


@dataclass
class WorkerClient:
    """One worker subprocess: ``python -m server worker`` run from ``server_root``.

    ``python`` empty: Blender's own interpreter (``sys.executable``).
    """

    python: str
    server_root: Path
    idle_timeout: float | None = None
    env: dict[str, str] | None = None
    start_timeout: float | None = None  # None: START_TIMEOUT
    process: subprocess.Popen | None = field(default=None, init=False)
    events: queue.Queue = field(default_factory=queue.Queue, init=False)
    jobs: dict[str, Job] = field(default_factory=dict, init=False)
    ready: dict[str, Any] | None = field(default=None, init=False)
    failure: str = field(default="", init=False)  # why the last start failed
    last_ready: dict[str, Any] | None = field(default=None, init=False)  # even if it quit since
    _ids: Any = field(default_factory=lambda: itertools.count(1), init=False)
    _stderr: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60),
                                       init=False)
    _outbox: queue.Queue | None = field(default=None, init=False)
    _start_deadline: float = field(default=0.0, init=False)
    loaded_key: tuple | None = field(default=None, init=False)

    # -- process ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def starting(self) -> bool:
        """Launched, and ``ready`` has not arrived yet."""
        return self.process is not None and self.ready is None

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    def start(self) -> None:
        """Launch the worker unless it runs; returns at once. Its ``ready`` message (or its
        failure) is seen by :meth:`drain`."""
        if self.process is not None:
            if self.process.poll() is None or self.ready is None:
                return  # running, or a start that failed: draining reports that
            self.drain()  # it ran and has exited (idle shutdown, crash): a new one starts
        self.stop()
        python = str(self.python)
        if python and not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise WorkerError(f"The worker Python '{python}' does not exist. Set it in the "
                              "add-on preferences (a Python with torch), or leave it empty to "
                              "use Blender's own Python.")
        command = worker_command(python, self.idle_timeout)
        env = worker_environment(python, self.server_root,
                                 os.environ if self.env is None else self.env, sys.path)
        if os.name == "nt":
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}
        self._stderr.clear()
        self.events = queue.Queue()
        self.ready = None
        self.last_ready = None
        self.failure = ""
        self.loaded_key = None
        try:
            process = subprocess.Popen(
                command, cwd=str(self.server_root), env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                encoding="utf-8", errors="replace", **group)
        except OSError as exc:
            raise WorkerError(f"Could not start the worker with '{command[0]}': {exc}.") \
                from exc
        self.process = process
        timeout = START_TIMEOUT if self.start_timeout is None else self.start_timeout
        self._start_deadline = time.monotonic() + timeout
        self._outbox = queue.Queue()
        stderr = threading.Thread(target=self._read_stderr, args=(process,), daemon=True,
                                  name="emote-worker-err")
        stderr.start()
        threading.Thread(target=self._read_stdout, args=(process, stderr), daemon=True,
                         name="emote-worker-out").start()
        threading.Thread(target=self._write_requests, args=(process, self._outbox),
                         daemon=True, name="emote-worker-in").start()

    def _startup_failure(self, reason: str = "") -> str:
        log = "\n".join(self._stderr)
        own = not self.python
        where = "Blender's Python" if own else f"The worker Python '{self.python}'"
        if "No module named 'torch'" in log and not own:
            return (f"{where} has no torch installed. Install torch there, or leave Worker "
                    "Python empty to use Blender's own Python.")
        if "No module named" in log:
            missing = log.split("No module named", 1)[1].split("\n", 1)[0].strip()
            fix = ("reinstall the extension (its wheels provide the worker's packages)" if own
                   else "install the worker requirements into it")
            return f"{where} lacks the module {missing}; {fix}."
        tail = log.strip().splitlines()[-1] if log.strip() else "no output"
        return f"The worker did not start{reason} ({tail})."

    def _read_stdout(self, process: subprocess.Popen, stderr: threading.Thread) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not line.strip():
                continue
            try:
                self.events.put((process, decode_reply(line)))
            except protocol.ProtocolError:
                self._stderr.append(f"(stdout) {line.rstrip()}")
        process.wait()
        stderr.join(timeout=2.0)  # the failure message needs the end of the log
        self.events.put((process, {"type": "_exit", "code": process.returncode}))

    def _read_stderr(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr.append(line.rstrip())

    def _write_requests(self, process: subprocess.Popen, outbox: queue.Queue) -> None:
        """Requests go out from this thread: a full pipe must never block Blender."""
        assert process.stdin is not None
        while True:
            line = outbox.get()
            try:
                if line is None:
                    process.stdin.close()
                    return
                process.stdin.write(line)
                process.stdin.flush()
            except (OSError, ValueError):
                # The worker is gone (the exit event reports it); what is left unwritten must
                # not be flushed into a dead pipe later.
                with contextlib.suppress(OSError, ValueError):
                    process.stdin.close()
                return

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def stop(self, timeout: float = 3.0, message: str = "The worker was stopped.",
             wait: bool = True) -> None:
        """Shut the worker down (politely when it is up, else at once) with everything it
        started; safe to call at any time. ``wait`` False leaves the polite wait to a
        background thread (a preference change must not hold up Blender)."""
        process, outbox, was_ready = self.process, self._outbox, self.ready is not None
        self.process = None
        self._outbox = None
        self.ready = None
        self.loaded_key = None
        if process is not None:
            polite = process.poll() is None and was_ready
            if wait:
                _shut_down(process, outbox, polite, timeout)
            else:
                threading.Thread(target=_shut_down, args=(process, outbox, polite, timeout),
                                 daemon=True, name="emote-worker-stop").start()
        for job in self.jobs.values():
            if not job.done:
                self._finish(job, {"type": protocol.ERROR, "id": job.id, "message": message})

    # -- requests --------------------------------------------------------------------------
    def send(self, kind: str, timeout: float | None = None, **fields: Any) -> Job:
        """Queue a request (starting the worker if needed); returns its :class:`Job` at once."""
        self.start()
        job_id = f"{kind}-{next(self._ids)}"
        now = time.monotonic()
        job = Job(id=job_id, kind=kind, started=now, timeout=timeout, last_activity=now)
        self.jobs[job_id] = job
        self._write(protocol.request(kind, job_id, **fields))
        return job

    def _write(self, message: dict[str, Any]) -> None:
        if self._outbox is not None:
            self._outbox.put(protocol.encode(message))

    def cancel(self, job: Job) -> None:
        """Cancel ``job``. A worker that has not started yet is not waited for: the job ends
        now, and the start is given up when nothing else waits for it."""
        if job.done:
            return
        job.cancel_requested = True
        if self.alive and self.ready is not None:
            self._write(protocol.request(protocol.CANCEL, f"cancel-{job.id}", job=job.id))
            return
        self._finish(job, {"type": protocol.CANCELLED, "id": job.id})
        if not any(not j.done for j in self.jobs.values()):
            self.stop()

    def drain(self) -> list[dict[str, Any]]:
        """Apply every event waiting on the queue to its job; returns the events (main thread)."""
        events = []
        while True:
            try:
                process, event = self.events.get_nowait()
            except queue.Empty:
                break
            if process is not self.process:
                continue  # from a process we already stopped or replaced
            events.append(event)
            self._apply(event)
        now = time.monotonic()
        if self.starting and now > self._start_deadline:
            waited = START_TIMEOUT if self.start_timeout is None else self.start_timeout
            self.failure = self._startup_failure(f" within {waited:.0f} s")
            self.stop(message=self.failure)
        for job in self.jobs.values():
            if (not job.done and self.ready is not None and job.timeout is not None
                    and now - job.last_activity > job.timeout):
                self.cancel(job)
                self._finish(job, {"type": protocol.ERROR, "id": job.id,
                                   "message": f"The worker did not answer within "
                                              f"{job.timeout:.0f} s; the job was cancelled."})
        return events

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == protocol.READY:
            self.ready = self.last_ready = event
            now = time.monotonic()
            for job in self.jobs.values():
                job.last_activity = now  # job timeouts count from here
            return
        if kind == "_exit":
            started = self.ready is not None
            code = event["code"]
            process, outbox = self.process, self._outbox
            self.process = None
            self._outbox = None
            self.ready = None
            self.loaded_key = None
            if outbox is not None:
                outbox.put(None)  # the writer thread ends too
            if process is not None:
                _kill_group(process)  # anything it left behind
            if started:
                tail = self.log_tail(3) or "no output"
                message = (f"The worker stopped unexpectedly (exit code {code}): {tail}. It "
                           "restarts on the next request.")
            else:
                message = self.failure = self._startup_failure()
            for job in self.jobs.values():
                if not job.done:
                    self._finish(job, {"type": protocol.ERROR, "id": job.id,
                                       "message": message})
            return
        job = self.jobs.get(str(event.get("id")))
        if job is None:
            return
        job.last_activity = time.monotonic()
        if kind == protocol.PROGRESS:
            job.progress = float(event.get("fraction", 0.0))
            job.stage = str(event.get("stage", ""))
        elif kind in (protocol.RESULT, protocol.LOADED, protocol.ERROR, protocol.CANCELLED,
                      protocol.PONG):
            self._finish(job, event)

    def _finish(self, job: Job, reply: dict[str, Any]) -> None:
        job.done = True
        job.reply = reply

    def wait_ready(self, poll: float = 0.02) -> dict[str, Any]:
        """Start the worker and block until it is ready (scripts); raises :class:`WorkerError`
        with the reason when it cannot start."""
        self.start()
        while self.starting:
            self.drain()
            if self.starting:
                time.sleep(poll)
        ready = self.ready or self.last_ready  # a worker may quit right after (idle 0)
        if ready is None:
            raise WorkerError(self.failure or "The worker did not start.")
        return ready

    def wait(self, job: Job, poll: float = 0.02) -> dict[str, Any]:
        """Block until ``job`` finishes (scripts and ``wait=True`` operators)."""
        while not job.done:
            self.drain()
            if not job.done:
                time.sleep(poll)
        self.jobs.pop(job.id, None)
        assert job.reply is not None
        return job.reply

    def forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
