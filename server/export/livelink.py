# SPDX-License-Identifier: GPL-3.0-or-later
"""Live Link Face's CSV: per-frame ARKit weights, head and eye angles, as engines import them.

Epic's Live Link Face app (iOS) records each take as a CSV beside its video; Unreal 5's
LiveLinkFaceImporter plugin imports the app's takes, and MotionBuilder and Blender importers and
MetaHuman retargeting scripts read the CSV. What the layout is, as checked (2026-12-01)
against the public material below, since Epic publishes no format description:

- **Header**: ``Timecode,BlendShapeCount``, then the 52 ARKit coefficients capitalised
  (``EyeBlinkLeft``), then ``HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,
  RightEyeYaw,RightEyePitch,RightEyeRoll``: 63 columns. The coefficients follow Apple's order
  (``ARFaceAnchor.BlendShapeLocation``, the order of Unreal's ``EARFaceBlendShape`` enum) except
  that the app writes ``JawRight`` before ``JawLeft`` and ``MouthRight`` before ``MouthLeft``.
  This is the header several independent importers hard-code (a Blender Live Link Face add-on,
  a Flutter animation loader, a MotionBuilder retargeter's notes, a Unity CSV player; the
  ``LIVE_LINK_FACE_HEADER`` strings found by code search) and the column list
  :data:`HEADER` writes. One project's test quotes a real capture with ``BlendshapeCount``
  (lower-case s); :func:`read_livelink_csv` accepts that spelling of the one column, the
  writer uses ``BlendShapeCount`` as everyone else.
- **BlendShapeCount** is 61 on every row (52 coefficients + 9 angles).
- **Timecode** ``HH:MM:SS:FF.mmm``: hours, minutes, seconds and the frame FF within the second
  at the take's frame rate, then the sub-frame in thousandths of a frame (Unreal's
  ``FFrameTime`` printed as frame + sub-frame; an importer's notes quote a recording's
  ``14:03:52:28.207``, time of day, whose .207 is no millisecond count at 30 or 60 fps). Our
  frames fall on whole frames: ``.000``.
- **Coefficients** are 0 (neutral) to 1 (full movement) (Apple's ``blendShapes`` documentation);
  "Left" is the face's own left (Apple: "the eyeBlinkRight coefficient refers to the face's
  right eye").
- **Angles**: radians here. Unreal's own ARKit face support (``AppleARKitConversion.h``, UE 4.2x)
  maps its head and eye rotators' degrees to [-1, 1] (degrees / 180) before Live Link, and
  importers describe the app's CSV angles as degrees or radians depending on its version; the
  unit could not be checked against a recording (:data:`ANGLE_UNIT` says which we write).
  Our sign conventions (FLAME's, as the living layers define them; unverified against Live
  Link's): **yaw** + turns toward the subject's left, **pitch** + turns the face
  (or the gaze) down, **roll** + tilts toward the subject's right shoulder, from the rotation
  ``R = R_y(yaw) · R_x(pitch) · R_z(roll)`` in FLAME's frame (x the subject's left, y up, z
  toward the viewer).

Sources: Apple, ARKit ``ARFaceAnchor.BlendShapeLocation`` documentation; Epic's
``AppleARKitConversion.h`` (UE 4.2x, ``ToBlendShapeMap``); A. Donciu-Julin, "Live Link Face to
Unreal MetaHuman Retarget" (dev.to, the take's four files); public Live Link Face CSV readers
(headers as above).

:func:`write_livelink_csv` writes that layout from canonical ARKit names (Apple's spelling,
``eyeBlinkLeft``); :func:`read_livelink_csv` is a strict reader that gives the same numbers
back and refuses any other layout with a sentence.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..output import write_atomically
from ..retarget.arkit import ARKIT_52

# The coefficients in Live Link Face's column order: Apple's (ARKIT_52), except that the app
# writes JawRight before JawLeft and MouthRight before MouthLeft; capitalised in the header.
_APP_SWAPS = (("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"))


def _app_order(names: tuple[str, ...]) -> tuple[str, ...]:
    order = list(names)
    for a, b in _APP_SWAPS:
        i, j = order.index(a), order.index(b)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


ARKIT_NAMES = _app_order(ARKIT_52)  # Apple's spelling, in the CSV's order
LIVELINK_BLENDSHAPES = tuple(name[0].upper() + name[1:] for name in ARKIT_NAMES)
HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
EYE_COLUMNS = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
               "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
HEADER = ("Timecode", "BlendShapeCount") + LIVELINK_BLENDSHAPES + HEAD_COLUMNS + EYE_COLUMNS
BLENDSHAPE_COUNT = len(LIVELINK_BLENDSHAPES) + len(HEAD_COLUMNS) + len(EYE_COLUMNS)  # 61
ANGLE_UNIT = "radians"
DECIMALS = 7  # 5e-8 rounding: far below what a rig resolves, and the reader's 1e-6 round trip
MAX_FPS = 100  # two timecode digits for the frame
_TIMECODE = re.compile(r"^(\d{2}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}))?$")
_COUNT_SPELLINGS = ("BlendShapeCount", "BlendshapeCount")


class LiveLinkError(ValueError):
    """A Live Link CSV cannot be written or read as asked; the message says why."""


@dataclass
class LiveLinkTake:
    """What a Live Link Face CSV holds, as :func:`read_livelink_csv` reads it."""

    weights: dict[str, np.ndarray]  # canonical ARKit name → (T,)
    head: np.ndarray  # (T, 3) yaw, pitch, roll
    eyes: np.ndarray  # (T, 2, 3) left, right × yaw, pitch, roll
    timecodes: list[str]
    frames: np.ndarray  # (T,) frame numbers since 00:00:00:00 (sub-frames as fractions)
    fps: int | None  # the timecode's frame rate: as given, or as the file shows it

    @property
    def seconds(self) -> np.ndarray:
        """Seconds of each row from the first (needs the frame rate)."""
        if self.fps is None:
            raise LiveLinkError("The frame rate of this Live Link CSV is not known (it spans "
                                "less than a second); give it to read_livelink_csv.")
        return (self.frames - self.frames[0]) / self.fps


@dataclass
class LiveLinkWritten:
    """The file :func:`write_livelink_csv` wrote and what it had to change."""

    path: Path
    frames: int
    notes: list[str] = field(default_factory=list)


def _check_fps(fps: float) -> int:
    if (isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating))
            or not math.isfinite(fps) or fps != int(fps) or not 1 <= fps <= MAX_FPS):
        raise LiveLinkError(f"The frame rate must be a whole number of frames per second from "
                            f"1 to {MAX_FPS} (Live Link timecodes count whole frames); got "
                            f"{fps!r}.")
    return int(fps)


def parse_timecode(text: str, fps: int | None = None) -> tuple[int, float]:
    """``HH:MM:SS:FF`` or ``HH:MM:SS:FF.mmm`` → (whole seconds since 00:00:00, frame within
    the second with the sub-frame as a fraction). With ``fps`` the frame must be below it.
    ``LiveLinkError`` for anything else."""
    match = _TIMECODE.match(text)
    if not match:
        raise LiveLinkError(f"'{text}' is not a timecode HH:MM:SS:FF or HH:MM:SS:FF.mmm.")
    hours, minutes, seconds, frame = (int(match.group(i)) for i in range(1, 5))
    if minutes > 59 or seconds > 59 or hours > 23 or (fps is not None and frame >= fps):
        raise LiveLinkError(f"The timecode '{text}' is out of range"
                            + (f" at {fps} frames per second." if fps is not None else "."))
    return (hours * 60 + minutes) * 60 + seconds, frame + int(match.group(5) or 0) / 1000


def format_timecode(frame: int, fps: int) -> str:
    """Frame ``frame`` (since 00:00:00:00) at ``fps`` → ``HH:MM:SS:FF.000``."""
    seconds, ff = divmod(int(frame), fps)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.000"


def _frame_series(values: np.ndarray | None, shape: tuple[int, ...], frames: int, what: str
                  ) -> np.ndarray:
    if values is None:
        return np.zeros((frames,) + shape)
    array = np.asarray(values, np.float64)
    if array.shape != (frames,) + shape:
        raise LiveLinkError(f"The {what} must have shape {(frames,) + shape} (one row per frame); "
                            f"got {array.shape}.")
    if not np.isfinite(array).all():
        raise LiveLinkError(f"The {what} hold non-finite numbers (NaN or infinity); nothing was "
                            "written.")
    return array


def _blendshape_table(weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The (T, 52) coefficient table in column order from canonical names; notes on clipping."""
    unknown = sorted(set(weights) - set(ARKIT_NAMES))
    if unknown:
        raise LiveLinkError(f"Not ARKit blendshape names: {', '.join(unknown[:8])}"
                            f"{' …' if len(unknown) > 8 else ''}; give Apple's names such as "
                            "eyeBlinkLeft or jawOpen.")
    if not weights:
        raise LiveLinkError("No ARKit weights were given; nothing to write.")
    lengths = {name: np.shape(values) for name, values in weights.items()}
    frames = {shape[0] if len(shape) == 1 else -1 for shape in lengths.values()}
    if len(frames) != 1 or -1 in frames:
        shapes = ", ".join(f"{name} {shape}" for name, shape in list(lengths.items())[:6])
        raise LiveLinkError(f"Every ARKit weight must be one number per frame, all of the same "
                            f"length; got {shapes}.")
    count = frames.pop()
    table = np.zeros((count, len(ARKIT_NAMES)))
    for column, name in enumerate(ARKIT_NAMES):
        if name in weights:
            table[:, column] = np.asarray(weights[name], np.float64)
    if not np.isfinite(table).all():
        bad = [ARKIT_NAMES[c] for c in np.flatnonzero(~np.isfinite(table).all(axis=0))]
        raise LiveLinkError(f"The ARKit weights {', '.join(bad[:6])} hold non-finite numbers "
                            "(NaN or infinity); nothing was written.")
    notes = []
    outside = (table < 0) | (table > 1)
    if outside.any():
        columns = np.flatnonzero(outside.any(axis=0))
        worst = max(columns, key=lambda c: np.abs(np.clip(table[:, c], 0, 1) - table[:, c]).max())
        extreme = table[np.argmax(np.abs(np.clip(table[:, worst], 0, 1) - table[:, worst])), worst]
        notes.append(f"{int(outside.sum())} values of {len(columns)} blendshapes lay outside "
                     f"[0, 1] and were clipped (ARKit coefficients run from 0 to 1; the "
                     f"farthest: {ARKIT_NAMES[worst]} {extreme:.3g}).")
        table = np.clip(table, 0.0, 1.0)
    return table, notes


