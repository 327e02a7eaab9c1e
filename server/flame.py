# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME: reading the user's model file safely, the forward pass, and the jaw pose correctives.

A FLAME file (``generic_model.pkl`` of FLAME 2020, ``flame2023.pkl`` ...) is a Python-2-era
pickle whose arrays may be chumpy objects and whose joint regressor is pickled under the old
``scipy.sparse.csc`` path. :func:`load_flame_file` reads it with the restricted unpickler (no
chumpy needed, no code runs) into plain arrays; :class:`FlameModel` runs ``smplx.FLAME`` on them
without asking the user for smplx's directory layout.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .safe_pickle import (
    ForeignObject,
    ForeignPickler,
    Stub,
    UnsafeFileError,
    load_pickle,
    load_pickle_stream,
)

SHAPE_SPACE_DIM = 300  # FLAME's shapedirs: columns 0-299 identity, 300-399 expression
N_JOINTS = 5  # root (global), neck, jaw, left eye, right eye
JAW_JOINT = 2


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


def _as_array(value: Any, key: str, path: Path) -> np.ndarray:
    """Plain array from what the pickle held: ndarray, chumpy record, or scipy sparse record."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Stub):
        state = value.state if isinstance(value.state, dict) else {}
        if value.stub_module.startswith("scipy.sparse"):
            return _dense_from_sparse_state(state, key, path)
        if value.stub_module.startswith("chumpy"):
            # A chumpy array keeps its value under 'x' (older pickles: 'a').
            for name in ("x", "a"):
                if isinstance(state.get(name), np.ndarray):
                    return state[name]
    if isinstance(value, (list, tuple, int, float)):
        return np.asarray(value)
    raise FlameFileError(f"'{path}' is not a FLAME model file: its '{key}' entry is not an array.")


def _dense_from_sparse_state(state: dict, key: str, path: Path) -> np.ndarray:
    """A dense array from a pickled scipy sparse matrix's fields (NumPy only: Blender's Python
    has no scipy)."""
    try:
        shape = tuple(int(n) for n in (state.get("_shape") or state["shape"]))
        fmt = state.get("format", "csc")
        data = np.asarray(state["data"], np.float64)
        dense = np.zeros(shape)
        if fmt == "coo" or "row" in state:
            np.add.at(dense, (np.asarray(state["row"]), np.asarray(state["col"])), data)
            return dense
        indices = np.asarray(state["indices"], np.int64)
        indptr = np.asarray(state["indptr"], np.int64)
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if fmt == "csr":
            np.add.at(dense, (outer, indices), data)
        else:
            np.add.at(dense, (indices, outer), data)
        return dense
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FlameFileError(
            f"'{path}': the sparse '{key}' matrix could not be read ({exc}).") from exc


def load_flame_file(path: str | Path, landmark_embedding: str | Path | None = None) -> FlameData:
    """Read a FLAME model file into :class:`FlameData`, checking that it really is FLAME.

    ``landmark_embedding`` is the optional ``landmark_embedding.npy`` of the release; when not
    given, one beside the FLAME file is used if present.
    """
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(f"FLAME file not found: '{path}'.")
    if path.stat().st_size == 0:
        raise FlameFileError(f"The FLAME file '{path}' is empty.")
    try:
        raw = load_pickle(path)
    except UnsafeFileError:
        raise
    except Exception as exc:  # a truncated or non-pickle file
        raise FlameFileError(
            f"'{path}' is not a FLAME model file (it could not be read as a pickle: {exc})."
        ) from exc
    if not isinstance(raw, dict):
        raise FlameFileError(f"'{path}' is not a FLAME model file (it does not hold a dict).")
    needed = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
              "kintree_table")
    missing = [k for k in needed if k not in raw]
    if missing:
        raise FlameFileError(
            f"'{path}' is not a FLAME model file: it lacks {', '.join(missing)}.")
    arrays = {k: _as_array(raw[k], k, path) for k in needed}
    data = FlameData(
        v_template=np.asarray(arrays["v_template"], np.float64),
        faces=np.asarray(arrays["f"], np.int64),
        shapedirs=np.asarray(arrays["shapedirs"], np.float64),
        posedirs=np.asarray(arrays["posedirs"], np.float64),
        j_regressor=np.asarray(arrays["J_regressor"], np.float64),
        weights=np.asarray(arrays["weights"], np.float64),
        kintree_table=np.asarray(arrays["kintree_table"], np.int64),
    )
    _check_layout(data, path)
    embedding = Path(landmark_embedding) if landmark_embedding else (
        path.parent / "landmark_embedding.npy")
    if embedding.is_file():
        _read_landmark_embedding(data, embedding)
    return data


def _check_layout(data: FlameData, path: Path) -> None:
    n = data.n_vertices
    joints = data.kintree_table.shape[1] if data.kintree_table.ndim == 2 else -1
    problems = []
    if data.v_template.ndim != 2 or data.v_template.shape[1] != 3:
        problems.append(f"v_template has shape {data.v_template.shape}, expected (V, 3)")
    if joints != N_JOINTS:
        problems.append(f"it has {joints} joints where FLAME has {N_JOINTS} "
                        "(root, neck, jaw, two eyes)")
    if data.shapedirs.shape[:2] != (n, 3) or data.shapedirs.shape[2] <= SHAPE_SPACE_DIM:
        problems.append(f"shapedirs has shape {data.shapedirs.shape}, expected "
                        f"({n}, 3, 300 + expression components)")
    if data.posedirs.shape != (n, 3, 9 * (N_JOINTS - 1)):
        problems.append(f"posedirs has shape {data.posedirs.shape}, expected ({n}, 3, 36)")
    if data.j_regressor.shape != (N_JOINTS, n):
        problems.append(f"J_regressor has shape {data.j_regressor.shape}, expected (5, {n})")
    if data.weights.shape != (n, N_JOINTS):
        problems.append(f"weights has shape {data.weights.shape}, expected ({n}, 5)")
    if data.faces.ndim != 2 or data.faces.shape[1] != 3 or data.faces.max(initial=0) >= n:
        problems.append("its faces do not index its vertices")
    if problems:
        raise FlameFileError(f"'{path}' is not a FLAME model: " + "; ".join(problems) + ".")


def _read_landmark_embedding(data: FlameData, embedding: Path) -> None:
    try:
        raw = np.load(embedding, allow_pickle=False)
    except ValueError:
        # The release stores a pickled dict inside the .npy; read it without running code.
        with open(embedding, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(f)
            else:
                np.lib.format.read_array_header_2_0(f)
            raw = load_pickle_stream(f)
        raw = raw.item() if isinstance(raw, np.ndarray) else raw
    if isinstance(raw, dict) and "static_lmk_faces_idx" in raw:
        data.landmark_faces = np.asarray(raw["static_lmk_faces_idx"], np.int64)
        data.landmark_barycentrics = np.asarray(raw["static_lmk_bary_coords"], np.float64)


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
                 shape: np.ndarray | None = None, batch: int = 512) -> np.ndarray:
        """Posed vertices (T, V, 3) in metres for per-frame expression (T, E) and jaw (T, 3).

        Expression columns beyond the file's expression space are an error; fewer are padded
        with zeros. Neck, eyes and global rotation stay at rest, as in EMOTE.
        """
        import torch

        expression = np.asarray(expression, np.float64)
        jaw = np.asarray(jaw, np.float64)
        frames, n_exp = expression.shape
        if n_exp > self.n_expression:
            raise ValueError(f"The FLAME file has {self.n_expression} expression components; "
                             f"got {n_exp}.")
        if n_exp < self.n_expression:
            expression = np.pad(expression, ((0, 0), (0, self.n_expression - n_exp)))
        betas = np.zeros(SHAPE_SPACE_DIM) if shape is None else np.pad(
            np.asarray(shape, np.float64), (0, SHAPE_SPACE_DIM - len(shape)))
        out = []
        with torch.no_grad():
            for start in range(0, frames, batch):
                stop = min(frames, start + batch)
                n = stop - start
                zeros = torch.zeros(n, 3, dtype=torch.float64, device=self.device)
                result = self.model(
                    betas=torch.as_tensor(betas, device=self.device).expand(n, -1),
                    expression=torch.as_tensor(expression[start:stop], device=self.device),
                    jaw_pose=torch.as_tensor(jaw[start:stop], device=self.device),
                    global_orient=zeros, neck_pose=zeros, leye_pose=zeros, reye_pose=zeros,
                    transl=zeros,
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
