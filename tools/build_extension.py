# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the installable extension: ``python tools/build_extension.py OUTDIR`` writes
``OUTDIR/emote_lipsync-<version>.zip`` holding the add-on (``emote_blender/``), the worker
source it runs (``server/``), the manifest and the licence. Any Python 3.11; no Blender needed.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not SKIP_PARTS.intersection(p.parts) and p.suffix != ".pyc")


def build(out_dir: Path) -> Path:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(ROOT / "blender_manifest.toml", "blender_manifest.toml")
        archive.write(ROOT / "LICENSE", "LICENSE")
        for path in files_of(ROOT / "emote_blender"):
            archive.write(path, path.relative_to(ROOT / "emote_blender").as_posix())
        for path in files_of(ROOT / "server"):
            archive.write(path, path.relative_to(ROOT).as_posix())
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write the .zip into")
    args = parser.parse_args()
    print(build(args.outdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