def check_csv_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Refuse, with a sentence and before anything runs, a CSV output that must not be
    replaced: one of the ``inputs`` (the audio, a mapping, a FLAME file), a link, a folder, a
    device, or an existing file that is not a Live Link CSV (a real Live Link Face recording
    has the same layout and is replaced like one we wrote: choose a new name to keep one)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise LiveLinkError(f"The Live Link output '{path}' must end in .csv.")
    if os.path.lexists(path):
        for source in inputs:
            try:
                if os.path.samefile(source, path):
                    raise LiveLinkError(f"The Live Link output '{path}' is the input "
                                        f"'{source}'; give another .csv name.")
            except OSError:
                continue
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
            raise LiveLinkError(f"The Live Link output '{path}' is a link, folder or device; "
                                "give the name of a new .csv file.")
        try:
            with open(path, encoding="utf-8", newline="") as f:
                first = f.readline(4096).rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            first = ""
        if _header_problem(first.split(","), path) is not None:
            raise LiveLinkError(f"'{path}' already exists and is not a Live Link CSV; choose "
                                "another output name, or move that file away first.")
    folder = path.parent if str(path.parent) else Path(".")
    if os.path.lexists(folder) and not folder.is_dir():
        raise LiveLinkError(f"Cannot write '{path}': '{folder}' is not a folder.")
    return path


