# SPDX-License-Identifier: GPL-3.0-or-later
"""Command line: ``python -m server generate | info | train | prepare-mead | demo | worker``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .protocol import check_threads

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".opus"}


class UsageError(ValueError):
    """Bad command-line input."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="EMOTE emotional speech-driven FLAME animation: generate expression and jaw "
                    "parameters from speech, inspect a model, train models, rebuild the built-in "
                    "demo, or run the worker the Blender add-on talks to.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate", help="speech → FLAME expression (T,100) and jaw (T,3) at 25 fps",
        description="Generate FLAME expression and jaw parameters (25 fps) from speech. With "
                    "several inputs, a folder, or --emotion all, OUT is a folder and one file "
                    "is written per input and emotion (<audio>_<Emotion>.npz).")
    gen.add_argument("audio", nargs="+", type=Path,
                     help="audio file(s) (wav, flac, ogg, mp3; m4a/aac with PyAV) or folders")
    _model_args(gen)
    gen.add_argument("--flame", type=Path,
                     help="FLAME model file (.pkl); adds vertices (T,V,3) and faces to the output")
    gen.add_argument("--emotion", default="Neutral",
                     help="emotion name, 'all', or a mixture such as 'Happy=0.7,Surprise=0.3' "
                          "(default: Neutral)")
    gen.add_argument("--intensity", default="2",
                     help="0|1|2 or mild|medium|strong (default: 2, strong)")
    gen.add_argument("--style", default="0",
                     help="speaking style: index or name, e.g. M003 for the official model "
                          "(see info; default: 0, the first)")
    gen.add_argument("--condition", type=Path,
                     help="a .npy of shape (C,) or (N,C) used instead of "
                          "--emotion/--intensity/--style (C=43 for the official model)")
    gen.add_argument("--allow-low-rate", action="store_true",
                     help="accept audio sampled below 16 kHz (telephone audio), with a warning")
    gen.add_argument("--start", type=float, help="start of the audio to use, in seconds")
    gen.add_argument("--end", type=float, help="end of the audio to use, in seconds")
    gen.add_argument("--format", choices=("npz", "json"),
                     help="output format when OUT is a folder (default: npz)")
    gen.add_argument("--no-extras", action="store_true",
                     help="leave out the living layers: without it the take also holds eyes "
                          "(T,2,3: axis-angle of the FLAME left and right eye joints), neck "
                          "(T,3: axis-angle of the FLAME neck joint) and eyelids (T: closure, "
                          "0 open to 1 closed), from blink, gaze and head-motion models, and "
                          "the lip closure of --lip-closure")
    gen.add_argument("--lip-closure", type=float, default=1.0, metavar="AMOUNT",
                     help="shut the lips at the p, b and m a detector finds in the audio, from 0 "
                          "(off) to 1 (fully shut; the default), with the living layers: the "
                          "take's expression and jaw are changed there and it also holds "
                          "closure (T: 0 open to 1 shut, where the lips were shut). Needs the "
                          "head's geometry: the --flame file, the model's own head, or for the "
                          "built-in demo model the demo head; without it only the closure "
                          "field is written")
    gen.add_argument("--arkit-csv", type=Path, metavar="OUT.csv",
                     help="also write the take's per-frame ARKit-52 weights (jaw included) "
                          "with the head and eye angles in Live Link Face's CSV layout, which "
                          "Unreal imports; with several takes a folder, one <take>.csv each. "
                          "Measured on the head's geometry (the --flame file, the model's own "
                          "head, or the demo head; see server/export/flame_arkit.py)")
    gen.add_argument("--character", type=Path, metavar="MAPPING.json",
                     help="with --arkit-csv: the CSV's ARKit weights are this character's own "
                          "ARKit keys, retargeted through its mapping (server/retarget, set up "
                          "with the same FLAME head) instead of the FLAME → ARKit "
                          "approximation")
    gen.add_argument("--seed", type=int,
                     help="seed of the blink, gaze and head layers (default: from the audio's "
                          "content, so the same audio gives the same layers)")
    gen.add_argument("-o", "--output", required=True,
                     help="output file (.npz or .json), or a folder for several outputs (a "
                          "name ending in / is a folder); an existing file is replaced only "
                          "when it is a take written by this program")

    info = sub.add_parser("info", help="describe a model: emotions, styles, sizes, FLINT source")
    _model_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")

    train = sub.add_parser("train", help="train FLINT, EMOTE stage 1 or stage 2",
                           description="Train from a YAML config (see server/train/run.py and "
                                       "README); writes checkpoints, logs and a bundle.")
    train.add_argument("stage", choices=("flint", "stage1", "stage2"))
    train.add_argument("--config", type=Path, required=True, help="training config (.yaml)")

    mead = sub.add_parser("prepare-mead", help="convert processed MEAD into a training dataset",
                          description="Convert the official processed-MEAD folder (metadata.pkl, "
                                      "audio/, reconstructions/EMICA-MEAD_flame2020/, "
                                      "landmarks_original/) into our training dataset format.")
    mead.add_argument("processed", type=Path, help="the processed/ folder")
    mead.add_argument("out", type=Path, help="the dataset folder to write")

    demo = sub.add_parser("demo", help="the built-in demo: write the demo head, or retrain the "
                                       "demo model",
                          description="The built-in demo. 'head OUT' writes the procedural demo "
                                      "head (FLAME layout) into OUT; 'retrain' rebuilds the "
                                      "synthetic corpus, trains FLINT and stage 1, reports "
                                      "held-out metrics and installs the bundle as the demo "
                                      "model (needs espeak-ng, flite, festival and ten of "
                                      "its voices: bash tools/setup_voices.sh).")
    demo.add_argument("action", choices=("head", "retrain"))
    demo.add_argument("out", type=Path, nargs="?", default=Path("out/demo-train"),
                      help="head: folder to write; retrain: work folder (default: "
                           "out/demo-train)")
    demo.add_argument("--quick", action="store_true",
                      help="retrain on a toy budget (to try the recipe; not installed)")

    worker = sub.add_parser("worker", help="JSON-lines worker on stdin/stdout (for the add-on)")
    worker.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                        help="exit after this long without requests (default: never)")
    return parser


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path,
                        help="official EMOTE_v2 folder (cfg.yaml + checkpoints/last.ckpt) or a "
                             "bundle folder (config.json + model.safetensors); default: the "
                             "built-in demo model")
    parser.add_argument("--assets", type=Path,
                        help="assets root holding MotionPrior/ (default: three levels above an "
                             "official EMOTE_v2 folder)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"),
                        help="what runs the networks: onnx (ONNX Runtime, CPU, no torch), torch "
                             "(CPU, CUDA, MPS); default: auto = onnx when onnxruntime is "
                             "installed, torch for --device cuda or mps")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where to run: the onnx backend runs on the CPU; torch's auto = "
                             "cuda, then mps, then cpu (default: auto)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads (1 to 4 × the number of CPU cores; default: one per "
                             "core)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from .worker import main as worker_main

        return worker_main(args.idle_timeout)
    try:
        if getattr(args, "threads", None) is not None:
            check_threads(args.threads, "--threads")
        if args.command == "prepare-mead":
            from .train.mead import convert

            summary = convert(args.processed, args.out)
            print(f"wrote {summary['sequences']} sequences to {args.out} "
                  f"({len(summary['identities'])} training identities, "
                  f"{len(summary['skipped'])} videos skipped)")
            return 0
        if args.command == "train":
            from .train.run import train

            train(args.stage, args.config)
            return 0
        if args.command == "demo":
            return _demo(args)
        if args.command == "info":
            return _info(args)
        return _generate(args)
    except ValueError as exc:  # our errors are ValueErrors with a user-facing sentence
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _animator(args: argparse.Namespace) -> Any:
    """The model of ``--model`` in the backend of ``--backend`` / ``--device``."""
    from .animator import Animator
    from .backends import choose
    from .checkpoints import read_model

    backend = choose(args.backend, args.device)  # an unusable choice fails before loading
    return Animator(read_model(args.model, args.assets), device=args.device, backend=backend,
                    threads=args.threads)


