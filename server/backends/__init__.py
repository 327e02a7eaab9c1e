# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the networks run: ONNX Runtime (NumPy, no torch: the artist's path, inside Blender's
own Python) or torch (training, export, CUDA and Apple GPUs).

A backend turns one audio window into condition-free features and features plus a condition
into FLAME motion; :class:`server.animator.Animator` does everything around it (windows,
cross-fades, the feature cache, progress). Both give the same numbers to about 1e-5.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from typing import Any, Protocol

import numpy as np

from ..protocol import BACKENDS, DEVICES


class Cancelled(Exception):
    """The job was cancelled by the user."""


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Cancelled.")


class Backend(Protocol):
    name: str  # "onnx" or "torch"
    device: str  # where it runs: "cpu", "cuda", "mps"

    def encode_audio(self, waveform: np.ndarray, frames: int,
                     cancel: threading.Event | None = None) -> np.ndarray:
        """Normalised 16 kHz samples (S,) → features (frames, feature_dim) float32."""

    def decode(self, features: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """Features (T, feature_dim) + condition (T, C) → motion (T, 103) float32."""

    def describe(self) -> dict[str, Any]:
        """What runs the model, for ``info``."""


def _installed(module: str, distribution: str) -> str | None:
    """The installed version of ``distribution`` when ``module`` can be imported, without
    importing it (importing torch alone takes most of a second)."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def available() -> dict[str, str | None]:
    """{"onnx": ONNX Runtime's version or None, "torch": torch's version or None}."""
    return {"onnx": _installed("onnxruntime", "onnxruntime"), "torch": _installed("torch", "torch")}


def choose(backend: str = "auto", device: str = "auto") -> str:
    """The backend to use: ``auto`` is ONNX Runtime when it is installed, unless a GPU device
    (cuda, mps) is asked for, which only the torch backend drives."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend '{backend}': use {', '.join(BACKENDS)}.")
    if device not in DEVICES:
        raise ValueError(f"Unknown device '{device}': use {', '.join(DEVICES)}.")
    found = available()
    gpu = device in ("cuda", "mps")
    if backend == "auto":
        backend = "torch" if gpu or found["onnx"] is None else "onnx"
    if backend == "onnx":
        if gpu:
            raise ValueError(f"The ONNX Runtime backend runs on the CPU; for the '{device}' "
                             "device use the torch backend (--backend torch).")
        if found["onnx"] is None:
            raise ValueError("ONNX Runtime is not installed in this Python (pip install "
                             "onnxruntime), and the ONNX backend needs it.")
    elif found["torch"] is None:
        raise ValueError("torch is not installed in this Python, and the torch backend needs "
                         "it" + (f" for the '{device}' device" if gpu else "") + ". Use the ONNX "
                         "backend (onnxruntime), or set up a Python with torch "
                         "(bash tools/setup.sh).")
    return backend


def make_backend(source: Any, backend: str = "auto", device: str = "auto",
                 threads: int | None = None) -> Backend:
    """A backend running the model of ``source`` (a :class:`server.checkpoints.ModelSource`)."""
    if choose(backend, device) == "onnx":
        from .onnx_runtime import OnnxBackend

        return OnnxBackend(source, threads=threads)
    from .pytorch import TorchBackend

    return TorchBackend.from_source(source, device, threads=threads)
