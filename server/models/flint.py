# SPDX-License-Identifier: GPL-3.0-or-later
"""FLINT, the temporal VAE motion prior of EMOTE (v2): 103 FLAME numbers per frame ↔ one
128-d latent per 2^q frames. Module names follow the official checkpoint (``motion_encoder.*``,
``motion_decoder.*``)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import FlintConfig, check_config_keys, check_config_types
from .attention import BiasedTransformerEncoder

__all__ = ["Flint", "FlintConfig", "FlintDecoder", "FlintEncoder", "check_config_keys",
           "check_config_types"]


def _conv_block(in_dim: int, out_dim: int, stride: int = 1, pool: bool = False) -> nn.Sequential:
    """Conv1d (replicate padding) → LeakyReLU(0.2) → BatchNorm1d [→ MaxPool1d(2)]."""
    layers: list[nn.Module] = [
        nn.Conv1d(in_dim, out_dim, 5, stride=stride, padding=2, padding_mode="replicate"),
        nn.LeakyReLU(0.2),
        nn.BatchNorm1d(out_dim),
    ]
    if pool:
        layers.append(nn.MaxPool1d(2))
    return nn.Sequential(*layers)


class FlintDecoder(nn.Module):
    """Latents (B, T/8, 128) → FLAME parameters (B, T, 103)."""

    def __init__(self, config: FlintConfig) -> None:
        super().__init__()
        c = config
        first = nn.Sequential(
            nn.ConvTranspose1d(c.latent_dim, c.feature_dim, 5, stride=2, padding=2,
                               output_padding=1),
            nn.LeakyReLU(0.2),
            nn.BatchNorm1d(c.feature_dim),
        )
        self.expander = nn.ModuleList(
            [first]
            + [_conv_block(c.feature_dim, c.feature_dim) for _ in range(c.quant_factor - 1)])
        self.decoder_linear_embedding = nn.Linear(c.feature_dim, c.feature_dim)
        self.decoder_transformer = BiasedTransformerEncoder(
            c.feature_dim, c.n_heads, c.dim_feedforward, c.num_layers, dropout=0.0, period=1)
        self.post_transformer_linear = nn.Linear(c.feature_dim, c.feature_dim)
        self.cross_smooth_layer = nn.Conv1d(c.feature_dim, c.input_dim, c.smooth_kernel,
                                            padding=c.smooth_kernel // 2)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents.transpose(1, 2)  # (B, 128, T/8)
        for i, block in enumerate(self.expander):
            x = block(x)  # the transposed conv doubles time
            if i > 0:
                x = x.repeat_interleave(2, dim=2)
        x = self.decoder_linear_embedding(x.transpose(1, 2))  # (B, T, 128)
        x = self.post_transformer_linear(self.decoder_transformer(x))
        return self.cross_smooth_layer(x.transpose(1, 2)).transpose(1, 2)  # (B, T, 103)


class FlintEncoder(nn.Module):
    """FLAME parameters (B, T, 103) → Gaussian posterior over latents, each (B, T/8, 128)."""

    def __init__(self, config: FlintConfig) -> None:
        super().__init__()
        c = config
        self.squasher = nn.ModuleList(
            [_conv_block(c.input_dim, c.feature_dim, stride=2)]
            + [_conv_block(c.feature_dim, c.feature_dim, pool=True)
               for _ in range(c.quant_factor - 1)])
        self.encoder_linear_embedding = nn.Linear(c.feature_dim, c.feature_dim)
        self.encoder_transformer = BiasedTransformerEncoder(
            c.feature_dim, c.n_heads, c.dim_feedforward, c.num_layers, dropout=0.0, period=1)
        self.mean = nn.Linear(c.feature_dim, c.latent_dim)
        self.logvar = nn.Linear(c.feature_dim, c.latent_dim)

    def forward(self, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = motion.transpose(1, 2)  # (B, 103, T)
        for block in self.squasher:
            x = block(x)
        x = self.encoder_transformer(self.encoder_linear_embedding(x.transpose(1, 2)))
        return self.mean(x), self.logvar(x)  # (B, T/8, 128) each


class Flint(nn.Module):
    """The whole VAE (training and our FLINT bundles); EMOTE keeps only ``motion_decoder``."""

    def __init__(self, config: FlintConfig, with_encoder: bool = True) -> None:
        super().__init__()
        self.config = config
        self.motion_encoder = FlintEncoder(config) if with_encoder else None
        self.motion_decoder = FlintDecoder(config)

    def forward(self, motion: torch.Tensor, sample: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.motion_encoder is None:
            raise RuntimeError("This FLINT model was loaded without its encoder.")
        mean, logvar = self.motion_encoder(motion)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.motion_decoder(z), mean, logvar
