# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine: load a model once, encode audio once, generate takes for any condition.

``features = animator.encode(clip)`` runs wav2vec2 and the audio projection (the expensive part,
independent of the emotion) and caches the result by the audio's content hash;
``take = animator.decode(features, condition)`` runs only the condition-dependent regressor and
the FLINT decoder, so re-generating the same audio with another emotion is nearly free.

Audio of any length is processed in overlapping windows aligned to FLINT's 8-frame latent grid
and cross-faded in the overlap. A clip that fits one window is processed whole, giving exactly
the whole-clip result.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .audio import FPS, SAMPLES_PER_FRAME, AudioClip, normalise
from .checkpoints import LoadedModel
from .condition import ConditionSpace

DEFAULT_WINDOW = 1200  # frames (48 s): the official maximum, so such clips are processed whole
DEFAULT_OVERLAP = 96  # frames (3.84 s) shared by neighbouring windows, cross-faded

Progress = Callable[[str, float], None]


class Cancelled(Exception):
    """The job was cancelled by the user."""


@dataclass
class AudioFeatures:
    """Condition-free audio features of one clip, one tensor per window."""

    key: str
    frames: int
    windows: list[tuple[int, int]]  # [start, end) frames
    features: list[torch.Tensor]  # each (1, end - start, feature_dim)


@dataclass
class Take:
    """One generated performance: FLAME parameters at 25 fps."""

    expression: np.ndarray  # (T, E)
    jaw: np.ndarray  # (T, 3) axis-angle, radians, FLAME frame
    condition: np.ndarray  # (T, C) the condition used
    fps: int = FPS
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.expression.shape[0])


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


def plan_windows(frames: int, window: int, overlap: int, grid: int = 8) -> list[tuple[int, int]]:
    """Windows [start, end) covering ``frames``: as few as fit in ``window`` frames each, all of
    equal length (so every window has the same context), starts on the latent grid, and
    consecutive windows sharing at least ``overlap`` frames."""
    if window % grid or overlap % grid or not 0 <= overlap < window:
        raise ValueError(f"window ({window}) and overlap ({overlap}) must be multiples of {grid} "
                         "with overlap < window")
    if frames <= window:
        return [(0, frames)]
    count = math.ceil((frames - overlap) / (window - overlap))
    hop = math.ceil((frames - overlap) / count / grid) * grid  # ≤ window - overlap
    windows = []
    for k in range(count):
        start = k * hop
        windows.append((start, min(start + hop + overlap, frames)))
        if start + hop + overlap >= frames:
            break
    return windows


def crossfade(parts: list[np.ndarray], windows: list[tuple[int, int]], frames: int) -> np.ndarray:
    """Join per-window outputs, blending linearly where consecutive windows overlap."""
    out = np.zeros((frames,) + parts[0].shape[1:], dtype=np.float64)
    done = 0  # frames [0, done) are final unless the next window overlaps them
    for (start, end), part in zip(windows, parts, strict=True):
        if start < done:
            n = done - start
            ramp = ((np.arange(n) + 0.5) / n).reshape((n,) + (1,) * (part.ndim - 1))
            out[start:done] = (1 - ramp) * out[start:done] + ramp * part[:n]
            out[done:end] = part[n:]
        else:
            out[start:end] = part
        done = end
    return out


class Animator:
    """Loaded model + feature cache. Thread-safe for one job at a time per instance."""

    def __init__(self, loaded: LoadedModel, device: str = "auto", cache_size: int = 8,
                 window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP) -> None:
        self.loaded = loaded
        self.device = pick_device(device)
        self.model = loaded.model.to(self.device).eval()
        config = loaded.config
        self.space = ConditionSpace(tuple(config.emotions), tuple(config.intensities),
                                    tuple(config.styles))
        self.grid = config.flint.frames_per_latent
        self.window = window
        self.overlap = overlap
        self.cache_size = cache_size
        self._cache: OrderedDict[str, AudioFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"audio_encodes": 0, "cache_hits": 0, "decodes": 0}

    # ---------------------------------------------------------------------------------------
    def encode(self, clip: AudioClip, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> AudioFeatures:
        """wav2vec2 + audio projection for ``clip``, from the cache when it was seen before."""
        frames = clip.frames
        key = self._cache_key(clip)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.stats["cache_hits"] += 1
                return self._cache[key]
        # The official model frames audio as (T, 640): trailing samples are dropped, and the
        # processor normalises what is kept, over the whole clip.
        wave = torch.from_numpy(normalise(clip.samples[: frames * SAMPLES_PER_FRAME]))
        windows = plan_windows(frames, self.window, self.overlap, self.grid)
        features = []
        with torch.inference_mode(), _checked_in_layers(self.model.audio_model, cancel):
            for i, (start, end) in enumerate(windows):
                _check(cancel)
                chunk = wave[start * SAMPLES_PER_FRAME: end * SAMPLES_PER_FRAME]
                chunk = chunk.to(self.device)[None]
                features.append(self.model.encode_audio(chunk, end - start))
                self.stats["audio_encodes"] += 1
                if progress:
                    progress("audio", (i + 1) / len(windows))
        result = AudioFeatures(key=key, frames=frames, windows=windows, features=features)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def decode(self, features: AudioFeatures, condition: Any,
               progress: Progress | None = None, cancel: threading.Event | None = None) -> Take:
        """Expression and jaw for ``condition`` (names dict, (C,) vector, or (N, C) curve)."""
        per_frame = self.space.per_frame(condition, features.frames)
        cond = torch.from_numpy(per_frame).to(self.device)
        parts = []
        with torch.inference_mode():
            pairs = zip(features.windows, features.features, strict=True)
            for i, ((start, end), feats) in enumerate(pairs):
                _check(cancel)
                motion = self.model.decode(feats, cond[start:end][None])  # (1, n, 103)
                parts.append(motion[0].double().cpu().numpy())
                if progress:
                    progress("motion", (i + 1) / len(features.windows))
        self.stats["decodes"] += 1
        motion = crossfade(parts, features.windows, features.frames)
        n_exp = self.loaded.config.n_expression
        mean_condition = per_frame.mean(axis=0)
        return Take(expression=motion[:, :n_exp].astype(np.float32),
                    jaw=motion[:, n_exp:n_exp + 3].astype(np.float32),
                    condition=per_frame, label=self.space.describe(mean_condition))

    def generate(self, clip: AudioClip, condition: Any, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> Take:
        features = self.encode(clip, progress, cancel)
        return self.decode(features, condition, progress, cancel)

    def _cache_key(self, clip: AudioClip) -> str:
        """Features depend on the samples and on the windowing, nothing else."""
        return f"{clip.content_hash()}:{self.window}:{self.overlap}"

    def cached(self, clip: AudioClip) -> bool:
        return self._cache_key(clip) in self._cache


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Cancelled.")


@contextmanager
def _checked_in_layers(module: torch.nn.Module, cancel: threading.Event | None
                       ) -> Iterator[None]:
    """Check ``cancel`` before each innermost layer of ``module`` runs, so that a cancel stops
    an audio window (up to 48 s of speech through wav2vec2) within one layer, not at its end:
    that takes seconds when the CPU is shared, e.g. with a render."""
    if cancel is None:
        yield
        return
    handles = [layer.register_forward_pre_hook(lambda *_: _check(cancel))
               for layer in module.modules() if next(layer.children(), None) is None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