def _demo(args: argparse.Namespace) -> int:
    if args.action == "head":
        from .demo.head import write_demo_head

        print(f"wrote {write_demo_head(args.out)}")
        return 0
    from .demo.recipe import retrain

    metrics = retrain(args.out, quick=args.quick, install=not args.quick)
    print(json.dumps({k: v for k, v in metrics.items() if k != "recipe"}, indent=1))
    return 0


def _info(args: argparse.Namespace) -> int:
    info = _animator(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"Model:        {info['source']} ({info['kind']})")
    print(f"Emotions:     {', '.join(info['emotions'])}")
    print(f"Intensities:  {', '.join(info['intensities'])}")
    print(f"Styles:       {len(info['styles'])} ({', '.join(info['styles'][:6])}"
          f"{', …' if len(info['styles']) > 6 else ''})")
    print(f"Condition:    {info['condition_dim']} numbers per frame")
    print(f"Output:       {info['expression_dim']} expression + {info['jaw_dim']} jaw at "
          f"{info['fps']} fps")
    print(f"Audio model:  wav2vec2, {info['audio_layers']} layers × {info['audio_hidden_size']}")
    print(f"Parameters:   {info['parameters']:,}")
    print(f"FLINT:        {info['flint']}")
    print(f"Backend:      {info['runtime']} on {info['device']}"
          + (f"; graphs {info['graphs']}" if info["graphs"] else ""))
    for note in info["notes"]:
        print(f"Note:         {note}")
    return 0


