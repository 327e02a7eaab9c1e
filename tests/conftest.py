# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures. Import-safe without torch: the Blender tests run in bpy-only venvs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np

    np.random.seed(0)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from tests import builders

    return builders.write_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    from tests import builders

    return builders.write_wav(tmp_path_factory.mktemp("audio") / "speech.wav", 3.0)


@pytest.fixture(scope="session")
def flame_files(tmp_path_factory) -> dict[str, Path]:
    from tests import builders

    folder = tmp_path_factory.mktemp("flame")
    return {
        "clean": builders.write_synthetic_flame(folder / "clean.pkl"),
        "legacy": builders.write_synthetic_flame(folder / "legacy.pkl", legacy=True),
    }
