# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker protocol: JSON lines over the worker's stdin (requests) and stdout (replies).

Standard library only: the Blender add-on imports this module too.

Every request is one JSON object on one line with a ``type`` and, except ``shutdown``, an ``id``
chosen by the client; every reply to it carries the same ``id``. The worker never answers with a
dead pipe: any failure is an ``error`` reply, and it exits when its stdin closes.

Requests (client → worker)
  ``ping``      {id}                                → ``pong``
  ``load``      {id, model, assets?, device?, threads?, window?, overlap?}
                model: official EMOTE_v2 folder or bundle folder (null or left out: the
                built-in demo model); device: auto|cpu|cuda|mps;
                window/overlap: long-audio window and overlap in frames (multiples of 8;
                defaults 1200 and 96); loading the same settings again is instant
                                                    → ``loaded`` {info, device}
  ``generate``  {id, audio, start?, end?, condition, output?, allow_low_rate?}
                audio: a file path; start/end: seconds into the file (the strip's trim);
                allow_low_rate: accept audio below 16 kHz (refused by default);
                condition: {"emotion", "intensity", "style"} (names, indices or
                {name: weight} mixtures; any field may be a list of N of those: a per-frame
                curve), or a list of C numbers, or a list of N lists of C numbers (a per-frame
                curve, spread over the clip);
                output: optional .npz path to write instead of sending the arrays inline
                                                    → ``progress``* then ``result`` | ``cancelled``
  ``cancel``    {id, job}     cancel the generate/load request whose id is ``job``
                                                    → the job answers ``cancelled``
  ``shutdown``  {}                                  → ``bye``, then the worker exits

Replies (worker → client)
  ``ready``     {version, pid, torch, cuda, mps}    sent once at start, before any request
  ``pong``      {id}
  ``loaded``    {id, info, device}
  ``progress``  {id, stage, fraction}               stage: "audio" | "motion"; fraction 0..1
  ``result``    {id, frames, fps, label, cached, seconds, warnings,
                 expression: [[E floats]*T], jaw: [[3 floats]*T]}   (or ``output`` instead of
                 the arrays when the request named one)
  ``cancelled`` {id}
  ``error``     {id?, message}                      message: one sentence for the user
  ``bye``       {reason}                            "shutdown" | "stdin closed" | "idle"
"""

from __future__ import annotations

import json
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
    """Parse one line into a message dict, checking its type and required fields."""
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"Not a JSON line: {exc}.") from exc
    if not isinstance(message, dict):
        raise ProtocolError("A message must be a JSON object.")
    kind = message.get("type")
    if kind not in REQUESTS + REPLIES:
        raise ProtocolError(f"Unknown message type {kind!r}.")
    missing = [f for f in REQUIRED_FIELDS.get(kind, ()) if f not in message]
    if missing:
        raise ProtocolError(f"A '{kind}' request needs {', '.join(missing)}.")
    return message


def request(kind: str, request_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Build a request dict (the client side)."""
    message: dict[str, Any] = {"type": kind}
    if request_id is not None:
        message["id"] = request_id
    message.update(fields)
    return message
