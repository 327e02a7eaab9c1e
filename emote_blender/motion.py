# SPDX-License-Identifier: GPL-3.0-or-later
"""Take maths with NumPy only (no bpy): resampling 25 fps results to scene frames, rotations,
FLAME → bone space, the jaw pose correctives, and the artist controls applied to a take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .server.flame import axis_angle_to_matrix  # FLAME's maths, shared with the worker

TAKE_FPS = 25


# -- rotations -------------------------------------------------------------------------------

def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) → (..., 4) unit quaternions (w, x, y, z)."""
    aa = np.asarray(axis_angle, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, 1e-12)
    return np.concatenate([np.cos(angle / 2), axis * np.sin(angle / 2)], axis=-1)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations → (..., 4) quaternions (w, x, y, z), w ≥ 0."""
    m = np.asarray(m, np.float64)
    flat = m.reshape(-1, 3, 3)
    out = np.empty((len(flat), 4))
    for i, r in enumerate(flat):
        trace = r[0, 0] + r[1, 1] + r[2, 2]
        if trace > 0:
            s = 2 * np.sqrt(trace + 1)
            out[i] = [s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s,
                      (r[1, 0] - r[0, 1]) / s]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = 2 * np.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2])
            out[i] = [(r[2, 1] - r[1, 2]) / s, s / 4, (r[0, 1] + r[1, 0]) / s,
                      (r[0, 2] + r[2, 0]) / s]
        elif r[1, 1] > r[2, 2]:
            s = 2 * np.sqrt(1 + r[1, 1] - r[0, 0] - r[2, 2])
            out[i] = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, s / 4,
                      (r[1, 2] + r[2, 1]) / s]
        else:
            s = 2 * np.sqrt(1 + r[2, 2] - r[0, 0] - r[1, 1])
            out[i] = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s,
                      (r[1, 2] + r[2, 1]) / s, s / 4]
    out *= np.where(out[:, :1] < 0, -1.0, 1.0)
    return out.reshape(m.shape[:-2] + (4,))


def quaternion_to_axis_angle(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4) → (angle (...), axis (..., 3)); the axis is +x for a zero rotation."""
    q = np.asarray(q, np.float64)
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1)
    angle = 2 * np.arctan2(sin_half, q[..., 0])
    unit = q[..., 1:] / np.maximum(sin_half, 1e-12)[..., None]
    axis = np.where(sin_half[..., None] > 1e-12, unit, np.array([1.0, 0.0, 0.0]))
    return angle, axis


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of (N, 4) quaternion pairs at fractions t (N,)."""
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(theta)
    close = sin < 1e-8
    w0 = np.where(close, 1 - t, np.sin((1 - t) * theta) / np.where(close, 1, sin))
    w1 = np.where(close, t, np.sin(t * theta) / np.where(close, 1, sin))
    out = w0[:, None] * q0 + w1[:, None] * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive keys take the short way (Blender interpolates components)."""
    q = np.array(q, np.float64)
    for i in range(1, len(q)):
        if np.dot(q[i - 1], q[i]) < 0:
            q[i] = -q[i]
    return q


# -- time --------------------------------------------------------------------------------------

def sample_positions(frames: np.ndarray, strip_start: float, fps: float, sound_offset: float,
                     audio_start: float) -> np.ndarray:
    """Fractional take index (25 fps) at each scene frame.

    At scene frame f the strip plays file time (f − strip_start) / fps − sound_offset; the take
    starts at file time ``audio_start``.
    """
    file_time = (np.asarray(frames, np.float64) - strip_start) / fps - sound_offset
    return (file_time - audio_start) * TAKE_FPS