def _audio_inputs(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"The folder '{path}' contains no audio files.")
            files.extend(found)
        else:
            files.append(path)
    return files


def _parse_choice(text: str) -> Any:
    """'Happy' → 'Happy'; 'Happy=0.7,Surprise=0.3' → {'Happy': 0.7, 'Surprise': 0.3}. A name
    given twice is refused here as the condition refuses 'Happy' with 'happy': one way."""
    if "=" not in text:
        return text
    mixture = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name in mixture:
            raise UsageError(f"'{name}' is given twice in '{text}'; give each name once with "
                             "its total weight.")
        try:
            mixture[name] = float(weight)
        except ValueError:
            raise UsageError(f"Bad weight in '{part}': use NAME=NUMBER, e.g. Happy=0.7.") from None
    return mixture


def _conditions(args: argparse.Namespace, emotions: list[str]) -> list[tuple[str, Any]]:
    """(name used in file names, condition) pairs."""
    if args.condition is not None:
        from .condition import read_condition_file

        return [(args.condition.stem, read_condition_file(args.condition))]
    names = emotions if args.emotion.strip().lower() == "all" else [args.emotion]
    return [(name.replace("=", "").replace(",", "+"),
             {"emotion": _parse_choice(name), "intensity": _parse_choice(args.intensity),
              "style": _parse_choice(args.style)}) for name in names]


