# SPDX-License-Identifier: GPL-3.0-or-later
"""The frozen perceptual networks of EMOTE's stage 2, with loaders for the released weights.

* :class:`LipReadingFrontend`: the visual speech recognition front-end (Conv3d + ResNet-18
  trunk) → 512-d per frame; weights ``encoder.frontend.*`` of ``LRS3_V_WER32.3/model.pth``.
* :class:`EmotionResNet50`: the Caffe-style ResNet-50 image emotion network → 2048-d
  ``emo_feat_2`` per frame; weights ``backbone.*`` (+ ``linear.*``) of its Lightning checkpoint.
* :class:`VideoEmotionClassifier`: per-frame 2048-d features → 256-d pooled sequence feature;
  weights ``sequence_encoder.*``, ``classification_head.*`` of its Lightning checkpoint.

Attribute names follow those files, so loading is a prefix filter plus a strict load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.attention import BiasedEncoderLayer
from ..safe_pickle import load_torch_checkpoint

LIP_MEAN, LIP_STD = 0.421, 0.165


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _activation(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else Swish()


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = _activation(activation, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = _activation(activation, planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + residual)


class LipTrunk(nn.Module):
    """Stem-less ResNet-18: four stages of two BasicBlocks, then global average pooling."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (inplanes, planes, stride) in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(
                BasicBlock(inplanes, planes, stride, activation),
                BasicBlock(planes, planes, 1, activation)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.avgpool(x).flatten(1)


class LipReadingFrontend(nn.Module):
    """Grey mouth crops (B, T, 1, 96, 96) in [0, 1] → per-frame features (B, T, 512)."""

    def __init__(self, activation: str = "swish") -> None:
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            _activation(activation, 64),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.trunk = LipTrunk(activation)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        batch, frames = crops.shape[:2]
        x = crops[:, :, 0, 4:92, 4:92]  # centre crop 88
        x = ((x - LIP_MEAN) / LIP_STD)[:, None]  # (B, 1, T, 88, 88)
        x = self.frontend3D(x)  # (B, 64, T, 22, 22)
        x = x.transpose(1, 2).reshape(batch * frames, 64, x.shape[-2], x.shape[-1])
        return self.trunk(x).reshape(batch, frames, 512)


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: the stride sits on the first 1×1 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


class ResNet50Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)  # not torchvision's padding 1
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate(
                [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
            layers = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * 4
            layers += [Bottleneck(inplanes, planes, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(2048, 8631)  # stored in the weights, unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.avgpool(x).flatten(1)  # emo_feat_2 (N, 2048)


class EmotionResNet50(nn.Module):
    """RGB 224×224 in [0, 1] (no mean/std) → ``emo_feat_2`` (N, 2048); ``linear`` gives
    8 expression logits, valence and arousal."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.linear = nn.Linear(2048, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


class _TransformerEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bottleneck = nn.Linear(2048, 256)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([BiasedEncoderLayer(256, 8, 256, dropout=0.25)])


class _Pooler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(256, 256)


class _SequenceEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.transformer_encoder = _TransformerEncoder()
        self.pooler = _Pooler()


class _Head(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(256, classes)


class _ClassificationHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classification_heads = nn.ModuleDict({"expression": _Head(8),
                                                   "intensity": _Head(3)})


class VideoEmotionClassifier(nn.Module):
    """Per-frame ``emo_feat_2`` (B, T, 2048) → pooled sequence feature (B, 256).

    The released model builds an ALiBi mask but runs its encoder unmasked (the masked result
    is discarded), so no bias is applied here either.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sequence_encoder = _SequenceEncoder()
        self.classification_head = _ClassificationHead()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        encoder = self.sequence_encoder.transformer_encoder
        x = encoder.bottleneck(features)
        for layer in encoder.encoder.layers:
            x = layer(x, None)
        return torch.tanh(self.sequence_encoder.pooler.dense(x[:, 0]))

    def logits(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = self.classification_head.classification_heads
        return heads["expression"].classifier(pooled), heads["intensity"].classifier(pooled)


class VideoEmotion(nn.Module):
    """Images (B, T, 3, 224, 224) → 256-d sequence feature (B, 256)."""

    def __init__(self, frame_network: EmotionResNet50, classifier: VideoEmotionClassifier
                 ) -> None:
        super().__init__()
        self.frame_network = frame_network
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, frames = images.shape[:2]
        features = self.frame_network(images.reshape(batch * frames, *images.shape[2:]))
        return self.classifier(features.reshape(batch, frames, -1))


# -- loading the released weights ----------------------------------------------------------------

def _state(path: Path) -> dict[str, torch.Tensor]:
    checkpoint: Any = load_torch_checkpoint(Path(path))
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds no state dict.")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _load_prefixed(module: nn.Module, state: dict[str, torch.Tensor], prefixes: tuple[str, ...],
                   strip: str, path: Path) -> nn.Module:
    from ..checkpoints import load_weights

    picked = {k[len(strip):]: v for k, v in state.items() if k.startswith(prefixes)}
    load_weights(module, picked, Path(path))
    return module.eval().requires_grad_(False)


def load_lip_reader(path: Path) -> LipReadingFrontend:
    """``model.pth`` of LRS3_V_WER32.3 (a plain state dict); PReLU when the file has its
    weights, Swish otherwise."""
    state = _state(path)
    prelu = any(k.startswith("encoder.frontend.") and (".relu1.weight" in k or
                                                       k.endswith("frontend3D.2.weight"))
                for k in state)
    return _load_prefixed(LipReadingFrontend("prelu" if prelu else "swish"), state,
                          ("encoder.frontend.",), "encoder.frontend.", path)


def load_emotion_cnn(path: Path) -> EmotionResNet50:
    return _load_prefixed(EmotionResNet50(), _state(path), ("backbone.", "linear."), "", path)


def load_video_emotion(path: Path) -> VideoEmotionClassifier:
    return _load_prefixed(VideoEmotionClassifier(), _state(path),
                          ("sequence_encoder.", "classification_head."), "", path)


def cosine_distance(reference: torch.Tensor, predicted: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 − cosine similarity along the last axis, averaged (over ``mask`` = 1 entries)."""
    distance = 1 - F.cosine_similarity(reference, predicted, dim=-1)
    if mask is None:
        return distance.mean()
    return (distance * mask).sum() / mask.sum().clamp(min=1.0)
