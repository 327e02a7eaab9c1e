# SPDX-License-Identifier: GPL-3.0-or-later
"""Differentiable FLAME vertices for the geometric losses (smplx, float32, gradients on)."""

from __future__ import annotations

import torch
from torch import nn

from ..flame import FlameData, FlameModel


class FlameVertices(nn.Module):
    """(B, T, 103) FLAME parameters → (B, T, V, 3) vertices; shape zero, jaw only posed."""

    def __init__(self, data: FlameData) -> None:
        super().__init__()
        model = FlameModel(data).model.float()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.flame = model
        self.n_expression = data.n_expression

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = motion.shape
        flat = motion.reshape(batch * frames, -1).float()
        n = min(self.n_expression, flat.shape[1] - 3)
        expression = torch.zeros(len(flat), self.n_expression, device=flat.device)
        expression[:, :n] = flat[:, :n]
        zeros = torch.zeros(len(flat), 3, device=flat.device)
        vertices = self.flame(
            betas=torch.zeros(len(flat), 300, device=flat.device), expression=expression,
            jaw_pose=flat[:, -3:], global_orient=zeros, neck_pose=zeros, leye_pose=zeros,
            reye_pose=zeros, transl=zeros).vertices
        return vertices.reshape(batch, frames, -1, 3)


def masked_vertex_mse(vertices: FlameVertices, predicted: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared vertex error over valid frames (mask (B, T), 1 = valid)."""
    error = ((vertices(predicted) - vertices(target)) ** 2).mean(dim=(2, 3))  # (B, T)
    if mask is None:
        return error.mean()
    return (error * mask).sum() / mask.sum().clamp(min=1.0)


def kl_per_latent_frame(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z) ‖ N(0, I)) summed over latent dimensions, averaged over latent frames."""
    return (-0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(-1)).mean()
