# SPDX-License-Identifier: GPL-3.0-or-later
"""Lightning modules: FLINT (the motion prior VAE) and EMOTE stage 1."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..audio import SAMPLES_PER_FRAME
from ..models.emote import EmoteConfig, EmoteModel
from ..models.flint import Flint, FlintConfig
from .geometry import FlameVertices, kl_per_latent_frame, masked_vertex_mse


class FlintModule(L.LightningModule):
    """Vertex MSE × 1e6 + per-latent-frame KL × 1e-3, Adam 1e-4 (EMOTE §4)."""

    def __init__(self, config: FlintConfig, vertices: FlameVertices, lr: float = 1e-4,
                 vertex_weight: float = 1e6, kl_weight: float = 1e-3) -> None:
        super().__init__()
        self.flint = Flint(config)
        self.vertices = vertices
        self.lr, self.vertex_weight, self.kl_weight = lr, vertex_weight, kl_weight

    def losses(self, batch: dict[str, torch.Tensor], sample: bool = True
               ) -> dict[str, torch.Tensor]:
        motion = batch["motion"]
        reconstruction, mean, logvar = self.flint(motion, sample=sample)
        vertex = masked_vertex_mse(self.vertices, reconstruction, motion, batch.get("mask"))
        kl = kl_per_latent_frame(mean, logvar)
        total = self.vertex_weight * vertex + self.kl_weight * kl
        return {"loss": total, "vertex": vertex, "kl": kl}

    def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True,
                      batch_size=len(batch["motion"]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], index: int) -> None:
        losses = self.losses(batch, sample=False)
        self.log_dict({f"val/{k}": v for k, v in losses.items()},
                      batch_size=len(batch["motion"]))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.flint.parameters(), lr=self.lr)


def normalise_batch(audio: torch.Tensor) -> torch.Tensor:
    """wav2vec2's processor per window: zero mean, unit variance (eps 1e-7)."""
    mean = audio.mean(dim=1, keepdim=True)
    var = audio.var(dim=1, unbiased=False, keepdim=True)
    return (audio - mean) / torch.sqrt(var + 1e-7)


class EmoteStage1(L.LightningModule):
    """EMOTE stage 1: masked vertex MSE; wav2vec2 trained except its CNN; FLINT frozen; the
    regressor's 256→128 output layer starts at zero (EMOTE §7)."""

    def __init__(self, config: EmoteConfig, flint: Flint, vertices: FlameVertices,
                 lr: float = 1e-4) -> None:
        super().__init__()
        self.model = EmoteModel(config)
        decoder = self.model.sequence_decoder
        decoder.motion_prior.motion_decoder.load_state_dict(flint.motion_decoder.state_dict())
        for parameter in decoder.motion_prior.parameters():
            parameter.requires_grad_(False)
        self.model.audio_model.model.feature_extractor._freeze_parameters()
        torch.nn.init.zeros_(decoder.decoder.weight)
        torch.nn.init.zeros_(decoder.decoder.bias)
        self.vertices = vertices
        self.lr = lr

    def train(self, mode: bool = True) -> EmoteStage1:
        super().train(mode)
        self.model.sequence_decoder.motion_prior.eval()  # BatchNorm on running statistics
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        audio = normalise_batch(batch["audio"])
        frames = audio.shape[1] // SAMPLES_PER_FRAME
        features = self.model.encode_audio(audio, frames)
        condition = batch["condition"][:, None].expand(-1, frames, -1)
        return self.model.decode(features, condition)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        predicted = self(batch)
        vertex = masked_vertex_mse(self.vertices, predicted, batch["motion"], batch["mask"])
        return {"loss": vertex, "vertex": vertex}

    def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True,
                      batch_size=len(batch["motion"]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], index: int) -> None:
        losses = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()},
                      batch_size=len(batch["motion"]))

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.lr)
