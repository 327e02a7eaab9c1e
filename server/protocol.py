# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker protocol: JSON lines over the worker's stdin (requests) and stdout (replies).

Standard library only: the Blender add-on imports this module too.

Every request is one JSON object on one line (UTF-8) with a ``type`` and, except ``shutdown``,
an ``id`` chosen by the client (a string or a number); every reply to it carries the same
``id``. The worker never answers with a dead pipe: any failure is an ``error`` reply (a line
that is not UTF-8, not JSON, nested too deeply, holds NaN/Infinity or a number beyond a
double's range, or has a field of the wrong type or value gets one naming the problem), and it
exits when its stdin closes.

Paths (``model``, ``assets``, ``audio``, ``output``) should be absolute: a relative path is
resolved against the worker's current folder, which is wherever the client started it (the
add-on's folder when Blender starts it), not the client's idea of "here".

Requests (client → worker)
  ``ping``      {id}                                → ``pong``
  ``load``      {id, model, assets?, device?, backend?, threads?, window?, overlap?}
                model: official EMOTE_v2 folder or bundle folder (null or left out: the
                built-in demo model); device: auto|cpu|cuda|mps;
                backend: auto|onnx|torch (auto: ONNX Runtime when installed, torch for a
                cuda or mps device);
                threads: CPU threads, 1 to 4 × the CPU cores (null: one per core);
                window/overlap: long-audio window and overlap in frames (multiples of 8,
                overlap < window; defaults 1200 and 96), checked before anything loads, so a
                bad value keeps the model already loaded; loading the same settings again
                is instant
                                                    → ``loaded`` {info, device}
  ``generate``  {id, audio, start?, end?, condition, output?, allow_low_rate?, living?}
                audio: a file path (at most 2 hours are used); start/end: seconds into the
                file (the strip's trim), numbers or null;
                living: false leaves the living-face data out of the result (default true);
                allow_low_rate: accept audio below 16 kHz (refused by default);
                condition: {"emotion", "intensity", "style"} (names, indices or
                {name: weight} mixtures; any field may be a list of N of those: a per-frame
                curve), or a list of C numbers, or a list of N lists of C numbers (a per-frame
                curve, spread over the clip); weights 0 to 10, numbers within ±10;
                output: optional .npz or .json path to write instead of sending the
                arrays inline; an existing file there is replaced only when it is a take
                (never the audio, a device or another file), checked before generating
                                                    → ``progress``* then ``result`` | ``cancelled``
  ``cancel``    {id, job}     cancel the generate/load request whose id is ``job``
                                                    → the job answers ``cancelled``
  ``shutdown``  {}                                  → ``bye``, then the worker exits

Replies (worker → client)
  ``ready``     {version, pid, backends}            sent once at start, before any request;
                backends: {"onnx": ONNX Runtime's version or null, "torch": torch's or null}
  ``pong``      {id}
  ``loaded``    {id, info, device}
  ``progress``  {id, stage, fraction}               stage: "audio" | "motion"; fraction 0..1
  ``result``    {id, frames, fps, label, cached, seconds, warnings,
                 expression: [[E floats]*T], jaw: [[3 floats]*T], living?}   (or ``output``
                 instead of the arrays when the request named one); living: what the take's
                 living-face layers are computed from without the audio (server/living):
                 {activity: the speech activity (SpeechActivity.to_dict), seed: from the
                 audio's content, emotions: [names], emotion_weights: [[floats]*T],
                 closure: [T floats]: where the lips shut on p/b/m, 0..1}
  ``cancelled`` {id}
  ``error``     {id?, message}                      message: one sentence for the user
  ``bye``       {reason}                            "shutdown" | "stdin closed" | "idle"
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

VERSION = 1

# The names a condition is made of, in the order of EMOTE's condition vector: eight emotions,
# three intensities, and the 32 MEAD speakers that are the official model's speaking styles (a
# loaded model reports its own emotions and styles in ``info``).
EMOTIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
INTENSITIES = ("mild", "medium", "strong")
MEAD_STYLES = (
    "M003", "M005", "M007", "M009", "M011", "M012", "M013", "M019", "M022", "M023", "M024",
    "M025", "M026", "M027", "M028", "M029", "M030", "M031", "W009", "W011", "W014", "W015",
    "W016", "W018", "W019", "W021", "W023", "W024", "W025", "W026", "W028", "W029",
)

PING, LOAD, GENERATE, CANCEL, SHUTDOWN = "ping", "load", "generate", "cancel", "shutdown"
REQUESTS = (PING, LOAD, GENERATE, CANCEL, SHUTDOWN)

READY, PONG, LOADED, PROGRESS, RESULT = "ready", "pong", "loaded", "progress", "result"
CANCELLED, ERROR, BYE = "cancelled", "error", "bye"
REPLIES = (READY, PONG, LOADED, PROGRESS, RESULT, CANCELLED, ERROR, BYE)

DEVICES = ("auto", "cpu", "cuda", "mps")
BACKENDS = ("auto", "onnx", "torch")  # where the networks run (server/backends)
WINDOW_DEFAULTS = {"window": 1200, "overlap": 96}  # frames, as documented above
WINDOW_GRID = 8  # frames per FLINT latent: windows start and end on this grid
MAX_THREADS_PER_CPU = 4
MAX_INTEGER_DIGITS = 30  # longer integers are refused when parsed, before Python converts them

REQUIRED_FIELDS = {
    PING: ("id",),
    LOAD: ("id",),
    GENERATE: ("id", "audio", "condition"),
    CANCEL: ("id", "job"),
    SHUTDOWN: (),
}


class ProtocolError(ValueError):
    """A line that is not a valid message."""


def encode(message: dict[str, Any]) -> str:
    """One message as one JSON line (newline included)."""
    if message.get("type") not in REQUESTS + REPLIES:
        raise ProtocolError(f"Unknown message type {message.get('type')!r}.")
    return json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str | bytes) -> dict[str, Any]:
    """Parse one line into a message dict, checking its type and required fields.

    Raises :class:`ProtocolError` (a sentence) for anything that is not a valid message; no
    other exception escapes, whatever the line holds."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"The line is not UTF-8 text (byte 0x{line[exc.start]:02x} at "
                                f"position {exc.start}); send JSON encoded as UTF-8.") from None
    try:
        message = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float,
                             parse_int=_short_int)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("The line nests arrays or objects too deeply to be a message."
                            ) from None
    except ValueError as exc:  # JSONDecodeError
        raise ProtocolError(f"Not a JSON line: {exc}.") from None
    if not isinstance(message, dict):
        raise ProtocolError("A message must be a JSON object.")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in REQUESTS + REPLIES:
        raise ProtocolError(f"Unknown message type {kind!r}.")
    missing = [f for f in REQUIRED_FIELDS.get(kind, ()) if f not in message]
    if missing:
        raise ProtocolError(f"A '{kind}' request needs {', '.join(missing)}.")
    return message


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON number; send finite numbers only.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"The number {text[:40]} is beyond a double's range; send finite "
                            "numbers only.")
    return value


def _short_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ProtocolError(f"The number {text[:20]}… has {len(text)} digits; no field takes "
                            f"more than {MAX_INTEGER_DIGITS}.")
    return int(text)


def max_threads() -> int:
    """The most CPU threads a request may ask for: 4 × this machine's cores (more only slows
    it down, and torch crashes on absurd counts)."""
    return (os.cpu_count() or 1) * MAX_THREADS_PER_CPU


def check_threads(value: Any, what: str = "threads") -> int:
    """A thread count from 1 to :func:`max_threads`, or a :class:`ProtocolError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_threads():
        raise ProtocolError(
            f"{what} must be a whole number from 1 to {max_threads()} ({MAX_THREADS_PER_CPU} × "
            f"this machine's {os.cpu_count() or 1} CPU cores); got {_shown(value)}.")
    return value


def validate_request(message: dict[str, Any]) -> None:
    """Check the fields of a decoded request before it is queued, so a wrong type or value is
    one sentence naming the field (not an internal error deep inside a job)."""
    kind = message["type"]
    if "id" in message:
        _check_id(message["id"], "id")
    if kind == CANCEL:
        _check_id(message["job"], "job")
    elif kind == LOAD:
        for name in ("model", "assets"):
            _check_text(message, name)
        device = message.get("device")
        if device is not None and device not in DEVICES:
            raise ProtocolError(f"'device' must be one of {', '.join(DEVICES)}; got "
                                f"{_shown(device)}.")
        backend = message.get("backend")
        if backend is not None and backend not in BACKENDS:
            raise ProtocolError(f"'backend' must be one of {', '.join(BACKENDS)}; got "
                                f"{_shown(backend)}.")
        if message.get("threads") is not None:
            check_threads(message["threads"], "'threads'")
        _check_windowing(message)
    elif kind == GENERATE:
        _check_text(message, "audio", required=True)
        _check_text(message, "output")
        for name in ("start", "end"):
            value = message.get(name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise ProtocolError(f"'{name}' must be a number of seconds or null; got "
                                    f"{_shown(value)}.")
        if not isinstance(message.get("allow_low_rate", False), (bool, type(None))):
            raise ProtocolError("'allow_low_rate' must be true or false.")
        if not isinstance(message.get("living", True), (bool, type(None))):
            raise ProtocolError("'living' must be true or false.")
        if not isinstance(message["condition"], (dict, list)):
            raise ProtocolError("'condition' must be an object of emotion/intensity/style or a "
                                f"list of numbers; got {_shown(message['condition'])}.")


def _shown(value: Any) -> str:
    """A value as it appears in an error message: short, whatever was sent."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) and not (
        isinstance(value, int) and abs(value) > 10**30) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "…"


def _check_id(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ProtocolError(f"'{name}' must be a string or a number; got {_shown(value)}.")


def _check_text(message: dict[str, Any], name: str, required: bool = False) -> None:
    value = message.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"'{name}' must be a path (a non-empty string); got {_shown(value)}.")


def _check_windowing(message: dict[str, Any]) -> None:
    given = {k: message.get(k) for k in WINDOW_DEFAULTS if message.get(k) is not None}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 \
                or value % WINDOW_GRID:
            raise ProtocolError(f"'{name}' must be a whole number of frames, a multiple of "
                                f"{WINDOW_GRID} and not negative; got {_shown(value)}.")
    window = given.get("window", WINDOW_DEFAULTS["window"])
    overlap = given.get("overlap", WINDOW_DEFAULTS["overlap"])
    if not 0 <= overlap < window:
        raise ProtocolError(f"The overlap ({overlap} frames) must be smaller than the window "
                            f"({window} frames).")


def request(kind: str, request_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Build a request dict (the client side)."""
    message: dict[str, Any] = {"type": kind}
    if request_id is not None:
        message["id"] = request_id
    message.update(fields)
    return message
