# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME: reading the user's model file safely, the forward pass, and the jaw pose correctives.

A FLAME file (``generic_model.pkl`` of FLAME 2020, ``flame2023.pkl`` ...) is a Python-2-era
pickle whose arrays may be chumpy objects and whose joint regressor is pickled under the old
``scipy.sparse.csc`` path. :func:`load_flame_file` reads it with the restricted unpickler (no
chumpy needed, no code runs) into plain, checked arrays; :class:`FlameModel` runs ``smplx.FLAME``
on them without asking the user for smplx's directory layout. The landmark embedding beside it
(training only) is read by :func:`load_landmark_embedding`.

Loading uses NumPy alone (no torch, no scipy): the add-on reads FLAME files inside Blender.
"""

from __future__ import annotations

import io
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .safe_pickle import (
    FileReadError,
    ForeignObject,
    ForeignPickler,
    Stub,
    UnsafeFileError,
    load_pickle,
    load_pickle_stream,
    read_regular_file,
)

SHAPE_SPACE_DIM = 300  # FLAME's shapedirs: columns 0-299 identity, 300-399 expression
N_JOINTS = 5  # root (global), neck, jaw, left eye, right eye
NECK_JOINT, JAW_JOINT, LEFT_EYE_JOINT, RIGHT_EYE_JOINT = 1, 2, 3, 4


class FlameFileError(ValueError):
    """The FLAME file is missing, unreadable, or not a FLAME model."""


@dataclass
class FlameData:
    """The arrays of a FLAME model, as plain NumPy (float64, metres, FLAME's y-up frame)."""

    v_template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) int
    shapedirs: np.ndarray  # (V, 3, 300 + n_expression)
    posedirs: np.ndarray  # (V, 3, 36)
    j_regressor: np.ndarray  # (5, V) dense
    weights: np.ndarray  # (V, 5)
    kintree_table: np.ndarray  # (2, 5)
    landmark_faces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    landmark_barycentrics: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.shapedirs.shape[2] - SHAPE_SPACE_DIM)

    @property
    def parents(self) -> np.ndarray:
        parents = self.kintree_table[0].astype(np.int64).copy()
        parents[0] = -1
        return parents

    def rest_joints(self) -> np.ndarray:
        """Joint positions of the template, ``J_regressor · v_template`` (5, 3)."""
        return self.j_regressor @ self.v_template


