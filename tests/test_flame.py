# SPDX-License-Identifier: GPL-3.0-or-later
"""FLAME files: safe legacy loading, smplx parity, the jaw correctives, refusals."""

import importlib.util
import os
import pickle

import numpy as np
import pytest

from server.flame import (
    FlameFileError,
    FlameModel,
    axis_angle_to_matrix,
    jaw_corrective_weights,
    load_flame_file,
)
from server.safe_pickle import UnsafeFileError
from tests.builders import synthetic_flame


def test_chumpy_is_not_installed():
    assert importlib.util.find_spec("chumpy") is None


def test_legacy_file_loads_the_same_arrays_as_the_clean_one(flame_files):
    legacy = load_flame_file(flame_files["legacy"])
    clean = load_flame_file(flame_files["clean"])
    reference = synthetic_flame()
    for name in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights"):
        assert np.array_equal(getattr(legacy, name), getattr(reference, name)), name
        assert np.array_equal(getattr(clean, name), getattr(reference, name)), name
    assert legacy.n_expression == 100
    assert list(legacy.parents) == [-1, 0, 1, 1, 1]


def _smplx_on_clean_file(path, tmp_path):
    """smplx's own loader on the clean file (it needs a folder and a landmark file)."""
    import smplx
    import torch

    folder = tmp_path / "smplx"
    folder.mkdir()
    (folder / "FLAME_NEUTRAL.pkl").write_bytes(path.read_bytes())
    with open(folder / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": np.zeros(0, np.int64), "lmk_b_coords": np.zeros((0, 3))}, f)
    return smplx.FLAME(model_path=str(folder), num_betas=300, num_expression_coeffs=100,
                       dtype=torch.float64)


def test_legacy_file_forward_matches_smplx_on_the_clean_file(flame_files, tmp_path):
    import torch

    rng = np.random.default_rng(4)
    expression = rng.normal(0, 1.5, (6, 100))
    jaw = rng.normal(0, 0.15, (6, 3))
    ours = FlameModel(load_flame_file(flame_files["legacy"])).vertices(expression, jaw)
    reference_model = _smplx_on_clean_file(flame_files["clean"], tmp_path)
    zeros = torch.zeros(6, 3, dtype=torch.float64)
    with torch.no_grad():
        reference = reference_model(
            betas=torch.zeros(6, 300, dtype=torch.float64),
            expression=torch.as_tensor(expression), jaw_pose=torch.as_tensor(jaw),
            global_orient=zeros, neck_pose=zeros, leye_pose=zeros, reye_pose=zeros,
        ).vertices.numpy()
    assert ours.shape == (6, 300, 3)
    print(f"legacy file vs smplx on the clean file: {np.abs(ours - reference).max():.2e} m")
    assert np.abs(ours - reference).max() < 1e-7


def manual_flame(data, expression, jaw):
    """FLAME written out in NumPy: blend shapes, jaw correctives (R − I), linear blend skinning
    with only the jaw rotated."""
    v_shaped = data.v_template + data.shapedirs[:, :, 300:] @ expression
    joints = data.j_regressor @ v_shaped
    rot = axis_angle_to_matrix(jaw)
    feature = np.zeros(36)
    feature[9:18] = jaw_corrective_weights(jaw)
    v_posed = v_shaped + data.posedirs @ feature
    parents = data.parents
    world = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rot if j == 2 else np.eye(3)
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    skin = []
    for j in range(5):
        transform = world[j].copy()
        transform[:3, 3] -= world[j][:3, :3] @ joints[j]
        skin.append(transform)
    skin = np.einsum("vj,jab->vab", data.weights, np.stack(skin))
    homogeneous = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
    return np.einsum("vab,vb->va", skin, homogeneous)[:, :3]


def test_jaw_correctives_and_skinning_match_the_written_out_maths(flame_files):
    data = load_flame_file(flame_files["clean"])
    model = FlameModel(data)
    rng = np.random.default_rng(5)
    expression = rng.normal(0, 1, 100)
    jaw = np.array([0.25, 0.03, -0.02])
    ours = model.vertices(expression[None], jaw[None])[0]
    # smplx adds 1e-8 to the rotation angle in its Rodrigues formula: agreement is ~1e-8 m.
    assert np.abs(ours - manual_flame(data, expression, jaw)).max() < 1e-7


def test_corrective_weights_are_rotation_minus_identity():
    jaw = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    weights = jaw_corrective_weights(jaw)
    assert weights.shape == (2, 9)
    c, s = np.cos(0.3), np.sin(0.3)
    assert np.allclose(weights[0], [0, 0, 0, 0, c - 1, -s, 0, s, c - 1])
    assert np.allclose(weights[1], 0)


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_booby_trapped_pkl_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": np.zeros((3, 3)), "hook": _WritesAFile(marker)}, f, protocol=2)
    with pytest.raises(UnsafeFileError, match="system"):
        load_flame_file(path)
    assert not marker.exists()


def test_file_of_another_kind_is_refused_clearly(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    smpl_like = {  # an SMPL body: 24 joints, 10 shape components
        "v_template": rng.random((n, 3)), "f": rng.integers(0, n, (20, 3)),
        "shapedirs": rng.random((n, 3, 10)), "posedirs": rng.random((n, 3, 207)),
        "J_regressor": rng.random((24, n)), "weights": rng.random((n, 24)),
        "kintree_table": np.zeros((2, 24), np.int64),
    }
    path = tmp_path / "basicModel_neutral.pkl"
    with open(path, "wb") as f:
        pickle.dump(smpl_like, f, protocol=2)
    with pytest.raises(FlameFileError, match="is not a FLAME model: it has 24 joints"):
        load_flame_file(path)
    text = tmp_path / "notes.pkl"
    text.write_text("hello")
    with pytest.raises(FlameFileError, match="is not a FLAME model file"):
        load_flame_file(text)
    with pytest.raises(FlameFileError, match="not found"):
        load_flame_file(tmp_path / "missing.pkl")
