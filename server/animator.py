# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine: load a model once, encode audio once, generate takes for any condition.

``features = animator.encode(clip)`` runs wav2vec2 and the audio projection (the expensive part,
independent of the emotion) and caches the result by the audio's content hash;
``take = animator.decode(features, condition)`` runs only the condition-dependent regressor and
the FLINT decoder, so re-generating the same audio with another emotion is nearly free.

Audio of any length is processed in overlapping windows aligned to FLINT's 8-frame latent grid
and cross-faded in the overlap. A clip that fits one window is processed whole, giving exactly
the whole-clip result. The networks run in a backend (:mod:`server.backends`): ONNX Runtime or
torch; this module imports neither.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .audio import FPS, SAMPLES_PER_FRAME, AudioClip, normalise
from .backends import Backend, Cancelled, check_cancel, make_backend
from .checkpoints import LoadedModel, ModelSource
from .condition import ConditionSpace

__all__ = ["Animator", "AudioFeatures", "Cancelled", "Take", "crossfade", "plan_windows"]

DEFAULT_WINDOW = 1200  # frames (48 s): the official maximum, so such clips are processed whole
DEFAULT_OVERLAP = 96  # frames (3.84 s) shared by neighbouring windows, cross-faded

Progress = Callable[[str, float], None]


@dataclass
class AudioFeatures:
    """Condition-free audio features of one clip, one tensor per window."""

    key: str
    frames: int
    windows: list[tuple[int, int]]  # [start, end) frames
    features: list[np.ndarray]  # each (end - start, feature_dim) float32


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
    """A model in a backend + feature cache. Thread-safe for one job at a time per instance.

    ``model`` is a :class:`~server.checkpoints.ModelSource` (run in the ``backend`` chosen by
    :func:`server.backends.choose`) or a :class:`~server.checkpoints.LoadedModel` whose torch
    modules are already built (run by torch)."""

    def __init__(self, model: ModelSource, device: str = "auto", cache_size: int = 8,
                 window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP,
                 backend: str = "auto", threads: int | None = None) -> None:
        config = model.config
        self.grid = config.flint.frames_per_latent
        plan_windows(0, window, overlap, self.grid)  # a bad window is an error now, not later
        self._info = model.info()
        if isinstance(model, LoadedModel) and model.model is not None:
            from .backends.pytorch import TorchBackend

            self.backend: Backend = TorchBackend(model.model, device, threads)
            self.loaded = model
        else:
            self.backend = make_backend(model, backend, device, threads)
            # The backend holds the weights now; this keeps what the model is, not a second copy.
            self.loaded = dataclasses.replace(model, state={})
        self.device = self.backend.device
        self.space = ConditionSpace(tuple(config.emotions), tuple(config.intensities),
                                    tuple(config.styles))
        self.window = window
        self.overlap = overlap
        self.cache_size = cache_size
        self._cache: OrderedDict[str, AudioFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"audio_encodes": 0, "cache_hits": 0, "decodes": 0}

    def info(self) -> dict[str, Any]:
        """The model's description plus what runs it."""
        return {**self._info, **self.backend.describe()}

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
        wave = normalise(clip.samples[: frames * SAMPLES_PER_FRAME])
        windows = plan_windows(frames, self.window, self.overlap, self.grid)
        features = []
        for i, (start, end) in enumerate(windows):
            check_cancel(cancel)
            chunk = wave[start * SAMPLES_PER_FRAME: end * SAMPLES_PER_FRAME]
            features.append(self.backend.encode_audio(chunk, end - start, cancel))
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
        cond = np.ascontiguousarray(per_frame, np.float32)
        parts = []
        pairs = zip(features.windows, features.features, strict=True)
        for i, ((start, end), feats) in enumerate(pairs):
            check_cancel(cancel)
            parts.append(self.backend.decode(feats, cond[start:end]).astype(np.float64))
            if progress:
                progress("motion", (i + 1) / len(features.windows))
        self.stats["decodes"] += 1
        motion = crossfade(parts, features.windows, features.frames)
        n_exp = self.loaded.config.n_expression
        expression = motion[:, :n_exp]
        if self.loaded.expression_components is not None:
            expression[:, self.loaded.expression_components:] = 0.0
        mean_condition = per_frame.mean(axis=0)
        return Take(expression=expression.astype(np.float32),
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