def _generate(args: argparse.Namespace) -> int:
    from .audio import check_range_numbers, load_audio
    from .output import check_output_file, check_output_folder, check_take_finite

    check_range_numbers(args.start, args.end)
    if not 0.0 <= args.lip_closure <= 1.0:  # also refuses nan
        raise UsageError(f"--lip-closure must be from 0 (off) to 1 (fully shut), got "
                         f"{args.lip_closure}.")
    wants_folder = args.output.endswith(("/", os.sep))
    args.output = Path(args.output)
    inputs = _audio_inputs(args.audio)
    many_emotions = args.condition is None and args.emotion.strip().lower() == "all"
    batch = (len(inputs) > 1 or many_emotions or any(p.is_dir() for p in args.audio)
             or wants_folder)
    if not batch and args.output.is_dir():
        raise UsageError(f"'{args.output}' is a folder; give an output file name "
                         "(.npz or .json).")
    if batch and os.path.lexists(args.output) and not args.output.is_dir():
        raise UsageError(f"'{args.output}' is a file; with several takes the output must be a "
                         "folder.")
    # Check the outputs and the single input before the (slow) model load so mistakes fail
    # fast and nothing runs for a take that could not be written.
    if batch:
        check_output_folder(args.output)
    else:
        check_output_file(args.output, inputs)
    if args.arkit_csv is not None and not batch:
        _check_arkit_csv(args.arkit_csv, args, inputs)
    if args.arkit_csv is not None and batch and args.arkit_csv.suffix.lower() == ".csv":
        raise UsageError(f"With several takes --arkit-csv is a folder (one <take>.csv each), "
                         f"not '{args.arkit_csv}'.")
    mapping = None
    if args.character is not None:
        if args.arkit_csv is None:
            raise UsageError("--character is the mapping --arkit-csv writes the character's "
                             "ARKit weights through; give --arkit-csv OUT.csv too.")
        from .export.character import read_arkit_mapping

        mapping = read_arkit_mapping(args.character)
    clips = {} if batch else {
        inputs[0]: load_audio(inputs[0], args.start, args.end, args.allow_low_rate)}
    flame = None
    if args.flame is not None:
        from .flame import load_flame_file

        flame = load_flame_file(args.flame)
    animator = _animator(args)
    loaded = animator.loaded
    conditions = _conditions(args, list(loaded.config.emotions))
    for _, condition in conditions:  # a bad mixture is one error, not one per input
        animator.space.per_frame(condition, 1)
    if flame is not None and flame.n_expression < loaded.config.n_expression:
        print(f"warning: the FLAME file has {flame.n_expression} expression components; the "
              f"model's first {flame.n_expression} are used for vertices", file=sys.stderr)
    wants_closure = not args.no_extras and args.lip_closure > 0
    head, head_source = (_head_geometry(loaded, flame) if wants_closure or args.arkit_csv
                         else (None, ""))
    arkit = None if args.arkit_csv is None else _arkit_source(head, head_source, mapping,
                                                               args.character)
    lip_closure, closure_note = _lip_closure(head, head_source) if wants_closure else (None, "")
    suffix = "." + (args.format or "npz")
    jobs = [(audio, cond, args.output / f"{audio.stem}_{name}{suffix}" if batch else args.output)
            for audio in inputs for name, cond in conditions]
    if batch:
        _check_distinct_outputs(jobs)
        for _, _, out in jobs:
            check_output_file(out, inputs)
            if args.arkit_csv is not None:
                _check_arkit_csv(args.arkit_csv / f"{out.stem}.csv", args, inputs)
    failures = 0
    progress = _progress_bar(len(jobs)) if batch else None
    for audio, condition, out in jobs:
        try:
            clip = clips.get(audio) or load_audio(audio, args.start, args.end,
                                                  args.allow_low_rate)
            for warning in clip.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            take = animator.generate(clip, condition)
            check_take_finite(take)
            extras = None if args.no_extras else _living_fields(
                clip, take, loaded.config.emotions, args.seed)
            model_jaw = take.jaw  # before the lip closure, for the ARKit export
            if extras is not None and args.lip_closure > 0:
                take, extras["closure"] = _close_lips(clip, take, lip_closure,
                                                      args.lip_closure)
            _write(out, take, flame, extras)
            if closure_note:  # said once, with the first take written
                print(f"note: {closure_note}", file=sys.stderr)
                closure_note = ""
            if not batch:
                print(f"wrote {out} ({take.frames} frames at {take.fps} fps, {take.label})")
            if arkit is not None:
                csv = args.arkit_csv / f"{out.stem}.csv" if batch else args.arkit_csv
                _write_arkit_csv(csv, take, extras, model_jaw, arkit, inputs, quiet=batch)
        except ValueError as exc:
            if not batch:
                raise
            failures += 1
            print(f"error: {audio}: {exc}", file=sys.stderr)
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
        print(f"wrote {len(jobs) - failures} of {len(jobs)} takes to {args.output}")
        if args.arkit_csv is not None:
            print(f"wrote their Live Link CSVs to {args.arkit_csv}")
    return 1 if failures else 0


