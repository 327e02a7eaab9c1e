# SPDX-License-Identifier: GPL-3.0-or-later
"""What ships inside the product: where the built-in demo model lives (the demo recipe installs
it there; the model loader reads it from there)."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo" / "model"
