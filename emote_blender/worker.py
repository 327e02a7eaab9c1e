# SPDX-License-Identifier: GPL-3.0-or-later
"""The client of the inference worker: plain Python, never touches ``bpy``.

A reader thread turns the worker's stdout into events on a queue; Blender's main thread drains
the queue (a timer in the UI, a loop when an operator is called with ``wait=True``). The worker
stays warm between clicks; a crashed worker is reported and restarted on the next request.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .server import protocol

START_TIMEOUT = 120.0  # seconds for "ready" (importing torch on a cold disk is slow)


class WorkerError(RuntimeError):
    """The worker could not be started, or stopped."""


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
    """One worker subprocess: ``python -m server worker`` run from ``server_root``."""

    python: str
    server_root: Path
    idle_timeout: float | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    events: queue.Queue = field(default_factory=queue.Queue, init=False)
    jobs: dict[str, Job] = field(default_factory=dict, init=False)
    ready: dict[str, Any] | None = field(default=None, init=False)
    _ids: Any = field(default_factory=lambda: itertools.count(1), init=False)
    _stderr: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60),
                                       init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    loaded_key: tuple | None = field(default=None, init=False)

    # -- process ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the worker (if not running) and wait for its ``ready`` message."""
        if self.alive and self.ready is not None:
            return self.ready
        self.stop()
        python = str(self.python)
        if not python or not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise WorkerError(f"The worker Python '{python}' does not exist. Set it in the "
                              "add-on preferences (a Python with torch, e.g. the project's "
                              ".venv/bin/python).")
        command = [python, "-m", "server", "worker"]
        if self.idle_timeout:
            command += ["--idle-timeout", str(self.idle_timeout)]
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = str(self.server_root)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.pop("PYTHONHOME", None)  # Blender's own Python must not leak into the worker
        self._stderr.clear()
        self.events = queue.Queue()
        self.ready = None
        self.loaded_key = None
        try:
            self.process = subprocess.Popen(
                command, cwd=str(self.server_root), env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                encoding="utf-8", errors="replace")
        except OSError as exc:
            raise WorkerError(f"Could not start the worker with '{python}': {exc}.") from exc
        threading.Thread(target=self._read_stdout, args=(self.process,), daemon=True,
                         name="emote-worker-out").start()
        threading.Thread(target=self._read_stderr, args=(self.process,), daemon=True,
                         name="emote-worker-err").start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if not self.alive:
                    break
                continue
            if event.get("type") == protocol.READY:
                self.ready = event
                return event
        self.stop()
        raise WorkerError(self._startup_failure())

    def _startup_failure(self) -> str:
        log = "\n".join(self._stderr)
        if "No module named 'torch'" in log:
            return (f"The worker Python '{self.python}' has no torch installed. Choose the "
                    "project's .venv/bin/python in the preferences, or install torch there.")
        if "No module named" in log:
            missing = log.split("No module named", 1)[1].split("\n", 1)[0].strip()
            return (f"The worker Python '{self.python}' lacks the module {missing}; install the "
                    "worker requirements into it.")
        tail = log.strip().splitlines()[-1] if log.strip() else "no output"
        return f"The worker did not start ({tail})."

    def _read_stdout(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                self.events.put(protocol.decode(line))
            except protocol.ProtocolError:
                self._stderr.append(f"(stdout) {line.rstrip()}")
        process.wait()
        self.events.put({"type": "_exit", "code": process.returncode, "process": process})

    def _read_stderr(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr.append(line.rstrip())

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def stop(self, timeout: float = 3.0) -> None:
        """Shut the worker down (politely, then by force); safe to call at any time."""
        process = self.process
        self.process = None
        self.ready = None
        self.loaded_key = None
        if process is None:
            return
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(protocol.encode({"type": protocol.SHUTDOWN}))
                process.stdin.flush()
                process.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        for job in self.jobs.values():
            if not job.done:
                job.done = True
                job.reply = {"type": protocol.ERROR, "id": job.id,
                             "message": "The worker was stopped."}

    # -- requests --------------------------------------------------------------------------
    def send(self, kind: str, timeout: float | None = None, **fields: Any) -> Job:
        """Send a request (starting the worker if needed); returns its :class:`Job`."""
        self.start()
        job_id = f"{kind}-{next(self._ids)}"
        now = time.monotonic()
        job = Job(id=job_id, kind=kind, started=now, timeout=timeout, last_activity=now)
        self.jobs[job_id] = job
        self._write(protocol.request(kind, job_id, **fields))
        return job

    def _write(self, message: dict[str, Any]) -> None:
        try:
            assert self.process is not None and self.process.stdin is not None
            with self._lock:
                self.process.stdin.write(protocol.encode(message))
                self.process.stdin.flush()
        except (OSError, ValueError, AssertionError):
            pass  # the exit event reports the crash

    def cancel(self, job: Job) -> None:
        if not job.done and self.alive:
            job.cancel_requested = True
            self._write(protocol.request(protocol.CANCEL, f"cancel-{job.id}", job=job.id))

    def drain(self) -> list[dict[str, Any]]:
        """Apply every event waiting on the queue to its job; returns the events (main thread)."""
        events = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            events.append(event)
            self._apply(event)
        now = time.monotonic()
        for job in self.jobs.values():
            if not job.done and job.timeout is not None and now - job.last_activity > job.timeout:
                self.cancel(job)
                self._finish(job, {"type": protocol.ERROR, "id": job.id,
                                   "message": f"The worker did not answer within "
                                              f"{job.timeout:.0f} s; the job was cancelled."})
        return events

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "_exit":
            if event["process"] is not self.process and self.process is not None:
                return  # an old process we already replaced
            code = event["code"]
            self.process = None
            self.ready = None
            self.loaded_key = None
            tail = self.log_tail(3) or "no output"
            for job in self.jobs.values():
                if not job.done:
                    self._finish(job, {"type": protocol.ERROR, "id": job.id,
                                       "message": f"The worker stopped unexpectedly (exit code "
                                                  f"{code}): {tail}. It restarts on the next "
                                                  "request."})
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