def _check_distinct_outputs(jobs: list[tuple[Path, Any, Path]]) -> None:
    """Two inputs with the same name (a/line.wav, b/line.wav, a/line.flac) would write the
    same take file; refuse before anything runs instead of keeping only the last. Names are
    compared without case, as macOS and Windows file systems do."""
    seen: dict[str, Path] = {}
    for audio, _, out in jobs:
        key = os.path.normcase(str(out)).lower()
        if key in seen and seen[key] != audio:
            raise UsageError(f"'{seen[key]}' and '{audio}' would both be written to '{out}'; "
                             "rename one of them or generate them separately.")
        seen[key] = audio


def _living_fields(clip: Any, take: Any, emotions: Any, seed: int | None) -> dict[str, Any]:
    """The ``eyes``, ``neck`` and ``eyelids`` fields of a take (server/living). They are not
    applied to ``vertices``: those stay the model's expression and jaw, as before."""
    from .living import emotion_weights, living_layers, seed_from_hash

    seed = seed_from_hash(clip.content_hash()) if seed is None else seed
    layers = living_layers(clip.samples, take.frames,
                           emotion_weights(take.condition, list(emotions)), seed)
    return layers.fields()


def _head_geometry(loaded: Any, flame: Any) -> tuple[Any, str]:
    """The head the takes are for and what it is: the --flame file, the model bundle's own
    head, or the demo head for the built-in demo model; (None, "") when none is known."""
    from .builtin import DEMO_MODEL_DIR

    if flame is not None:
        return flame, "the FLAME file"
    if loaded.flame_path is not None:
        from .flame import load_flame_file

        return load_flame_file(loaded.flame_path), f"'{loaded.flame_path}'"
    if Path(loaded.source).resolve() == DEMO_MODEL_DIR.resolve():
        from .demo.head import build_demo_head

        return build_demo_head().flame, "the demo head"
    return None, ""


def _lip_closure(flame: Any, source: str) -> tuple[Any, str]:
    """The lip-closing operator (server/living/closure.py) of the head the take is for
    (:func:`_head_geometry`), or None and the note that says why the lips are not shut (printed
    with the first take written)."""
    from .living.closure import lip_closure

    if flame is None:
        return None, ("the lips were not shut at p, b and m: no head geometry is known (give "
                      "--flame); the take's closure field says where they would shut")
    try:
        return lip_closure(flame), ""
    except ValueError as exc:
        return None, (f"the lips were not shut at p, b and m: {source}: {exc} The take's "
                      "closure field says where they would shut.")


def _close_lips(clip: Any, take: Any, closure: Any, amount: float) -> tuple[Any, Any]:
    """The take with its lips shut at the detected p, b and m (when ``closure`` is known)
    and the closure track (T,)."""
    import dataclasses

    import numpy as np

    from .living.closure import close_lips, closure_weights

    weights = closure_weights(clip.samples, take.frames)
    if closure is None:
        return take, weights
    n = min(closure.n_expression, take.expression.shape[1])
    expression, jaw = close_lips(take.expression[:, :n], take.jaw, weights, closure, amount)
    expression = np.concatenate([expression, take.expression[:, n:]], axis=1)
    return dataclasses.replace(take, expression=expression, jaw=jaw), weights


