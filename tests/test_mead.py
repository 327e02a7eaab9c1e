# SPDX-License-Identifier: GPL-3.0-or-later
"""The processed-MEAD converter on a small tree laid out as the public sources describe."""

import pickle
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from server.train.data import SequenceWindows, read_index  # noqa: E402
from tests.builders import run_server, write_wav  # noqa: E402


def processed_tree(root: Path) -> Path:
    processed = root / "processed"
    videos = []
    rng = np.random.default_rng(0)
    for identity in ("M003", "M005", "M007", "W009", "W011"):
        for emotion, level in (("happy", 3), ("angry", 1)):
            videos.append(f"{identity}/video/front/{emotion}/level_{level}/001.mp4")
    videos.append("M003/video/left_30/happy/level_3/001.mp4")  # not frontal: ignored
    with open(_mkdir(processed) / "metadata.pkl", "wb") as f:
        for item in (1, videos, [{"fps": "25/1", "num_frames": 50}] * len(videos), [], [], []):
            pickle.dump(item, f)
    for video in videos[:-1]:
        identity, _, _, emotion, level, _ = Path(video).with_suffix("").parts
        relative = Path(identity) / "front" / emotion / level / "001"
        write_wav(_mkdir((processed / "audio" / relative).parent) / "001.wav", 2.0,
                  seed=len(identity))
        recon = _mkdir(processed / "reconstructions" / "EMICA-MEAD_flame2020" / relative)
        with h5py.File(recon / "shape_pose_cam.hdf5", "w") as f:
            f["exp"] = rng.normal(size=(1, 50, 100)).astype(np.float32)
            f["jaw"] = rng.normal(0, 0.1, size=(1, 50, 3)).astype(np.float32)
            f["shape"] = rng.normal(size=(1, 50, 300)).astype(np.float32)
            f["global_pose"] = np.zeros((1, 50, 3), np.float32)
        if identity == "M003" and emotion == "happy":
            mediapipe = _mkdir(processed / "landmarks_original" / "mediapipe" / relative)
            with open(mediapipe / "landmarks_alignment_used_frame_indices.pkl", "wb") as f:
                pickle.dump(list(range(0, 40)), f)
    return processed


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_converts_to_the_training_format(tmp_path):
    processed = processed_tree(tmp_path)
    result = run_server("prepare-mead", processed, tmp_path / "dataset")
    assert result.returncode == 0, result.stderr
    assert "wrote 10 sequences" in result.stdout
    index = read_index(tmp_path / "dataset")
    splits = {e["identity"]: e["split"] for e in index["sequences"]}
    assert splits == {"M003": "train", "M005": "train", "M007": "test", "W009": "train",
                      "W011": "test"}
    assert index["identities"] == ["M003", "M005", "W009"]
    happy = np.load(tmp_path / "dataset" / "M003_happy_3_001.npz")
    assert happy["expression"].shape == (50, 100) and int(happy["emotion"]) == 1
    assert int(happy["intensity"]) == 3 and happy["validity"].sum() == 40
    angry = np.load(tmp_path / "dataset" / "M005_angry_1_001.npz")
    assert int(angry["emotion"]) == 6 and angry["validity"].all()
    windows = SequenceWindows(tmp_path / "dataset", "train", 32)
    assert windows[0]["condition"].shape == (8 + 3 + 3,)