def _brackets(count: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.clip(np.asarray(positions, np.float64), 0, count - 1)
    i0 = np.floor(pos).astype(int)
    return i0, np.minimum(i0 + 1, count - 1), pos - i0


def resample_values(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Values (T, ...) linearly at fractional take indices (clamped)."""
    values = np.asarray(values, np.float64)
    i0, i1, t = _brackets(len(values), positions)
    t = t.reshape((-1,) + (1,) * (values.ndim - 1))
    return values[i0] * (1 - t) + values[i1] * t


def resample_rotations(axis_angle: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Axis-angle rotations (T, 3) by quaternion slerp at fractional take indices (clamped)."""
    i0, i1, t = _brackets(len(axis_angle), positions)
    quats = continuous_quaternions(axis_angle_to_quaternion(axis_angle))
    angle, axis = quaternion_to_axis_angle(slerp(quats[i0], quats[i1], t))
    return axis * angle[:, None]


def resample(expression: np.ndarray, jaw: np.ndarray, positions: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Expression linearly, jaw by quaternion slerp, at fractional take indices (clamped)."""
    return resample_values(expression, positions), resample_rotations(jaw, positions)


# -- space ---------------------------------------------------------------------------------------

def flame_to_bone(rotations: np.ndarray, bone_rest: np.ndarray,
                  flame_to_armature: np.ndarray) -> np.ndarray:
    """R_bone = Bᵀ · C · R_flame · Cᵀ · B for (N, 3, 3) FLAME rotations."""
    b = np.asarray(bone_rest, np.float64)
    c = np.asarray(flame_to_armature, np.float64)
    return b.T @ c @ rotations @ c.T @ b


def pivot_offsets(rotation: np.ndarray, expression: np.ndarray,
                  joint_basis: np.ndarray | None) -> np.ndarray | None:
    """Translation (N, 3) that moves a joint's pivot where FLAME puts it.

    FLAME regresses joints from the expressed mesh, so a pivot J(ψ) = J₀ + Bψ moves with the
    expression; a bone pivots at its rest head J₀. Rotating about J(ψ) equals rotating about
    J₀ then translating by (I − R)·Bψ (FLAME frame). This holds joint by joint down the tree
    (neck, then jaw and eyes), each in its parent's frame, because every bone's offset is its
    own (I − R)·Bψ.
    """
    if joint_basis is None:
        return None
    basis = np.asarray(joint_basis, np.float64)  # (3, E)
    n = min(basis.shape[1], expression.shape[1])
    shift = expression[:, :n] @ basis[:, :n].T  # (N, 3)
    rot = axis_angle_to_matrix(rotation)
    return shift - np.einsum("nij,nj->ni", rot, shift)


jaw_pivot_offsets = pivot_offsets


# -- artist controls -----------------------------------------------------------------------------

@dataclass
class Controls:
    """Adjustments applied to a take's keys without re-running the model."""

    offset: float = 0.0  # scene frames; positive = later
    mouth: float = 1.0  # jaw angle and the lower-face share of each expression component
    upper: float = 1.0  # the upper-face share of each expression component
    smoothing: float = 0.0  # Gaussian sigma in take frames (25 fps)


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian temporal smoothing along axis 0 with edge-replicating padding."""
    if sigma <= 0:
        return np.asarray(values, np.float64)
    radius = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(values[:1], radius, 0), values,
                             np.repeat(values[-1:], radius, 0)])
    out = np.zeros(values.shape, np.float64)
    for i, weight in enumerate(kernel):
        out += weight * padded[i: i + len(values)]
    return out


def apply_controls(expression: np.ndarray, jaw: np.ndarray, controls: Controls,
                   lower_face_share: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Scale around the neutral pose (zero expression, closed jaw), then smooth.

    ``lower_face_share[k]`` is the fraction of expression component k's motion in the lower
    face; without it, every component counts as lower face.
    """
    expression = np.asarray(expression, np.float64)
    jaw = np.asarray(jaw, np.float64)
    n = expression.shape[1]
    share = np.ones(n) if lower_face_share is None else np.resize(
        np.asarray(lower_face_share, np.float64), n)
    gains = share * controls.mouth + (1 - share) * controls.upper
    expression = smooth(expression * gains, controls.smoothing)
    jaw = jaw * controls.mouth
    if controls.smoothing > 0:
        quats = continuous_quaternions(axis_angle_to_quaternion(jaw))
        quats = smooth(quats, controls.smoothing)
        angle, axis = quaternion_to_axis_angle(quats / np.linalg.norm(quats, axis=1,
                                                                      keepdims=True))
        jaw = axis * angle[:, None]
    return expression, jaw


def lower_face_shares(displacements: np.ndarray, heights: np.ndarray,
                      mouth_level: float) -> np.ndarray:
    """Per component (K, V, 3): the share of its squared displacement below ``mouth_level``."""
    energy = np.sum(np.asarray(displacements, np.float64) ** 2, axis=2)  # (K, V)
    lower = energy[:, np.asarray(heights) < mouth_level].sum(axis=1)
    total = energy.sum(axis=1)
    return np.where(total > 0, lower / np.maximum(total, 1e-30), 1.0)


# -- the living layers ---------------------------------------------------------------------------

@dataclass
class LivingControls:
    """The living layers' controls on a take (re-applied without the model or the audio)."""

    blinks: float = 1.0  # how far blinks close the lids (0: no blinks)
    blink_rate: float = 1.0  # × the model's blink rate
    eyes: float = 1.0  # gaze aversion while speaking (0: the eyes stay on the target)
    head: float = 1.0  # head motion strength (0: the head is still)
    lip_closure: float = 1.0  # how far detected p/b/m closures shut the lips (0: as generated)
    seed: int = 0  # the take's seed plus this variation
    target: np.ndarray | None = None  # look-at direction in FLAME's frame (None: ahead)


@dataclass
class LivingLayers:
    """A take's living layers at 25 fps, ready to be combined with the model's output."""

    eyes: np.ndarray  # (T, 2, 3) axis-angle of the left and right eye joints, FLAME frame
    neck: np.ndarray  # (T, 3) axis-angle of the neck joint
    eyelids: np.ndarray  # (T,) closure in [0, 1]
    closure: np.ndarray | None  # (T,) p/b/m lip-closure weights in [0, 1]


def living_layers(stored: dict, controls: LivingControls, frames: int) -> LivingLayers:
    """The layers from what a take stores (the worker's ``living`` reply: speech activity,
    seed, per-frame emotion weights, closure weights) with ``controls``; ``ValueError`` when the
    stored data does not fit a take of ``frames`` frames."""
    from .server.living import layers_from_activity
    from .server.living.speech import SpeechActivity

    activity = SpeechActivity.from_dict(stored.get("activity"))
    if activity.frames != frames:
        raise ValueError(f"The take's living-face data covers {activity.frames} frames, not "
                         f"its {frames}.")
    names = [str(name) for name in stored.get("emotions", [])]
    weights = np.asarray(stored.get("emotion_weights", np.zeros((frames, 0))), np.float64)
    if weights.ndim != 2 or len(weights) != frames or weights.shape[1] != len(names) or not \
            np.isfinite(weights).all():
        raise ValueError("The take's emotion weights do not fit its frames.")
    emotions = {name: weights[:, i] for i, name in enumerate(names)}
    seed = stored.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError("The take's living-face seed is not a whole number.")
    seed = (seed + int(controls.seed)) % 2**32
    layers = layers_from_activity(activity, emotions, seed, blink_rate=controls.blink_rate,
                                  blink_amount=controls.blinks, gaze_target=controls.target,
                                  aversion=controls.eyes, head_strength=controls.head)
    closure = stored.get("closure")
    if closure is not None:
        closure = np.asarray(closure, np.float64).ravel()
        if len(closure) != frames or not np.isfinite(closure).all():
            raise ValueError("The take's lip-closure weights do not fit its frames.")
        closure = np.clip(closure, 0, 1)
    return LivingLayers(eyes=layers.eyes, neck=layers.neck, eyelids=layers.eyelids,
                        closure=closure)
