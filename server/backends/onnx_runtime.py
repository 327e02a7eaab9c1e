# SPDX-License-Identifier: GPL-3.0-or-later
"""The ONNX Runtime backend: EMOTE's graphs (``server/graphs``) with the model's NumPy weights
bound at session creation. NumPy and onnxruntime only; this is what runs inside Blender.

wav2vec2's convolutional encoder runs in pieces of :data:`CNN_CHUNK` output frames, so the
512-channel activations of a 48 s window never exist at once (a few hundred MB otherwise). The
convolutions have no padding, so each piece's frames are exactly the whole window's; the first
layer's GroupNorm needs statistics over the whole window, which a first pass over the first
convolution alone collects piece by piece and merges in float64 (Chan et al.).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..graphs.emote import AUDIO, emote_graphs, interpolation, prepare_weights
from . import Cancelled, check_cancel

CNN_CHUNK = 500  # CNN output frames (10 s at 50 fps) per piece
STATISTICS_CHUNK = 64_000  # first-convolution frames (20 s) per piece of the statistics pass
GROUP_NORM_EPS = 1e-5


class OnnxBackend:
    name = "onnx"
    device = "cpu"

    def __init__(self, source: Any, threads: int | None = None) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.config = source.config
        self.arch = source.config.audio
        self.threads = threads
        weights = prepare_weights(self.config, source.state)
        first_norm = f"{AUDIO}feature_extractor.conv_layers.0.layer_norm"
        self._group_norm = (weights[f"{first_norm}.weight"].astype(np.float64),
                            weights[f"{first_norm}.bias"].astype(np.float64)
                            ) if self.arch.feat_extract_norm == "group" else None
        # The sessions compute from these arrays in place (SessionOptions.add_initializer):
        # one copy of the weights in memory, however many graphs use them. They must outlive
        # the sessions and never change.
        self._weights = weights
        self._values: list[Any] = []  # the OrtValues wrapping them
        self._sessions: dict[str, Any] = {}
        for name, graph in emote_graphs(self.config).items():
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.intra_op_num_threads = int(threads or 0)  # 0: one per physical core
            options.inter_op_num_threads = 1
            # Plain allocations instead of an arena: the arena keeps its high-water mark (twice
            # the window's activations) for the life of the worker. No pre-packed copies of the
            # weights either: measured, they saved nothing on a 10 s clip and cost 340 MB.
            options.enable_cpu_mem_arena = False
            options.add_session_config_entry("session.disable_prepacking", "1")
            options.log_severity_level = 3  # errors only: warnings would go to the terminal
            names = list(graph.weights)
            values = [ort.OrtValue.ortvalue_from_numpy(weights[n]) for n in names]
            for weight_name, value in zip(names, values, strict=True):
                options.add_initializer(weight_name, value)
            self._values.extend(values)
            self._sessions[name] = ort.InferenceSession(graph.model, options,
                                                        providers=["CPUExecutionProvider"])

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnx", "runtime": f"ONNX Runtime {self._ort.__version__}",
                "device": "cpu",
                "graphs": "authored from the model's config when it was loaded "
                          f"({len(self._sessions)} graphs, weights bound by name)"}

    # ---------------------------------------------------------------------------------------
    def encode_audio(self, waveform: np.ndarray, frames: int,
                     cancel: threading.Event | None = None) -> np.ndarray:
        waveform = np.ascontiguousarray(waveform, np.float32)
        arch = self.arch
        length = arch.feature_count(len(waveform))
        if length < 1:
            raise ValueError("The audio window is too short for the audio encoder.")
        with _run_options(self._ort, cancel) as options:
            feeds: dict[str, np.ndarray] = {}
            if self._group_norm is not None:
                scale, shift = self._first_norm(waveform, options, cancel)
                feeds = {"scale": scale, "shift": shift}
            stride, field = arch.samples_per_feature, arch.receptive_field
            pieces = []
            for a in range(0, length, CNN_CHUNK):
                check_cancel(cancel)
                b = min(length, a + CNN_CHUNK)
                piece = waveform[stride * a: stride * (b - 1) + field][None]
                pieces.append(self._run("cnn", {"waveform": piece, **feeds}, options, cancel))
            cnn = np.concatenate(pieces, axis=2)  # (1, C, L)
            check_cancel(cancel)
            inputs = {"cnn_features": cnn, **interpolation(length, frames)}
            return self._run("audio_encoder", inputs, options, cancel)  # (T, F)

    def _first_norm(self, waveform: np.ndarray, options: Any,
                    cancel: threading.Event | None) -> tuple[np.ndarray, np.ndarray]:
        """The first layer's GroupNorm as a per-channel scale and shift over the whole window."""
        kernel, stride = self.arch.conv_kernel[0], self.arch.conv_stride[0]
        first = max(0, (len(waveform) - kernel) // stride + 1)
        count, mean, m2 = 0, None, None
        for p in range(0, first, STATISTICS_CHUNK):
            check_cancel(cancel)
            q = min(first, p + STATISTICS_CHUNK)
            piece = waveform[stride * p: stride * (q - 1) + kernel][None]
            piece_mean, piece_m2 = self._run("cnn_statistics", {"waveform": piece}, options,
                                             cancel, outputs=2)
            n = q - p
            piece_mean, piece_m2 = piece_mean.astype(np.float64), piece_m2.astype(np.float64)
            if mean is None:
                count, mean, m2 = n, piece_mean, piece_m2
            else:
                total = count + n
                delta = piece_mean - mean
                mean = mean + delta * n / total
                m2 = m2 + piece_m2 + delta**2 * count * n / total
                count = total
        assert mean is not None and m2 is not None and self._group_norm is not None
        gamma, beta = self._group_norm
        scale = gamma / np.sqrt(m2 / count + GROUP_NORM_EPS)  # biased variance, as GroupNorm
        shift = beta - mean * scale
        return (scale.astype(np.float32)[:, None], shift.astype(np.float32)[:, None])

    def decode(self, features: np.ndarray, condition: np.ndarray) -> np.ndarray:
        return self._run("decoder", {"features": np.ascontiguousarray(features, np.float32),
                                     "condition": np.ascontiguousarray(condition, np.float32)},
                         None, None)

    def _run(self, graph: str, feeds: dict[str, np.ndarray], options: Any,
             cancel: threading.Event | None, outputs: int = 1) -> Any:
        try:
            result = self._sessions[graph].run(None, feeds, options)
        except Exception:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Cancelled.") from None
            raise
        return result[0] if outputs == 1 else result


@contextmanager
def _run_options(ort: Any, cancel: threading.Event | None) -> Iterator[Any]:
    """RunOptions whose ``terminate`` flag is raised as soon as ``cancel`` is set, so a cancel
    stops a long window inside a run, within one operator, not at its end."""
    options = ort.RunOptions()
    if cancel is None:
        yield options
        return
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.01):
                options.terminate = True
                return

    threading.Thread(target=watch, name="emote-cancel", daemon=True).start()
    try:
        yield options
    finally:
        done.set()
