# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m tests.make_fixtures OUT``: the torch-side files the Blender tests need (run with
the worker venv): a tiny model bundle, synthetic FLAME files in both conventions' layouts, and
speech. ``python -m tests.make_fixtures --forward FLAME IN.npz OUT.npz``: FLAME vertices for
(expression, jaw) rows, the geometric reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def make(out: Path) -> None:
    from tests import builders

    out.mkdir(parents=True, exist_ok=True)
    builders.write_bundle(out / "bundle", seed=3)
    builders.write_synthetic_flame(out / "flame.pkl")
    builders.write_synthetic_flame(out / "flame_legacy.pkl", legacy=True)
    builders.write_wav(out / "speech.wav", 4.0, seed=5)
    builders.write_wav(out / "long.wav", 1200.0, seed=7)  # long enough to cancel or kill


def forward(flame: Path, inputs: Path, output: Path) -> None:
    from server.flame import FlameModel, load_flame_file

    data = np.load(inputs)
    model = FlameModel(load_flame_file(flame))
    np.save(output, model.vertices(data["expression"], data["jaw"]))


if __name__ == "__main__":
    if sys.argv[1] == "--forward":
        forward(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        make(Path(sys.argv[1]))