def _check_arkit_csv(path: Path, args: argparse.Namespace, inputs: list[Path]) -> None:
    """Refuse, before the model runs, an --arkit-csv that would replace an input or a file
    that is not a Live Link CSV."""
    from .export.livelink import check_csv_output

    others = [*inputs, args.output, *(p for p in (args.flame, args.character) if p is not None)]
    check_csv_output(path, others)


def _arkit_source(flame: Any, source: str, mapping: Any, mapping_path: Path | None
                  ) -> tuple[Any, Any, Any]:
    """(FLAME data, landmarks, mapping) the ARKit export works from: the approximation's
    landmarks without a mapping, the mapping with one; a sentence when the head's geometry is
    unknown, its landmarks cannot be found or the mapping was set up for another head."""
    from .export.flame_arkit import find_face_points

    if flame is None:
        raise UsageError("--arkit-csv measures the ARKit weights on the head's geometry, and "
                         "none is known for this model: give --flame FILE.")
    if mapping is not None:
        if mapping.flame_vertex_count != flame.n_vertices:
            raise UsageError(f"'{mapping_path}' was set up with a FLAME head of "
                             f"{mapping.flame_vertex_count} vertices, but the takes are for "
                             f"{source} ({flame.n_vertices}): give the --flame file the "
                             "character was set up with.")
        return flame, None, mapping
    try:
        return flame, find_face_points(flame), None
    except ValueError as exc:
        raise UsageError(f"--arkit-csv: {source}: {exc}") from None


def _write_arkit_csv(path: Path, take: Any, extras: dict[str, Any] | None, model_jaw: Any,
                     arkit: Any, inputs: list[Path], quiet: bool = False) -> None:
    """The take's ARKit weights as a Live Link CSV: the FLAME → ARKit approximation
    (server/export/flame_arkit.py), or the character's ARKit keys through its mapping."""
    from .export.flame_arkit import approximate_arkit, yaw_pitch_roll
    from .export.livelink import write_livelink_csv

    flame, points, mapping = arkit
    extras = extras or {}
    if mapping is None:
        result = approximate_arkit(flame, take.expression, take.jaw,
                                   eyelids=extras.get("eyelids"), eyes=extras.get("eyes"),
                                   neck=extras.get("neck"), model_jaw=model_jaw, points=points)
        weights, head, eyes, notes = result.weights, result.head, result.eyes, result.notes
        what = f"ARKit-52 approximation; not measured: {', '.join(result.unmeasured)}"
    else:
        from .export.character import character_arkit_weights
        from .retarget import retarget

        n = min(flame.n_expression, take.expression.shape[1])
        solved = retarget(mapping, flame, take.expression[:, :n], take.jaw,
                          fps_scale=take.fps / 25, closure=extras.get("closure"))
        weights, notes = character_arkit_weights(mapping, solved, take.jaw,
                                                 extras.get("eyelids"), extras.get("eyes"))
        notes = solved.notes + notes
        head = None if "neck" not in extras else yaw_pitch_roll(extras["neck"])
        eyes = None if "eyes" not in extras else yaw_pitch_roll(extras["eyes"])
        what = f"{mapping.character}'s {len(mapping.arkit)} ARKit keys through its mapping"
    written = write_livelink_csv(path, weights, take.fps, head=head, eyes=eyes, inputs=inputs)
    if not quiet:
        print(f"wrote {written.path} ({what}, {written.frames} frames)")
        for note in notes + written.notes:
            print(f"note: {note}", file=sys.stderr)


def _write(out: Path, take: Any, flame: Any, extras: dict[str, Any] | None = None) -> None:
    from .output import write_take

    vertices = faces = None
    if flame is not None:
        from .flame import flame_vertices

        n = min(flame.n_expression, take.expression.shape[1])
        vertices = flame_vertices(flame, take.expression[:, :n], take.jaw)
        faces = flame.faces
    write_take(out, take, vertices, faces, extras)


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="take", file=sys.stderr, dynamic_ncols=True)