def write_livelink_csv(path: str | Path, weights: Mapping[str, np.ndarray], fps: float,
                       head: np.ndarray | None = None, eyes: np.ndarray | None = None,
                       start_timecode: str = "00:00:00:00",
                       inputs: Iterable[str | Path] = ()) -> LiveLinkWritten:
    """Write a Live Link Face CSV (the layout of the module's description).

    ``weights`` maps canonical ARKit names (``jawOpen``, ``eyeBlinkLeft``) to per-frame values
    (T,); names left out are written as 0, values outside [0, 1] are clipped (said in the
    result's notes). ``head`` (T, 3) holds yaw, pitch, roll and ``eyes`` (T, 2, 3) the left
    and right eyes' yaw, pitch, roll, radians (0 when not given). Timecodes count frames at
    ``fps`` (whole frames per second) from ``start_timecode``. Non-finite numbers are refused;
    the file is complete or absent, and never replaces one of ``inputs`` or a file that is not
    a Live Link CSV (:func:`check_csv_output`)."""
    fps = _check_fps(fps)
    table, notes = _blendshape_table(weights)
    frames = len(table)
    head_rows = _frame_series(head, (3,), frames, "head angles")
    eye_rows = _frame_series(eyes, (2, 3), frames, "eye angles").reshape(frames, 6)
    whole, frame = parse_timecode(start_timecode, fps)
    start = whole * fps + int(frame)
    if start + frames > 24 * 3600 * fps:
        raise LiveLinkError(f"The take would run past 23:59:59 from the start timecode "
                            f"{start_timecode}; start earlier.")
    path = check_csv_output(path, inputs)
    lines = [",".join(HEADER)]
    numbers = np.concatenate([table, head_rows, eye_rows], axis=1)
    for i, row in enumerate(numbers):
        # + 0.0 turns a rounded -0.0 into 0.0, so a value that is zero reads as zero.
        values = ",".join(f"{round(v, DECIMALS) + 0.0:.{DECIMALS}f}" for v in row)
        lines.append(f"{format_timecode(start + i, fps)},{BLENDSHAPE_COUNT},{values}")
    text = "\n".join(lines) + "\n"
    try:
        write_atomically(path, lambda f: f.write(text.encode("ascii")))
    except OSError as exc:
        raise LiveLinkError(f"Could not write '{path}' ({exc.strerror or exc}); choose a folder "
                            "you can write to.") from None
    return LiveLinkWritten(path=path, frames=frames, notes=notes)


