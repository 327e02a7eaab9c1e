# SPDX-License-Identifier: GPL-3.0-or-later
"""Differentiable FLAME vertices for the geometric losses (float32, gradients on)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..flame import JAW_JOINT, SHAPE_SPACE_DIM, FlameData


class FlameVertices(nn.Module):
    """(B, T, 103) FLAME parameters → (B, T, V, 3) vertices; shape zero, jaw only posed.

    The FLAME forward pass written out for this case (the same numbers as ``smplx.FLAME``,
    tested): with the root, neck and eyes at rest, linear blend skinning reduces to the jaw's
    rotation about its joint weighted per vertex, and only the jaw's nine pose correctives are
    used. Expression columns that are zero in the file are skipped. Several times faster and
    lighter on memory than the general implementation, which matters for training on a CPU.
    """

    def __init__(self, data: FlameData) -> None:
        super().__init__()
        expression = np.asarray(data.shapedirs[:, :, SHAPE_SPACE_DIM:], np.float32)
        used = np.flatnonzero(np.abs(expression).reshape(-1, expression.shape[2]).max(0) > 0)
        self.n_expression = data.n_expression
        self.register_buffer("used", torch.as_tensor(used, dtype=torch.long))
        self.register_buffer("template", torch.as_tensor(data.v_template, dtype=torch.float32))
        self.register_buffer("basis", torch.as_tensor(
            expression[:, :, used].reshape(-1, len(used)).T.copy()))  # (E_used, V·3)
        self.register_buffer("correctives", torch.as_tensor(np.asarray(
            data.posedirs[:, :, 9:18], np.float32).reshape(-1, 9).T.copy()))  # (9, V·3)
        self.register_buffer("regressor", torch.as_tensor(data.j_regressor[JAW_JOINT],
                                                          dtype=torch.float32))
        self.register_buffer("jaw_weight", torch.as_tensor(data.weights[:, JAW_JOINT],
                                                           dtype=torch.float32))
        self.register_buffer("weight_sum", torch.as_tensor(data.weights.sum(1),
                                                           dtype=torch.float32))
        moving = (np.abs(expression[:, :, used]).reshape(len(expression), -1).max(1) > 0) | (
            np.abs(data.posedirs[:, :, 9:18]).reshape(len(expression), -1).max(1) > 0) | (
            data.weights[:, JAW_JOINT] != 0)
        self.register_buffer("moving", torch.as_tensor(np.flatnonzero(moving)))

    def forward(self, motion: torch.Tensor, moving_only: bool = False) -> torch.Tensor:
        """Vertices (B, T, V, 3); with ``moving_only`` just those that the expression or the
        jaw can move (``self.moving``); the others always sit at the template."""
        batch, frames, _ = motion.shape
        flat = motion.reshape(batch * frames, -1).float()
        coefficients = flat[:, : min(self.n_expression, flat.shape[1] - 3)]
        used = self.used < coefficients.shape[1]
        expression = coefficients[:, self.used[used]] @ self.basis[used]
        shaped = self.template + expression.reshape(len(flat), -1, 3)
        joint = (self.regressor @ shaped)[:, None]  # (N, 1, 3)
        keep = self.moving if moving_only else slice(None)
        shaped = shaped[:, keep]
        rotation = rodrigues(flat[:, -3:])  # (N, 3, 3)
        eye = torch.eye(3, device=flat.device, dtype=flat.dtype)
        correctives = (rotation - eye).reshape(-1, 9) @ self.correctives
        posed = shaped + correctives.reshape(len(flat), -1, 3)[:, keep]
        moved = torch.bmm(posed - joint, rotation.transpose(1, 2)) + joint
        vertices = (self.weight_sum[keep, None] * posed
                    + self.jaw_weight[keep, None] * (moved - posed))
        return vertices.reshape(batch, frames, -1, 3)


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) → rotation matrices (N, 3, 3), as smplx's batch_rodrigues (its
    1e-8 offset keeps the zero rotation differentiable)."""
    angle = torch.norm(axis_angle + 1e-8, dim=1, keepdim=True)
    x, y, z = (axis_angle / angle).unbind(1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(-1, 3, 3)
    sin, cos = torch.sin(angle)[:, :, None], torch.cos(angle)[:, :, None]
    eye = torch.eye(3, device=axis_angle.device, dtype=axis_angle.dtype)[None]
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


def masked_vertex_mse(vertices: FlameVertices, predicted: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared vertex error over valid frames (mask (B, T), 1 = valid)."""
    with torch.no_grad():
        reference = vertices(target, moving_only=True)
    # Vertices that never move add zero error: sum over the moving ones, divide by all.
    error = ((vertices(predicted, moving_only=True) - reference) ** 2).sum(dim=(2, 3)) / (
        3 * len(vertices.template))  # (B, T)
    if mask is None:
        return error.mean()
    return (error * mask).sum() / mask.sum().clamp(min=1.0)


def kl_per_latent_frame(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z) ‖ N(0, I)) summed over latent dimensions, averaged over latent frames."""
    return (-0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(-1)).mean()
