# SPDX-License-Identifier: GPL-3.0-or-later
"""The EMOTE v2 regressor: audio features + a per-frame condition → FLINT latents → FLAME
expression and jaw. Attribute names follow the official checkpoint keys (``audio_model``,
``sequence_encoder``, ``sequence_decoder.obj_vector.map``, ``...bert_decoder``,
``...squasher_2``, ``...motion_prior.motion_decoder``), so loading is a prefix map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EmoteConfig, FlintConfig
from ..protocol import MEAD_STYLES
from .attention import BiasedTransformerEncoder
from .flint import FlintDecoder
from .wav2vec2 import AudioEncoder

__all__ = ["MEAD_STYLES", "EmoteConfig", "EmoteModel", "FlintConfig"]


class SequenceEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ConditionEmbedding(nn.Module):
    """The style map: per-frame condition (43) → (128). Linear, so mixtures of one-hots mix."""

    def __init__(self, condition_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.map = nn.Linear(condition_dim, out_dim, bias=bias)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return self.map(condition)


class StackLinearSquash(nn.Module):
    """Concatenate each 8 consecutive frames and project: (B, T, F) → (B, T/8, latent)."""

    def __init__(self, feature_dim: int, frames: int, out_dim: int) -> None:
        super().__init__()
        self.frames = frames
        self.linear = nn.Linear(feature_dim * frames, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return self.linear(x.reshape(batch, length // self.frames, self.frames * dim))


class MotionPrior(nn.Module):
    def __init__(self, config: FlintConfig) -> None:
        super().__init__()
        self.motion_decoder = FlintDecoder(config)


class EmoteDecoder(nn.Module):
    def __init__(self, config: EmoteConfig) -> None:
        super().__init__()
        c = config
        width = 2 * c.feature_dim  # [audio, style] concatenated
        self.frames_per_latent = c.flint.frames_per_latent
        self.obj_vector = ConditionEmbedding(c.condition_dim, c.feature_dim, c.style_bias)
        self.bert_decoder = BiasedTransformerEncoder(
            width, c.n_heads, c.dim_feedforward, c.num_layers, c.dropout, c.period)
        self.decoder = nn.Linear(width, c.feature_dim)
        self.squasher_2 = StackLinearSquash(c.feature_dim, self.frames_per_latent,
                                            c.flint.latent_dim)
        self.motion_prior = MotionPrior(c.flint)

    def latents(self, audio: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) audio + (B, T, C) condition → FLINT latents (B, ⌈T/8⌉, 128)."""
        x = torch.cat([audio, self.obj_vector(condition)], dim=-1)  # (B, T, 256)
        x = self.decoder(self.bert_decoder(x))  # (B, T, 128)
        pad = -x.shape[1] % self.frames_per_latent
        return self.squasher_2(F.pad(x, (0, 0, 0, pad)))  # zero frames at the end

    def forward(self, audio: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        frames = audio.shape[1]
        motion = self.motion_prior.motion_decoder(self.latents(audio, condition))
        return motion[:, :frames]  # (B, T, 103)


class EmoteModel(nn.Module):
    def __init__(self, config: EmoteConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_model = AudioEncoder(config.wav2vec2)
        self.sequence_encoder = SequenceEncoder(self.audio_model.hidden_size, config.feature_dim)
        self.sequence_decoder = EmoteDecoder(config)

    def encode_audio(self, waveform: torch.Tensor, frames: int) -> torch.Tensor:
        """Steps 2–5: normalised waveform (B, S) → condition-free features (B, T, 128)."""
        return self.sequence_encoder(self.audio_model(waveform, frames))

    def decode(self, audio_features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Steps 6–11: features (B, T, 128) + condition (B, T, C) → (B, T, 103)."""
        return self.sequence_decoder(audio_features, condition)
