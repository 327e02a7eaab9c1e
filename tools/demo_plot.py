# SPDX-License-Identifier: GPL-3.0-or-later
"""Plot the demo's takes: ``python tools/demo_plot.py TAKES.npz OUT.png``.

One panel for the jaw opening (degrees), one per named expression component shown and, for takes
with the living face, one for the eyelid closure and one for the head's pitch (the neck's
rotation about x, degrees), each with both takes, against time at 25 fps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from server.demo.head import EXPRESSIONS  # noqa: E402

SHOWN = ("lip rounding", "lip press", "mouth corners up", "mouth corners down",
         "brow inner up", "cheek raise")


def plot(takes: Path, out: Path) -> Path:
    data = np.load(takes)
    emotions = list(dict.fromkeys(k.split("_")[0] for k in data.files))  # in take order
    living = f"{emotions[0]}_eyelids" in data.files
    rows = len(SHOWN) + 1 + (2 if living else 0)
    figure, axes = plt.subplots(rows, 1, figsize=(9, 11 + (3 if living else 0)), sharex=True)
    expression_axes = axes[1:len(SHOWN) + 1]
    for emotion in emotions:
        jaw = data[f"{emotion}_jaw"]
        expression = data[f"{emotion}_expression"]
        label = str(data[f"{emotion}_name"])
        t = np.arange(len(jaw)) / 25
        axes[0].plot(t, np.degrees(jaw[:, 0]), label=label)
        for axis, name in zip(expression_axes, SHOWN, strict=True):
            axis.plot(t, expression[:, EXPRESSIONS.index(name)], label=label)
        if living:
            axes[-2].plot(t, data[f"{emotion}_eyelids"], label=label)
            axes[-1].plot(t, np.degrees(data[f"{emotion}_neck"][:, 0]), label=label)
    axes[0].set_ylabel("jaw opening (°)")
    axes[0].legend(loc="upper right")
    if living:
        axes[-2].set_ylabel("eyelid closure", rotation=0, ha="right", va="center")
        axes[-1].set_ylabel("head pitch (°)", rotation=0, ha="right", va="center")
    for axis, name in zip(expression_axes, SHOWN, strict=True):
        axis.set_ylabel(name, rotation=0, ha="right", va="center")
        axis.axhline(0, color="grey", linewidth=0.5)
    axes[-1].set_xlabel("seconds")
    figure.suptitle("Demo takes: jaw opening and expression components")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    return out


if __name__ == "__main__":
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
