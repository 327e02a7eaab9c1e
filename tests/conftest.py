# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub

from tests import builders  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return builders.write_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    return builders.write_wav(tmp_path_factory.mktemp("audio") / "speech.wav", 3.0)


@pytest.fixture(scope="session")
def flame_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("flame")
    return {
        "clean": builders.write_synthetic_flame(folder / "clean.pkl"),
        "legacy": builders.write_synthetic_flame(folder / "legacy.pkl", legacy=True),
    }
