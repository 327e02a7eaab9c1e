# SPDX-License-Identifier: GPL-3.0-or-later
"""The torch backend: the ``server/models`` modules, on the CPU, CUDA or Apple's MPS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from . import check_cancel


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU. An unavailable explicit choice is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but this Python's torch has no usable CUDA device "
                         f"(torch {torch.__version__}). Choose 'auto' or 'cpu', or install a "
                         "CUDA build of torch.")
    if requested not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unknown device '{requested}': use auto, cpu, cuda or mps.")
    return torch.device(requested)


class TorchBackend:
    name = "torch"

    def __init__(self, model: Any, device: str = "auto", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self._device = pick_device(device)
        self.model = model.to(self._device).eval()
        self.device = self._device.type

    @classmethod
    def from_source(cls, source: Any, device: str = "auto", threads: int | None = None
                    ) -> TorchBackend:
        from ..checkpoints import build_torch_model

        return cls(build_torch_model(source), device, threads)

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "runtime": f"torch {torch.__version__}",
                "device": str(self._device), "graphs": None}

    def encode_audio(self, waveform: np.ndarray, frames: int,
                     cancel: threading.Event | None = None) -> np.ndarray:
        wave = torch.from_numpy(np.ascontiguousarray(waveform, np.float32)).to(self._device)
        with torch.inference_mode(), _checked_in_layers(self.model.audio_model, cancel):
            features = self.model.encode_audio(wave[None], frames)
        return features[0].float().cpu().numpy()

    def decode(self, features: np.ndarray, condition: np.ndarray) -> np.ndarray:
        feats = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(self._device)
        cond = torch.from_numpy(np.ascontiguousarray(condition, np.float32)).to(self._device)
        with torch.inference_mode():
            motion = self.model.decode(feats[None], cond[None])
        return motion[0].float().cpu().numpy()


@contextmanager
def _checked_in_layers(module: torch.nn.Module, cancel: threading.Event | None
                       ) -> Iterator[None]:
    """Check ``cancel`` before each innermost layer of ``module`` runs, so that a cancel stops
    an audio window (up to 48 s of speech through wav2vec2) within one layer, not at its end:
    that takes seconds when the CPU is shared, e.g. with a render."""
    if cancel is None:
        yield
        return
    handles = [layer.register_forward_pre_hook(lambda *_: check_cancel(cancel))
               for layer in module.modules() if next(layer.children(), None) is None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
