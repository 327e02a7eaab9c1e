# SPDX-License-Identifier: GPL-3.0-or-later
"""Lightning modules: FLINT (the motion prior VAE) and EMOTE stage 1."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..audio import SAMPLES_PER_FRAME
from ..models.emote import EmoteConfig, EmoteModel
from ..models.flint import Flint, FlintConfig
from .geometry import FlameVertices, kl_per_latent_frame, masked_vertex_mse

COSINE_FLOOR = 0.02  # the cosine schedule ends at this fraction of the initial rate


class _TrainingModule(L.LightningModule):
    """Logging and optimisation shared by the stages: subclasses give ``losses(batch)`` (a dict
    with ``loss``) and ``trainable()``. ``lr_schedule``: ``constant`` (EMOTE's) or ``cosine``
    (from ``lr`` down to ``COSINE_FLOOR × lr`` at ``total_steps``, step by step)."""

    lr: float
    lr_schedule: str = "constant"
    total_steps: int = 0

    def validation_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.losses(batch)

    def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True,
                      batch_size=len(batch["motion"]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], index: int) -> None:
        losses = self.validation_losses(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()},
                      batch_size=len(batch["motion"]))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam([p for p in self.trainable() if p.requires_grad],
                                     lr=self.lr)
        if self.lr_schedule == "constant":
            return optimizer
        steps = max(1, self.total_steps)

        def factor(step: int) -> float:
            progress = min(step, steps) / steps
            return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FlintModule(_TrainingModule):
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

    def validation_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.losses(batch, sample=False)  # the posterior mean, no sampling noise

    def trainable(self) -> Any:
        return self.flint.parameters()


def normalise_batch(audio: torch.Tensor) -> torch.Tensor:
    """wav2vec2's processor per window: zero mean, unit variance (eps 1e-7)."""
    mean = audio.mean(dim=1, keepdim=True)
    var = audio.var(dim=1, unbiased=False, keepdim=True)
    return (audio - mean) / torch.sqrt(var + 1e-7)


class EmoteStage1(_TrainingModule):
    """EMOTE stage 1: masked vertex MSE; wav2vec2 trained except its CNN; FLINT frozen; the
    regressor's 256→128 output layer starts at zero (EMOTE §7).

    ``train_audio_cnn=True`` also trains the CNN: for a wav2vec2 trained from scratch (the
    demo model), where there is no pretrained feature extractor to keep. Two more settings
    serve that case:

    - ``loss_scale`` multiplies the training loss. The objective stays the same, but vertex
      errors in m² are around 1e-7, and unscaled, the second moments of almost all gradients
      fall below Adam's epsilon (1e-8), which then shrinks their steps.
    - ``phone_classes`` > 0 adds a linear phone classifier on the audio features (training
      only; not part of the exported model) and ``phone_weight`` × its cross-entropy against the
      batch's per-frame ``phones`` to the loss: the recognition that a pretrained wav2vec2 brings
      from its speech-recognition training, taught directly.

    The logged ``vertex`` is always the plain vertex MSE in m², comparable across runs.
    """

    def __init__(self, config: EmoteConfig, flint: Flint, vertices: FlameVertices,
                 lr: float = 1e-4, train_audio_cnn: bool = False, loss_scale: float = 1.0,
                 phone_classes: int = 0, phone_weight: float = 0.0) -> None:
        super().__init__()
        self.model = EmoteModel(config)
        decoder = self.model.sequence_decoder
        decoder.motion_prior.motion_decoder.load_state_dict(flint.motion_decoder.state_dict())
        for parameter in decoder.motion_prior.parameters():
            parameter.requires_grad_(False)
        if not train_audio_cnn:
            self.model.audio_model.model.feature_extractor._freeze_parameters()
        torch.nn.init.zeros_(decoder.decoder.weight)
        torch.nn.init.zeros_(decoder.decoder.bias)
        self.vertices = vertices
        self.lr = lr
        self.loss_scale = loss_scale
        self.phone_weight = phone_weight
        self.phone_head = torch.nn.Linear(config.feature_dim, phone_classes) \
            if phone_classes else None

    def train(self, mode: bool = True) -> EmoteStage1:
        super().train(mode)
        self.model.sequence_decoder.motion_prior.eval()  # BatchNorm on running statistics
        return self

    def encode_and_decode(self, batch: dict[str, torch.Tensor]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio features (B, T, F), motion (B, T, 103)) of a batch."""
        audio = normalise_batch(batch["audio"])
        frames = audio.shape[1] // SAMPLES_PER_FRAME
        features = self.model.encode_audio(audio, frames)
        condition = batch["condition"][:, None].expand(-1, frames, -1)
        return features, self.model.decode(features, condition)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features, predicted = self.encode_and_decode(batch)
        vertex = masked_vertex_mse(self.vertices, predicted, batch["motion"], batch["mask"])
        losses = {"loss": self.loss_scale * vertex, "vertex": vertex}
        if self.phone_head is not None and self.phone_weight:
            labels = batch["phones"].masked_fill(batch["mask"] == 0, -1)
            if (labels >= 0).any():
                phone = F.cross_entropy(self.phone_head(features).transpose(1, 2), labels,
                                        ignore_index=-1)
                losses["phone"] = phone
                losses["loss"] = losses["loss"] + self.phone_weight * phone
        return losses

    def trainable(self) -> Any:
        head = [] if self.phone_head is None else list(self.phone_head.parameters())
        return [*self.model.parameters(), *head]


# -- stage 2 -------------------------------------------------------------------------------------

N_STYLE_FREE = 8 + 3  # emotion and intensity slots of the condition; the rest is the style


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A permutation with no fixed points (the reversal for two samples)."""
    if n < 2:
        raise ValueError("The emotion-content exchange needs a batch of at least 2.")
    if n == 2:
        return torch.tensor([1, 0])
    while True:
        perm = torch.randperm(n, generator=generator)
        if not (perm == torch.arange(n)).any():
            return perm


def exchange_conditions(condition: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Each sample keeps its style (and audio) but takes the emotion and intensity of
    ``perm[i]``."""
    exchanged = condition.clone()
    exchanged[:, :N_STYLE_FREE] = condition[perm, :N_STYLE_FREE]
    return exchanged


def exchange_references(lip: torch.Tensor, emotion: torch.Tensor, perm: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """References for the doubled batch: the exchanged half is lip-read against its own
    (original) sample — same speech — and emotion-judged against the lender's video."""
    return torch.cat([lip, lip]), torch.cat([emotion, emotion[perm]])


class EmoteStage2(_TrainingModule):
    """EMOTE stage 2 (from stage 1, wav2vec2 frozen): vertex loss, lip-reading and video-emotion
    losses through the renderer, on the batch doubled by the emotion-content exchange."""

    WEIGHTS = {"vertex": 1.0, "emotion": 1.5e-6, "lip": 2.5e-5, "emotion_exchanged": 1.5e-6,
               "lip_exchanged": 2.5e-5}

    def __init__(self, model: EmoteModel, vertices: FlameVertices, renderer: Any,
                 lip_reader: torch.nn.Module, video_emotion: torch.nn.Module,
                 weights: dict[str, float] | None = None, lr: float = 1e-4, seed: int = 0
                 ) -> None:
        super().__init__()
        self.model = model
        for parameter in model.audio_model.parameters():
            parameter.requires_grad_(False)
        for parameter in model.sequence_decoder.motion_prior.parameters():
            parameter.requires_grad_(False)
        self.vertices = vertices
        self.renderer = renderer
        # Frozen, in eval mode, outside the state dict and untouched by .train().
        self.perceptual = {"lip": lip_reader.eval().requires_grad_(False),
                           "emotion": video_emotion.eval().requires_grad_(False)}
        self.weights = {**self.WEIGHTS, **(weights or {})}
        self.lr = lr
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, mode: bool = True) -> EmoteStage2:
        super().train(mode)
        self.model.audio_model.eval()
        self.model.sequence_decoder.motion_prior.eval()
        return self

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from .renderer import mouth_crops

        audio = normalise_batch(batch["audio"])
        frames = audio.shape[1] // SAMPLES_PER_FRAME
        size = audio.shape[0]
        with torch.no_grad():
            features = self.model.encode_audio(audio, frames)
        # A lone sample (the end of a validation set) has nobody to exchange with.
        exchange = size >= 2
        perm = derangement(size, self.generator).to(audio.device) if exchange else \
            torch.zeros(1, dtype=torch.long, device=audio.device)
        conditions = torch.cat([batch["condition"], exchange_conditions(batch["condition"],
                                                                        perm)])
        predicted = self.model.decode(features.repeat(2, 1, 1),
                                      conditions[:, None].expand(-1, frames, -1))
        mask = batch["mask"]
        pred_vertices = self.vertices(predicted)
        with torch.no_grad():
            gt_vertices = self.vertices(batch["motion"])
            gt = self.renderer(gt_vertices)
            gt_lips = self.perceptual["lip"](mouth_crops(gt["image"], _pad68(gt["landmarks"])))
            reference_video = batch.get("video", gt["image"])
            gt_emotion = self.perceptual["emotion"](reference_video)
        error = ((pred_vertices[:size] - gt_vertices) ** 2).mean(dim=(2, 3))
        vertex = (error * mask).sum() / mask.sum().clamp(min=1.0)
        rendered = self.renderer(pred_vertices)
        lips = self.perceptual["lip"](mouth_crops(rendered["image"],
                                                  _pad68(rendered["landmarks"])))
        emotion = self.perceptual["emotion"](rendered["image"])
        lip_reference, emotion_reference = exchange_references(gt_lips, gt_emotion, perm)
        lip_distance = 1 - F.cosine_similarity(lip_reference, lips, dim=-1)  # (2B, T)
        emotion_distance = 1 - F.cosine_similarity(emotion_reference, emotion, dim=-1)  # (2B,)
        parts = {
            "vertex": vertex,
            "lip": (lip_distance[:size] * mask).sum() / mask.sum().clamp(min=1.0),
            "lip_exchanged": (lip_distance[size:] * mask).sum() / mask.sum().clamp(min=1.0),
            "emotion": emotion_distance[:size].mean(),
            "emotion_exchanged": emotion_distance[size:].mean(),
        }
        if not exchange:
            parts["lip_exchanged"] = parts["emotion_exchanged"] = torch.zeros_like(vertex)
        parts["loss"] = sum(self.weights[k] * parts[k] for k in self.WEIGHTS)
        return parts

    def trainable(self) -> Any:
        return self.model.parameters()


def _pad68(static: torch.Tensor) -> torch.Tensor:
    """The 51 static landmarks (17..67) placed in a 68-point layout (contour left at 0)."""
    return torch.cat([torch.zeros_like(static[..., :17, :]), static], dim=-2)
