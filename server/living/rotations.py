# SPDX-License-Identifier: GPL-3.0-or-later
"""Rotations for the living layers: degrees about FLAME's axes to axis-angle vectors.

FLAME's frame: x toward the subject's left, y up, z toward the viewer. A positive rotation
about x turns the face down (as a positive jaw rotation opens the mouth), about y toward the
subject's left, about z tilts the head toward the subject's right shoulder.
"""

from __future__ import annotations

import numpy as np


def rotation_x(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(np.shape(angle) + (3, 3))


def rotation_y(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(np.shape(angle) + (3, 3))


def rotation_z(angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(np.shape(angle) + (3, 3))


def matrix_to_axis_angle(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices → (..., 3) axis-angle vectors (angles below π)."""
    r = np.asarray(rotation, np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    angle = np.arccos(cos)
    axis = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                     r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.sin(angle)
    small = sin < 1e-8
    # Near zero the vector part of the skew-symmetric half is the axis-angle itself.
    scale = np.where(small, 0.5, angle / (2 * np.where(small, 1.0, sin)))
    return axis * scale[..., None]


def euler_to_axis_angle(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Axis-angle (T, 3) of R_y(yaw) · R_x(pitch) · R_z(roll), angles in radians."""
    return matrix_to_axis_angle(rotation_y(yaw) @ rotation_x(pitch) @ rotation_z(roll))