def _as_array(value: Any, key: str, path: Path, sparse_shape: tuple[int, int] | None = None
              ) -> np.ndarray:
    """Plain array from what the pickle held: ndarray, chumpy record, or scipy sparse record
    (densified only when its declared shape is ``sparse_shape``)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Stub):
        state = value.state if isinstance(value.state, dict) else {}
        if value.stub_module.startswith("scipy.sparse"):
            return _dense_from_sparse_state(state, key, path, sparse_shape)
        if value.stub_module.startswith("chumpy"):
            # A chumpy array keeps its value under 'x' (older pickles: 'a').
            for name in ("x", "a"):
                if isinstance(state.get(name), np.ndarray):
                    return state[name]
    if isinstance(value, (list, tuple, int, float)):
        try:
            return np.asarray(value, np.float64)
        except (TypeError, ValueError):
            pass
    raise FlameFileError(f"'{path}' is not a FLAME model file: its '{key}' entry is not an array.")


def _dense_from_sparse_state(state: dict, key: str, path: Path,
                             expected: tuple[int, int] | None) -> np.ndarray:
    """A dense array from a pickled scipy sparse matrix's fields (NumPy only: Blender's Python
    has no scipy). Its declared shape and indices are checked before anything is allocated: a
    few bytes can declare a 10^6 × 10^6 matrix."""
    problem = f"'{path}' is not a FLAME model file: its sparse '{key}' matrix"
    try:
        shape = tuple(int(n) for n in (state.get("_shape") or state["shape"]))
        fmt = state.get("format", "coo" if "row" in state else "csc")
        data = np.asarray(state["data"], np.float64).ravel()
        if fmt == "coo" or "row" in state:
            rows = np.asarray(state["row"]).ravel()
            cols = np.asarray(state["col"]).ravel()
        else:
            indices = np.asarray(state["indices"]).ravel()
            indptr = np.asarray(state["indptr"]).ravel()
    except (KeyError, TypeError, ValueError) as exc:
        raise FlameFileError(f"{problem} could not be read ({exc}).") from None
    if expected is not None and shape != expected:
        raise FlameFileError(f"{problem} has shape {shape}, expected {expected}.")
    if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > 10 * data.size + 10**7:
        raise FlameFileError(f"{problem} declares the shape {shape}, which it does not hold.")
    dense = np.zeros(shape)
    if fmt == "coo" or "row" in state:
        if not (len(rows) == len(cols) == len(data)) or (len(data) and (
                rows.min() < 0 or cols.min() < 0 or rows.max() >= shape[0]
                or cols.max() >= shape[1])):
            raise FlameFileError(f"{problem} has indices outside its shape {shape}.")
        np.add.at(dense, (rows.astype(np.int64), cols.astype(np.int64)), data)
        return dense
    outer_size, inner_size = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
    if (len(indptr) != outer_size + 1 or len(indices) != len(data) or indptr[0] != 0
            or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0)
            or (len(indices) and (indices.min() < 0 or indices.max() >= inner_size))):
        raise FlameFileError(f"{problem} has indices outside its shape {shape}.")
    outer = np.repeat(np.arange(outer_size), np.diff(indptr).astype(np.int64))
    indices = indices.astype(np.int64)
    if fmt == "csr":
        np.add.at(dense, (outer, indices), data)
    else:
        np.add.at(dense, (indices, outer), data)
    return dense


def load_flame_file(path: str | Path, landmark_embedding: str | Path | None = None, *,
                    landmarks: bool = False) -> FlameData:
    """Read a FLAME model file into :class:`FlameData`, checking that it really is FLAME: its
    shapes, that its faces index its vertices, that its numbers are finite.

    The landmark embedding (``landmark_embedding.npy`` of the release, only training uses it)
    is read when ``landmark_embedding`` names it, or with ``landmarks=True`` from beside the
    FLAME file when one is there; otherwise it is not touched.
    """
    path = Path(path)
    if not path.exists():
        raise FlameFileError(f"FLAME file not found: '{path}'.")
    if path.is_file() and path.stat().st_size == 0:
        raise FlameFileError(f"The FLAME file '{path}' is empty.")
    try:
        raw = load_pickle(path)  # refuses folders, devices and pipes at once
    except (UnsafeFileError, FileNotFoundError):
        raise
    except FileReadError as exc:  # a truncated, damaged or non-pickle file
        raise FlameFileError(f"'{path}' is not a FLAME model file: {exc.reason}.") from None
    except ValueError as exc:  # not a regular file
        raise FlameFileError(str(exc)) from None
    if not isinstance(raw, dict):
        raise FlameFileError(f"'{path}' is not a FLAME model file (it does not hold a dict).")
    needed = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
              "kintree_table")
    missing = [k for k in needed if k not in raw]
    if missing:
        raise FlameFileError(
            f"'{path}' is not a FLAME model file: it lacks {', '.join(missing)}.")
    v_template = _numbers(_as_array(raw["v_template"], "v_template", path), "v_template", path)
    n = v_template.shape[0] if v_template.ndim == 2 else -1
    arrays = {k: _as_array(raw[k], k, path, (N_JOINTS, n) if k == "J_regressor" else None)
              for k in needed if k != "v_template"}
    data = FlameData(
        v_template=v_template,
        faces=_faces(arrays["f"], path),
        shapedirs=_numbers(arrays["shapedirs"], "shapedirs", path),
        posedirs=_numbers(arrays["posedirs"], "posedirs", path),
        j_regressor=_numbers(arrays["J_regressor"], "J_regressor", path),
        weights=_numbers(arrays["weights"], "weights", path),
        kintree_table=_numbers(arrays["kintree_table"], "kintree_table", path, np.int64),
    )
    _check_layout(data, path)
    if landmark_embedding is not None or landmarks:
        embedding = Path(landmark_embedding) if landmark_embedding is not None else (
            path.parent / "landmark_embedding.npy")
        if landmark_embedding is not None or embedding.is_file():
            _read_landmark_embedding(data, embedding)
    return data


def _numbers(values: np.ndarray, key: str, path: Path, dtype: Any = np.float64) -> np.ndarray:
    """``values`` as a finite ``dtype`` array, or a one-sentence error naming the entry."""
    try:
        array = np.asarray(values, dtype)
    except (TypeError, ValueError, OverflowError):
        raise FlameFileError(f"'{path}' is not a FLAME model file: its '{key}' entry is not "
                             "an array of numbers.") from None
    if dtype is np.float64 and not np.isfinite(array).all():
        raise FlameFileError(f"'{path}' is damaged: its '{key}' holds NaN or infinite values.")
    return array


def _faces(values: np.ndarray, path: Path) -> np.ndarray:
    faces = _numbers(values, "f", path)  # float64 holds every index exactly; checked below
    if faces.size and not np.array_equal(faces, np.round(faces)):
        raise FlameFileError(f"'{path}' is damaged: its faces hold indices that are not whole "
                             "numbers.")
    return faces.astype(np.int64)


def _check_layout(data: FlameData, path: Path) -> None:
    n = data.n_vertices
    joints = data.kintree_table.shape[1] if data.kintree_table.ndim == 2 else -1
    problems = []
    if data.v_template.ndim != 2 or data.v_template.shape[1] != 3:
        problems.append(f"v_template has shape {data.v_template.shape}, expected (V, 3)")
    if joints != N_JOINTS:
        problems.append(f"it has {joints} joints where FLAME has {N_JOINTS} "
                        "(root, neck, jaw, two eyes)")
    elif data.kintree_table.shape[0] != 2 or any(
            not 0 <= parent < j for j, parent in enumerate(data.parents) if j):
        problems.append("its joint tree does not lead from each joint to an earlier one")
    if data.shapedirs.ndim != 3 or data.shapedirs.shape[:2] != (n, 3) or (
            data.shapedirs.shape[2] <= SHAPE_SPACE_DIM):
        problems.append(f"shapedirs has shape {data.shapedirs.shape}, expected "
                        f"({n}, 3, 300 + expression components)")
    if data.posedirs.shape != (n, 3, 9 * (N_JOINTS - 1)):
        problems.append(f"posedirs has shape {data.posedirs.shape}, expected ({n}, 3, 36)")
    if data.j_regressor.shape != (N_JOINTS, n):
        problems.append(f"J_regressor has shape {data.j_regressor.shape}, expected (5, {n})")
    if data.weights.shape != (n, N_JOINTS):
        problems.append(f"weights has shape {data.weights.shape}, expected ({n}, 5)")
    if data.faces.ndim != 2 or data.faces.shape[1] != 3 or not len(data.faces) or (
            data.faces.min() < 0 or data.faces.max() >= n):
        problems.append(f"its faces do not index its {n} vertices")
    if problems:
        raise FlameFileError(f"'{path}' is not a FLAME model: " + "; ".join(problems) + ".")


def load_landmark_embedding(path: str | Path) -> dict[str, np.ndarray]:
    """Every entry of a landmark embedding ``.npy`` as a NumPy array, read without torch and
    without running code.

    The DECA/EMOCA release's file is a 0-d object array holding a dict; its
    ``dynamic_lmk_faces_idx`` and ``dynamic_lmk_bary_coords`` are pickled torch tensors, which
    :mod:`server.tensor_files` rebuilds as arrays. A plain ``.npy`` of a dict works the same.
    """
    path = Path(path)
    what = f"'{path}' is not a landmark embedding"
    try:
        content = read_regular_file(path)
    except FileNotFoundError:
        raise FlameFileError(f"Landmark embedding not found: '{path}'.") from None
    except ValueError as exc:
        raise FlameFileError(str(exc)) from None
    stream = io.BytesIO(content)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(stream)
        if version not in readers:
            raise ValueError(f".npy version {version} is not supported")
        _, _, dtype = readers[version](stream)
    except ValueError as exc:
        raise FlameFileError(f"{what} (.npy) file: {exc}.") from None
    if dtype.hasobject:
        try:
            raw = load_pickle_stream(stream, source=f"'{path}'")
        except UnsafeFileError:
            raise
        except FileReadError as exc:
            raise FlameFileError(f"{what}: {exc.reason}.") from None
        raw = raw.item() if isinstance(raw, np.ndarray) and raw.size == 1 else raw
    else:
        raw = None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise FlameFileError(f"{what}: it does not hold a table of named arrays.")
    embedding = {}
    for key, value in raw.items():
        try:
            embedding[key] = np.asarray(value)
        except (TypeError, ValueError):
            raise FlameFileError(f"{what}: its '{key}' entry is not an array.") from None
    return embedding


def _read_landmark_embedding(data: FlameData, path: Path) -> None:
    embedding = load_landmark_embedding(path)
    if "static_lmk_faces_idx" not in embedding or "static_lmk_bary_coords" not in embedding:
        raise FlameFileError(f"'{path}' is not a landmark embedding: it lacks "
                             "static_lmk_faces_idx or static_lmk_bary_coords.")
    faces = np.asarray(embedding["static_lmk_faces_idx"]).ravel()
    barycentrics = np.asarray(embedding["static_lmk_bary_coords"], np.float64).reshape(-1, 3)
    if (len(faces) != len(barycentrics) or not np.issubdtype(faces.dtype, np.integer)
            or (len(faces) and (faces.min() < 0 or faces.max() >= len(data.faces)))
            or not np.isfinite(barycentrics).all()):
        raise FlameFileError(f"'{path}' does not fit this FLAME model: its landmarks name faces "
                             f"it does not have ({len(data.faces)} faces).")
    data.landmark_faces = faces.astype(np.int64)
    data.landmark_barycentrics = barycentrics


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for (..., 3) axis-angle vectors → (..., 3, 3) rotation matrices."""
    aa = np.asarray(axis_angle, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + s * k + (1 - c) * (k @ k)


def flame_vertices(data: FlameData, expression: np.ndarray, jaw: np.ndarray,
                   shape: np.ndarray | None = None, batch: int = 64, *,
                   neck: np.ndarray | None = None, eyes: np.ndarray | None = None
                   ) -> np.ndarray:
    """FLAME's forward pass in NumPy: posed vertices (T, V, 3) in metres for per-frame
    expression (T, E) and jaw axis-angle (T, 3); the neck (T, 3) and the eyes (T, 2, 3: left,
    right) at rest unless given (the living layers), the global rotation at rest, as in EMOTE.
    Shape blend shapes, joints from the shaped mesh, pose correctives from ``R − I`` of
    joints 1–4, and linear blend skinning over the joint tree (smplx's ``lbs`` maths, which
    :class:`FlameModel` runs and the tests compare against)."""
    expression, jaw, betas = _forward_inputs(data, expression, jaw, shape)
    extra = {NECK_JOINT: neck, LEFT_EYE_JOINT: None if eyes is None else np.asarray(eyes)[:, 0],
             RIGHT_EYE_JOINT: None if eyes is None else np.asarray(eyes)[:, 1]}
    extra = {j: np.asarray(v, np.float64).reshape(len(jaw), 3) for j, v in extra.items()
             if v is not None}
    frames, n_exp = expression.shape
    rest = data.v_template + data.shapedirs[..., :SHAPE_SPACE_DIM] @ betas  # (V, 3)
    expression_dirs = data.shapedirs[..., SHAPE_SPACE_DIM:SHAPE_SPACE_DIM + n_exp]
    parents = data.parents
    out = np.zeros((frames, data.n_vertices, 3))
    for start in range(0, frames, batch):
        stop = min(frames, start + batch)
        n = stop - start
        shaped = rest + np.einsum("vck,tk->tvc", expression_dirs, expression[start:stop])
        joints = np.einsum("jv,tvc->tjc", data.j_regressor, shaped)  # (n, 5, 3)
        rotations = np.broadcast_to(np.eye(3), (n, N_JOINTS, 3, 3)).copy()
        # smplx's batch_rodrigues measures the angle of (v + 1e-8): the same here, so both
        # forward passes give the same vertices to rounding.
        rotations[:, JAW_JOINT] = _rodrigues_like_smplx(jaw[start:stop])
        for j, values in extra.items():
            rotations[:, j] = _rodrigues_like_smplx(values[start:stop])
        feature = (rotations[:, 1:] - np.eye(3)).reshape(n, -1)  # (n, 36)
        posed = shaped + np.einsum("vck,tk->tvc", data.posedirs, feature)
        world = np.zeros((n, N_JOINTS, 4, 4))
        for j in range(N_JOINTS):
            local = np.zeros((n, 4, 4))
            local[:, :3, :3] = rotations[:, j]
            offset = joints[:, j] - (joints[:, parents[j]] if parents[j] >= 0 else 0.0)
            local[:, :3, 3] = offset
            local[:, 3, 3] = 1.0
            world[:, j] = local if parents[j] < 0 else world[:, parents[j]] @ local
        # Skinning transforms: each joint's world transform applied relative to its rest
        # position.
        world[:, :, :3, 3] -= np.einsum("tjab,tjb->tja", world[:, :, :3, :3], joints)
        blend = np.einsum("vj,tjab->tvab", data.weights, world[:, :, :3, :])  # (n, V, 3, 4)
        out[start:stop] = np.einsum("tvab,tvb->tva", blend[..., :3], posed) + blend[..., 3]
    return out


def _forward_inputs(data: FlameData, expression: np.ndarray, jaw: np.ndarray,
                    shape: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expression (T, E ≤ the file's), jaw (T, 3) and identity shape (300,) in float64."""
    expression = np.asarray(expression, np.float64)
    if expression.shape[1] > data.n_expression:
        raise ValueError(f"The FLAME file has {data.n_expression} expression components; got "
                         f"{expression.shape[1]}.")
    betas = np.zeros(SHAPE_SPACE_DIM) if shape is None else np.pad(
        np.asarray(shape, np.float64), (0, SHAPE_SPACE_DIM - len(shape)))
    return expression, np.asarray(jaw, np.float64), betas


def _rodrigues_like_smplx(axis_angle: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(axis_angle + 1e-8, axis=-1, keepdims=True)
    axis = axis_angle / angle
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(axis.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def corrective_weights(axis_angle: np.ndarray) -> np.ndarray:
    """Weights of one joint's nine pose-corrective blend shapes, ``(R − I)`` row-major (T, 9),
    for its axis-angle rotations (T, 3): the neck's drive ``posedirs`` columns 0–8, the
    jaw's 9–17, the left eye's 18–26 and the right eye's 27–35."""
    rot = axis_angle_to_matrix(axis_angle)
    return (rot - np.eye(3)).reshape(rot.shape[:-2] + (9,))


def jaw_corrective_weights(jaw: np.ndarray) -> np.ndarray:
    """Weights of the jaw's nine pose-corrective blend shapes, ``(R_jaw − I)`` row-major (T, 9).

    These drive ``posedirs`` columns 9–17 (the official add-on's ``Pose10..Pose18``).
    """
    rot = axis_angle_to_matrix(jaw)
    return (rot - np.eye(3)).reshape(rot.shape[:-2] + (9,))


class FlameModel:
    """FLAME forward pass (``smplx.FLAME``) on a loaded :class:`FlameData`.

    smplx wants a directory holding ``FLAME_NEUTRAL.pkl`` and ``flame_static_embedding.pkl``;
    we write our own clean copy of the arrays there once, so the user only names their file.
    """

    def __init__(self, data: FlameData, device: str = "cpu") -> None:
        import smplx
        import torch

        self.data = data
        self.device = device
        with tempfile.TemporaryDirectory(prefix="emote-flame-") as folder:
            np.savez(
                Path(folder) / "FLAME_NEUTRAL.npz",
                v_template=data.v_template, f=data.faces, shapedirs=data.shapedirs,
                posedirs=data.posedirs, J_regressor=data.j_regressor, weights=data.weights,
                kintree_table=data.kintree_table,
            )
            with open(Path(folder) / "flame_static_embedding.pkl", "wb") as f:
                pickle.dump({"lmk_face_idx": data.landmark_faces,
                             "lmk_b_coords": data.landmark_barycentrics}, f)
            self.model = smplx.FLAME(
                model_path=folder, ext="npz", num_betas=SHAPE_SPACE_DIM,
                num_expression_coeffs=data.n_expression, dtype=torch.float64, batch_size=1,
            ).to(device)
        self.model.eval()

    @property
    def n_expression(self) -> int:
        return self.data.n_expression

    def vertices(self, expression: np.ndarray, jaw: np.ndarray,
                 shape: np.ndarray | None = None, batch: int = 512, *,
                 neck: np.ndarray | None = None, eyes: np.ndarray | None = None
                 ) -> np.ndarray:
        """Posed vertices (T, V, 3) in metres for per-frame expression (T, E) and jaw (T, 3).

        Expression columns beyond the file's expression space are an error; fewer are padded
        with zeros. The neck (T, 3) and eyes (T, 2, 3) stay at rest unless given, and the
        global rotation at rest, as in EMOTE.
        """
        import torch

        expression, jaw, betas = _forward_inputs(self.data, expression, jaw, shape)
        frames, n_exp = expression.shape
        if n_exp < self.n_expression:
            expression = np.pad(expression, ((0, 0), (0, self.n_expression - n_exp)))
        out = []
        with torch.no_grad():
            for start in range(0, frames, batch):
                stop = min(frames, start + batch)
                n = stop - start
                zeros = torch.zeros(n, 3, dtype=torch.float64, device=self.device)
                neck_pose, leye_pose, reye_pose = (
                    zeros if values is None else torch.as_tensor(
                        np.asarray(values, np.float64)[start:stop], device=self.device)
                    for values in (neck, None if eyes is None else np.asarray(eyes)[:, 0],
                                   None if eyes is None else np.asarray(eyes)[:, 1]))
                result = self.model(
                    betas=torch.as_tensor(betas, device=self.device).expand(n, -1),
                    expression=torch.as_tensor(expression[start:stop], device=self.device),
                    jaw_pose=torch.as_tensor(jaw[start:stop], device=self.device),
                    global_orient=zeros, neck_pose=neck_pose, leye_pose=leye_pose,
                    reye_pose=reye_pose, transl=zeros,
                )
                out.append(result.vertices.cpu().numpy())
        if not out:
            return np.zeros((0, self.data.n_vertices, 3))
        return np.concatenate(out)


def write_flame_file(path: str | Path, data: FlameData, legacy: bool = False) -> None:
    """Write ``data`` as a FLAME ``.pkl``.

    ``legacy=True`` writes it the way the official 2020 files are written: ``shapedirs`` and
    ``posedirs`` as chumpy objects and ``J_regressor`` as a ``scipy.sparse.csc.csc_matrix``,
    without chumpy installed (the classes are faked for pickling only). Used for synthetic test
    files and the procedural demo head.
    """
    import scipy.sparse

    payload: dict[str, Any] = {
        "v_template": data.v_template, "f": data.faces.astype(np.uint32),
        "shapedirs": data.shapedirs, "posedirs": data.posedirs,
        "J_regressor": scipy.sparse.csc_matrix(data.j_regressor), "weights": data.weights,
        "kintree_table": data.kintree_table, "J": data.rest_joints(),
        "bs_style": "lbs", "bs_type": "lrotmin",
    }
    if legacy:
        payload["shapedirs"] = ForeignObject("chumpy.ch", "Ch", {"x": data.shapedirs})
        payload["posedirs"] = ForeignObject("chumpy.ch", "Ch", {"x": data.posedirs})
        m = payload["J_regressor"]
        payload["J_regressor"] = ForeignObject("scipy.sparse.csc", "csc_matrix", {
            "_shape": m.shape, "data": m.data, "indices": m.indices, "indptr": m.indptr,
            "maxprint": 50, "format": "csc"})
    with open(path, "wb") as f:
        ForeignPickler(f, protocol=2).dump(payload)
