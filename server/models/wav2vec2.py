# SPDX-License-Identifier: GPL-3.0-or-later
"""wav2vec 2.0 with EMOTE's change: CNN features are resampled to the video frame rate *before*
the feature projection and the transformer, so the output has exactly one vector per frame.

Built from a ``transformers.Wav2Vec2Config`` (never from a hub): the official EMOTE checkpoint
carries the fine-tuned weights, and our bundles carry theirs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def wav2vec2_config(overrides: dict[str, Any] | None = None) -> Any:
    """``Wav2Vec2Config``: the standard wav2vec2-base defaults, with ``overrides`` applied."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**(overrides or {}))


CNN_CHUNK = 250  # output frames (5 s at 50 fps) per piece of the convolutional encoder


def _conv_lengths(samples: int, kernels: list[int], strides: list[int]) -> list[int]:
    lengths = []
    for kernel, stride in zip(kernels, strides, strict=True):
        samples = max(0, (samples - kernel) // stride + 1)
        lengths.append(samples)
    return lengths


def _receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(total stride, receptive field) in samples of the stacked convolutions (320, 400)."""
    field, stride = 1, 1
    for kernel, step in zip(kernels, strides, strict=True):
        field += (kernel - 1) * stride
        stride *= step
    return stride, field


class AudioEncoder(nn.Module):
    """Normalised 16 kHz waveform (B, S) → per-frame features (B, T, hidden_size)."""

    def __init__(self, config_overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        from transformers import Wav2Vec2Model

        self.model = Wav2Vec2Model(wav2vec2_config(config_overrides))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def cnn_features(self, waveform: torch.Tensor, chunk: int = CNN_CHUNK) -> torch.Tensor:
        """The 7-layer convolutional feature encoder: (B, S) → (B, 512, L) at 50 fps.

        Long inputs are run in chunks of ``chunk`` output frames: the convolutions have no
        padding, so each chunk's frames are exactly those of the whole input, and the first
        layer's GroupNorm (one group per channel, statistics over all time) gets the statistics
        of the whole input from a first pass. Same numbers (to float rounding), a fraction of
        the memory traffic: the 512-channel activations of a 48 s window never exist at once.
        """
        extractor = self.model.feature_extractor
        config = self.model.config
        frozen = not (torch.is_grad_enabled()
                      and any(p.requires_grad for p in extractor.parameters()))
        lengths = _conv_lengths(waveform.shape[-1], config.conv_kernel, config.conv_stride)
        if config.feat_extract_norm != "group" or not frozen or lengths[-1] <= chunk:
            return extractor(waveform)
        return self._chunked_cnn(waveform, lengths, chunk)

    def _chunked_cnn(self, waveform: torch.Tensor, lengths: list[int], chunk: int
                     ) -> torch.Tensor:
        config = self.model.config
        layers = self.model.feature_extractor.conv_layers
        first = layers[0]
        k0, s0 = config.conv_kernel[0], config.conv_stride[0]
        # Pass 1: per-channel mean and variance of the first conv over the whole input, merged
        # chunk by chunk (Chan et al.) in float64.
        count, mean, m2 = 0, None, None
        step = chunk * 64
        for p in range(0, lengths[0], step):
            q = min(lengths[0], p + step)
            out = first.conv(waveform[:, None, s0 * p: s0 * (q - 1) + k0]).double()
            n = out.shape[-1]
            chunk_mean = out.mean(-1)
            chunk_m2 = ((out - chunk_mean[..., None]) ** 2).sum(-1)
            if mean is None:
                count, mean, m2 = n, chunk_mean, chunk_m2
            else:
                delta = chunk_mean - mean
                total = count + n
                mean = mean + delta * n / total
                m2 = m2 + chunk_m2 + delta**2 * count * n / total
                count = total
        norm = first.layer_norm
        scale = norm.weight.double() / torch.sqrt(m2 / count + norm.eps)  # biased variance
        shift = norm.bias.double() - mean * scale
        scale, shift = scale.to(waveform.dtype)[..., None], shift.to(waveform.dtype)[..., None]
        # Pass 2: frames [a, b) of the last layer come from samples [stride·a, stride·(b−1)+rf).
        stride, field = _receptive_field(config.conv_kernel, config.conv_stride)
        pieces = []
        for a in range(0, lengths[-1], chunk):
            b = min(lengths[-1], a + chunk)
            x = first.conv(waveform[:, None, stride * a: stride * (b - 1) + field])
            x = first.activation(x * scale + shift)
            for layer in layers[1:]:
                x = layer(x)
            pieces.append(x)
        return torch.cat(pieces, dim=-1)

    def forward(self, waveform: torch.Tensor, frames: int) -> torch.Tensor:
        features = self.cnn_features(waveform)  # (B, 512, L)
        # EMOTE: linear resampling to exactly T frames, align_corners=True, before projection.
        features = F.interpolate(features, size=frames, mode="linear", align_corners=True)
        hidden, _ = self.model.feature_projection(features.transpose(1, 2))  # (B, T, 768)
        return self.model.encoder(hidden).last_hidden_state  # (B, T, 768)
