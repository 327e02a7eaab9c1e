# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing takes to disk: ``.npz`` (NumPy) or ``.json``, atomically (no half-written files).

An output path is checked before the model runs (:func:`check_output_file`,
:func:`check_output_folder`): it must end in ``.npz`` or ``.json``, its folder must be
writable, and whatever is already there is replaced only when it is a take this writer made.
So a user's audio, model, FLAME file, notes or a device such as ``/dev/null`` are never
overwritten. Files get the mode the umask gives, like any file the user creates.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from .animator import Take

TAKE_SUFFIXES = (".npz", ".json")
# What a take file holds, and how this writer recognises one it wrote.
TAKE_KEYS = ("expression", "jaw", "fps", "condition", "label")
_JSON_START = b'{"expression": '


class OutputError(ValueError):
    """The take cannot or must not be written where asked; the message says why."""


def take_arrays(take: Take, vertices: np.ndarray | None = None,
                faces: np.ndarray | None = None,
                extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a take file; ``extras`` adds named float fields (the living layers:
    ``eyes``, ``neck``, ``eyelids``)."""
    arrays = {
        "expression": take.expression.astype(np.float32),
        "jaw": take.jaw.astype(np.float32),
        "fps": np.asarray(take.fps),
        "condition": take.condition.astype(np.float32),
        "label": np.asarray(take.label),
    }
    if vertices is not None:
        arrays["vertices"] = vertices.astype(np.float32)
    if faces is not None:
        arrays["faces"] = faces.astype(np.int32)
    for name, values in (extras or {}).items():
        arrays[name] = np.asarray(values).astype(np.float32)
    return arrays


def check_take_finite(take: Take) -> None:
    """No take leaves the engine holding NaN or infinity (a broken model or input would
    otherwise animate a face with garbage, or fail later as invalid JSON)."""
    if not (np.all(np.isfinite(take.expression)) and np.all(np.isfinite(take.jaw))):
        raise OutputError("The model produced non-finite values (NaN or infinity) for this "
                          "take; the model's weights or the input are broken.")


def is_take_file(path: Path) -> bool:
    """True for a regular file that this writer wrote (its keys, not just its suffix)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".json":
            with open(path, "rb") as f:
                return f.read(len(_JSON_START)) == _JSON_START
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        return {f"{key}.npy" for key in TAKE_KEYS} <= names
    except (OSError, zipfile.BadZipFile):
        return False


def check_output_file(path: Path, inputs: Iterable[Path] = ()) -> Path:
    """Refuse, with a sentence and before anything runs, an output file that must not be
    replaced (an input, a file this writer did not make, a link, a device) or cannot be
    written (wrong suffix, a file in the way of its folder, a read-only folder)."""
    path = Path(path)
    if os.path.lexists(path):
        for source in inputs:
            try:
                if os.path.samefile(source, path):
                    raise OutputError(f"The output '{path}' is the input audio '{source}'; "
                                      "give another output name (.npz or .json).")
            except OSError:
                continue
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise OutputError(f"The output '{path}' is a symbolic link; give the name of a new "
                              "or previous take file instead (.npz or .json).")
        if stat.S_ISDIR(mode):
            raise OutputError(f"The output '{path}' is a folder; give an output file name "
                              "(.npz or .json).")
        if not stat.S_ISREG(mode):
            raise OutputError(f"The output '{path}' is not a regular file (a device, pipe or "
                              "socket); give an output file name (.npz or .json).")
    if path.suffix.lower() not in TAKE_SUFFIXES:
        raise OutputError(f"The output '{path}' must end in .npz or .json.")
    if os.path.lexists(path) and not is_take_file(path):
        raise OutputError(f"'{path}' already exists and is not a take written by EMOTE; "
                          "choose another output name, or move that file away first.")
    check_output_folder(path.parent)
    return path


def check_output_folder(folder: Path) -> None:
    """The folder exists and is writable, or can be created: refuse with a sentence otherwise
    (a file in the way, a read-only or impossible place)."""
    folder = Path(folder)
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"Cannot write into '{folder}': '{existing}' is a file, not a folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(f"Cannot write into '{folder}' ({exc.strerror or exc}); choose an "
                          "output folder you can write to.") from None


def write_take(path: Path, take: Take, vertices: np.ndarray | None = None,
               faces: np.ndarray | None = None,
               extras: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``take`` to ``path`` (``.json`` → JSON, ``.npz`` → NumPy), after the checks of
    :func:`check_output_file`; the file is complete or absent, never half-written."""
    path = Path(path)
    check_take_finite(take)
    if vertices is not None and not np.all(np.isfinite(vertices)):
        raise OutputError("The FLAME model produced non-finite vertices (NaN or infinity); "
                          "the FLAME file is broken.")
    if extras and not all(np.all(np.isfinite(v)) for v in extras.values()):
        raise OutputError("The blink, gaze or head layers hold non-finite values (NaN or "
                          "infinity); write the take with --no-extras and report this audio.")
    check_output_file(path)
    arrays = take_arrays(take, vertices, faces, extras)

    def write(f: BinaryIO) -> None:
        if path.suffix.lower() == ".json":
            payload = {k: (v.item() if v.ndim == 0 else v.tolist()) for k, v in arrays.items()}
            f.write(json.dumps(payload, allow_nan=False).encode())
        else:
            np.savez(f, **arrays)

    try:
        write_atomically(path, write)
    except OSError as exc:
        raise OutputError(f"Could not write '{path}' ({exc.strerror or exc}); choose an output "
                          "folder you can write to.") from None
    return path


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into a new file beside ``path``, then rename it over ``path``: a reader never
    sees half a file, and a failed write leaves what was there. The file gets the umask's
    mode, as any file the user creates (``os.open`` with 0o666)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