def _header_problem(columns: list[str], path: Path) -> str | None:
    """None when ``columns`` are the Live Link header, else the sentence that says why not."""
    what = f"'{path}' is not a Live Link Face CSV"
    if len(columns) != len(HEADER):
        return (f"{what}: its header has {len(columns)} columns, the layout has {len(HEADER)} "
                f"(Timecode, BlendShapeCount, 52 ARKit coefficients, 9 head and eye angles).")
    for index, (found, expected) in enumerate(zip(columns, HEADER, strict=True)):
        if found == expected or (index == 1 and found in _COUNT_SPELLINGS):
            continue
        return (f"{what}: header column {index + 1} is '{found[:40]}', expected "
                f"'{expected}'.")
    return None


def read_livelink_csv(path: str | Path, fps: int | None = None) -> LiveLinkTake:
    """Read a Live Link Face CSV strictly: the exact header, 63 fields on every row, a
    timecode, BlendShapeCount 61 and finite numbers, timecodes increasing. ``fps`` (the
    timecode's frame rate) checks the frame numbers; without it the rate is taken from the
    file (the highest frame number + 1) when the file spans more than a second, else left
    unknown. Raises :class:`LiveLinkError` with a sentence naming the file and the line."""
    path = Path(path)
    if fps is not None:
        fps = _check_fps(fps)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise LiveLinkError(f"The Live Link CSV '{path}' does not exist.") from None
    except UnicodeDecodeError:
        raise LiveLinkError(f"'{path}' is not a Live Link Face CSV: it is not text.") from None
    except OSError as exc:
        raise LiveLinkError(f"Cannot read '{path}' ({exc.strerror or exc}).") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise LiveLinkError(f"'{path}' is empty; a Live Link Face CSV starts with its header.")
    problem = _header_problem(lines[0].split(","), path)
    if problem:
        raise LiveLinkError(problem)
    if len(lines) < 2:
        raise LiveLinkError(f"'{path}' has a Live Link header but no frames.")
    timecodes, numbers, times = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        where = f"'{path}', line {number}"
        if len(fields) != len(HEADER):
            raise LiveLinkError(f"{where} has {len(fields)} fields; the header has "
                                f"{len(HEADER)}.")
        try:
            times.append(parse_timecode(fields[0], fps))
        except LiveLinkError as exc:
            raise LiveLinkError(f"{where}: {exc}") from None
        if fields[1].strip() != str(BLENDSHAPE_COUNT):
            raise LiveLinkError(f"{where}: BlendShapeCount is '{fields[1][:20]}', expected "
                                f"{BLENDSHAPE_COUNT}.")
        try:
            row = [float(value) for value in fields[2:]]
        except ValueError:
            bad = next(v for v in fields[2:] if not _is_number(v))
            raise LiveLinkError(f"{where}: '{bad[:20]}' is not a number.") from None
        if not all(math.isfinite(value) for value in row):
            raise LiveLinkError(f"{where} holds a non-finite number (NaN or infinity).")
        timecodes.append(fields[0])
        numbers.append(row)
    whole = np.array([t[0] for t in times], np.float64)
    within = np.array([t[1] for t in times], np.float64)
    if fps is None and len(set(whole.tolist())) > 1:
        fps = int(within.max()) + 1  # a take that crosses a second shows every frame number
    frames = within if fps is None else whole * fps + within
    if np.any(np.diff(frames) <= 0):
        row = int(np.flatnonzero(np.diff(frames) <= 0)[0]) + 3
        raise LiveLinkError(f"'{path}', line {row}: the timecode does not follow the previous "
                            "line's; the rows of a take run forward in time.")
    table = np.array(numbers, np.float64)
    n = len(ARKIT_NAMES)
    weights = {name: table[:, i] for i, name in enumerate(ARKIT_NAMES)}
    return LiveLinkTake(weights=weights, head=table[:, n: n + 3],
                        eyes=table[:, n + 3:].reshape(-1, 2, 3), timecodes=timecodes,
                        frames=frames, fps=fps)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
