# SPDX-License-Identifier: GPL-3.0-or-later
"""The ONNX Runtime backend: EMOTE's graphs (``server/graphs``) computing from the model's NumPy
weights in place. NumPy and onnxruntime only; this is what runs inside Blender.

wav2vec2's convolutional encoder runs in pieces of :data:`CNN_CHUNK` output frames, so the
512-channel activations of a 48 s window never exist at once (a few hundred MB otherwise). The
convolutions have no padding, so each piece's frames are exactly the whole window's. The first
layer's GroupNorm needs each channel's mean and variance over the whole window; the first
convolution is linear in the waveform's patches, so they follow exactly from the patches' mean
and covariance (a kernel × kernel matrix, float64), without running that convolution twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..graphs.emote import AUDIO, emote_graphs, interpolation, prepare_weights
from . import Cancelled, check_cancel

CNN_CHUNK = 250  # CNN output frames (5 s at 50 fps) per piece
PATCH_CHUNK = 64_000  # waveform patches (20 s) per piece of the statistics
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
        first = f"{AUDIO}feature_extractor.conv_layers.0"
        self._group_norm = None
        if self.arch.feat_extract_norm == "group":  # (W, b, γ, β) in float64
            conv = weights[f"{first}.conv.weight"].astype(np.float64)[:, 0, :]  # (C, k)
            bias = weights.get(f"{first}.conv.bias")
            self._group_norm = (conv, np.zeros(len(conv)) if bias is None
                                else bias.astype(np.float64),
                                weights[f"{first}.layer_norm.weight"].astype(np.float64),
                                weights[f"{first}.layer_norm.bias"].astype(np.float64))
        # The graphs take their weights with every run, as inputs, and compute from these
        # arrays in place: one copy of the weights in memory, however many graphs use them.
        # (Weights bound at session creation would be copied by ONNX Runtime 1.28 and later,
        # which refuse in-place initializers declared as external data.) The CNN's weights are
        # stored in its graph instead (see cnn_graph). The arrays never change.
        self._sessions: dict[str, Any] = {}
        self._feeds: dict[str, dict[str, np.ndarray]] = {}
        shared = _shared_arena(ort)
        for name, graph in emote_graphs(self.config, weights).items():
            self._sessions[name] = ort.InferenceSession(
                graph.model, self._options(shared), providers=["CPUExecutionProvider"])
            self._feeds[name] = {n: weights[n] for n in graph.weights}

    def _options(self, shared: bool) -> Any:
        """CPU, sequential, ``threads`` intra-op threads, all graph optimisations."""
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(self.threads or 0)  # 0: one per physical core
        options.inter_op_num_threads = 1
        # Activations come from one arena shared by every session (see _shared_arena); without
        # an arena each large activation is fresh pages on every run (measured on a 48 s
        # window: 1.54 s instead of 1.38, re-generation 124 ms instead of 29). No pre-packed
        # copies of the weights: 7 % faster matrix products, but 340 MB more.
        options.enable_cpu_mem_arena = shared
        if shared:
            options.add_session_config_entry("session.use_env_allocators", "1")
        options.add_session_config_entry("session.disable_prepacking", "1")
        # Each session has its own threads; spinning, they took the cores from the next
        # graph's (measured on a 10 s clip: 0.34 s with spinning, 0.28 s without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: warnings would go to the terminal
        return options

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnx", "runtime": f"ONNX Runtime {self._ort.__version__}",
                "device": "cpu",
                "graphs": "authored from the model's config when it was loaded "
                          f"({len(self._sessions)} graphs, weights given by name)"}

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
                feeds = self._first_layer(waveform)
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

    def _first_layer(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """The first convolution's weight and bias with the window's GroupNorm folded in:
        ``scale · (W x + b) + shift = (scale · W) x + (scale · b + shift)``."""
        assert self._group_norm is not None
        weight, bias = self._group_norm[0], self._group_norm[1]
        scale, shift = self._first_norm(waveform)
        return {"first_weight": (scale[:, None] * weight).astype(np.float32)[:, None, None, :],
                "first_bias": (scale * bias + shift).astype(np.float32)}

    def _first_norm(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first layer's GroupNorm over the whole window as a per-channel scale and shift
        (float64, (C,)).

        Output t of the first convolution is ``W · p_t + b`` for the waveform patch
        ``p_t = x[s·t : s·t + k]``, so its mean is ``W · m + b`` and its variance ``W C Wᵀ``,
        with m and C the patches' mean and covariance.

        Computed with ``einsum``, never NumPy's BLAS: its threads keep spinning for tens of
        milliseconds after a call and took a core from the convolutions that follow (measured:
        the first 5 s piece 0.12 s instead of 0.07 s)."""
        kernel, stride = self.arch.conv_kernel[0], self.arch.conv_stride[0]
        count = (len(waveform) - kernel) // stride + 1
        centred = waveform.astype(np.float64) - float(waveform.mean(dtype=np.float64))
        patches = np.lib.stride_tricks.as_strided(
            centred, shape=(count, kernel), strides=(stride * centred.itemsize,
                                                     centred.itemsize), writeable=False)
        total, outer = np.zeros(kernel), np.zeros((kernel, kernel))
        for p in range(0, count, PATCH_CHUNK):
            piece = patches[p:p + PATCH_CHUNK]
            total += piece.sum(axis=0)
            outer += np.einsum("ti,tj->ij", piece, piece)  # no BLAS, see the note above
        mean_patch = total / count
        covariance = outer / count - np.outer(mean_patch, mean_patch)
        assert self._group_norm is not None
        weight, bias, gamma, beta = self._group_norm
        # The waveform's mean, taken out of the patches, shifts output c by its weights' sum.
        mean = np.einsum("ck,k->c", weight, mean_patch) + bias + weight.sum(axis=1) * float(
            waveform.mean(dtype=np.float64))
        variance = np.einsum("ck,kl,cl->c", weight, covariance, weight)  # biased, as GroupNorm
        scale = gamma / np.sqrt(variance + GROUP_NORM_EPS)
        return scale, beta - mean * scale

    def decode(self, features: np.ndarray, condition: np.ndarray) -> np.ndarray:
        return self._run("decoder", {"features": np.ascontiguousarray(features, np.float32),
                                     "condition": np.ascontiguousarray(condition, np.float32)},
                         None, None)

    def _run(self, graph: str, feeds: dict[str, np.ndarray], options: Any,
             cancel: threading.Event | None, outputs: int = 1) -> Any:
        try:
            result = self._sessions[graph].run(None, {**self._feeds[graph], **feeds}, options)
        except Exception:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Cancelled.") from None
            raise
        return result[0] if outputs == 1 else result


_ARENA_LOCK = threading.Lock()
_arena: bool | None = None  # registered in this process: True; refused by the runtime: False


def _shared_arena(ort: Any) -> bool:
    """One CPU arena for every session of the process, registered once: the graphs run one
    after another, so it holds the largest one's activations, not the sum of three (separate
    arenas took a 10-minute clip to 1.36 GB). It grows by what is asked, not in powers of two,
    and keeps its size for the life of the worker. False where the runtime refuses it; the
    sessions then allocate per run."""
    global _arena
    with _ARENA_LOCK:
        if _arena is None:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                         ort.OrtMemType.DEFAULT)
                # max memory (0: no limit), extend strategy 1 (as requested), the rest default
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                _arena = True
            except Exception:  # noqa: BLE001 - any refusal leaves the per-session default
                _arena = False
        return _arena


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
