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


class AudioEncoder(nn.Module):
    """Normalised 16 kHz waveform (B, S) → per-frame features (B, T, hidden_size)."""

    def __init__(self, config_overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        from transformers import Wav2Vec2Model

        self.model = Wav2Vec2Model(wav2vec2_config(config_overrides))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def cnn_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The 7-layer convolutional feature encoder: (B, S) → (B, 512, L) at 50 fps."""
        return self.model.feature_extractor(waveform)

    def forward(self, waveform: torch.Tensor, frames: int) -> torch.Tensor:
        features = self.cnn_features(waveform)  # (B, 512, L)
        # EMOTE: linear resampling to exactly T frames, align_corners=True, before projection.
        features = F.interpolate(features, size=frames, mode="linear", align_corners=True)
        hidden, _ = self.model.feature_projection(features.transpose(1, 2))  # (B, T, 768)
        return self.model.encoder(hidden).last_hidden_state  # (B, T, 768)
