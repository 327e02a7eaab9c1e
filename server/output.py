# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing takes to disk: ``.npz`` (NumPy) or ``.json``, atomically (no half-written files)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .animator import Take


def take_arrays(take: Take, vertices: np.ndarray | None = None,
                faces: np.ndarray | None = None) -> dict[str, np.ndarray]:
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
    return arrays


def write_take(path: Path, take: Take, vertices: np.ndarray | None = None,
               faces: np.ndarray | None = None) -> Path:
    """Write ``take`` to ``path`` (``.json`` → JSON, anything else → ``.npz``)."""
    path = Path(path)
    arrays = take_arrays(take, vertices, faces)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if path.suffix.lower() == ".json":
                payload = {k: (v.item() if v.ndim == 0 else v.tolist()) for k, v in arrays.items()}
                f.write(json.dumps(payload).encode())
            else:
                np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
