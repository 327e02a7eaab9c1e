# SPDX-License-Identifier: GPL-3.0-or-later
"""The demo model's recipe: demo head → synthetic corpus → FLINT → EMOTE stage 1 → metrics.

``python -m server demo retrain`` runs it all and installs the result as the built-in demo
bundle (``server/demo/model``). Run again on the same work folder, it reuses the corpus and
finished stages and continues an interrupted (or lengthened) stage from its last checkpoint.

Stage 2 is not part of the recipe: its perceptual networks are trained on real faces, and a
procedural head with synthetic targets gives them nothing to correct that the vertex loss does
not already see (see README).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..builtin import DEMO_MODEL_DIR
from .head import EXPRESSIONS, build_demo_head, write_demo_head
from .voices import FESTIVAL_OTHER_LANGUAGE_VOICES

MODEL_DIR = DEMO_MODEL_DIR
SENTENCE_WAV = Path(__file__).resolve().parent / "sentence.wav"
SENTENCE_TEXT = ("Peter's mother made a lovely apple pudding for supper, and we ate every "
                 "bite!")
HELD_OUT_ENGINE = "festival"
HELD_OUT_VOICE = "cmu_us_slt_arctic_hts"
# festival's training voices: two US English diphone voices, and seven voices of other languages
# (Italian, Catalan, Finnish, Czech; four of them female) reading the English sentences with
# their own letter-to-sound rules, for more real speakers. Named, not "all installed", so that
# another machine's extra voices do not change the corpus.
FESTIVAL_TRAINING_VOICES = ("kal_diphone", "ked_diphone", *FESTIVAL_OTHER_LANGUAGE_VOICES)
# The Debian packages of the recipe's voices (tools/setup_voices.sh installs them).
VOICE_PACKAGES = ("espeak-ng flite festival festvox-us-slt-hts festvox-kallpc16k "
                  "festvox-kdlpc16k festvox-italp16k festvox-itapc16k festvox-ca-ona-hts "
                  "festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita festvox-czech-ph")

# Sizes and schedules. "quick" is for tests: the same code on a toy budget.
RECIPE: dict[str, Any] = {
    "seed": 0,
    "corpus": {"train": 10000, "val": 40, "test_sentences": 12},
    "flint": {"flint": {"feature_dim": 64, "latent_dim": 64, "dim_feedforward": 128,
                        "n_heads": 4},
              "max_steps": 8000, "batch_size": 16, "lr": 1e-3, "lr_schedule": "cosine",
              "window": 32, "kl_weight": 1e-4, "validations": 5},
    "stage1": {"model": {"wav2vec2": {"hidden_size": 128, "num_hidden_layers": 4,
                                      "num_attention_heads": 4, "intermediate_size": 256,
                                      "conv_dim": [128] * 7, "num_conv_pos_embeddings": 64,
                                      "num_conv_pos_embedding_groups": 8,
                                      "mask_time_prob": 0.05, "layerdrop": 0.0},
                         "feature_dim": 64, "n_heads": 4, "dim_feedforward": 128,
                         "dropout": 0.1},
               "train_audio_cnn": True, "loss_scale": 1e6, "phone_weight": 0.1,
               "max_steps": 8000, "batch_size": 8, "lr": 5e-4, "lr_schedule": "cosine",
               "window": 64, "gradient_clip": 1.0, "validations": 8},
}
QUICK = {"corpus": {"train": 12, "val": 2, "test_sentences": 2},
         "flint": {"max_steps": 10}, "stage1": {"max_steps": 10}}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def recipe(quick: bool = False) -> dict[str, Any]:
    return _merge(RECIPE, QUICK) if quick else RECIPE


def missing_voices() -> list[str]:
    """The recipe's engines and festival voices that this machine lacks (empty when ready)."""
    from .voices import available_engines, voices

    engines = available_engines()
    missing = sorted({"espeak-ng", "flite", HELD_OUT_ENGINE} - engines)
    if HELD_OUT_ENGINE in engines:
        installed = {v.name for v in voices(HELD_OUT_ENGINE)}
        needed = (HELD_OUT_VOICE, *FESTIVAL_TRAINING_VOICES)
        missing += [f"festival voice {name}" for name in needed if name not in installed]
    return missing


def split_voices() -> tuple[list[Any], list[Any]]:
    """(training voices, held-out voices). Festival's HTS ``slt`` voice speaks the held-out
    set; the voices of :data:`FESTIVAL_TRAINING_VOICES` train beside espeak-ng's and flite's.
    flite's ``slt`` is left out of training because festival's HTS voice was built from the
    same speaker."""
    from .voices import voices

    missing = missing_voices()
    if missing:
        raise ValueError(f"The demo corpus needs {', '.join(missing)} (Debian: apt-get install "
                         f"{VOICE_PACKAGES}).")
    festival = {v.name: v for v in voices(HELD_OUT_ENGINE)}
    train = list(voices("espeak-ng"))
    train += [v for v in voices("flite") if "slt" not in v.name]
    train += [festival[name] for name in FESTIVAL_TRAINING_VOICES]
    return train, [festival[HELD_OUT_VOICE]]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def retrain(work: Path, quick: bool = False, install: bool = True) -> dict[str, Any]:
    """Run the whole recipe in ``work``; returns the metrics. ``install`` copies the bundle and
    its metrics into :data:`MODEL_DIR`."""
    from .corpus import build_corpus, plan

    settings = recipe(quick)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    head = write_demo_head(work / "head")
    _log(f"demo head: {head}")
    train_voices, test_voices = split_voices()
    _log(f"voices: {len(train_voices)} for training, held out: "
         f"{', '.join(v.engine + ':' + v.name for v in test_voices)}")
    corpus = work / "corpus"
    if not (corpus / "index.json").is_file():
        specs = plan(train_voices, test_voices, settings["corpus"]["train"],
                     settings["corpus"]["val"], seed=settings["seed"],
                     test_sentences=settings["corpus"]["test_sentences"])
        build_corpus(corpus, specs, progress=lambda d, n: d % 100 == 0 and _log(
            f"corpus {d}/{n}"))
    _log("corpus ready")
    paths = {"data": str(corpus), "flame": str(head)}
    flint_bundle = _train_stage("flint", settings, work, paths)
    bundle = _train_stage("stage1", settings, work, {**paths,
                                                      "flint_bundle": str(flint_bundle)})
    _log("evaluating on held-out speech")
    metrics = evaluate(bundle, corpus, head, flint_bundle)
    metrics["training_seconds"] = round(time.perf_counter() - started, 1)
    metrics["recipe"] = settings
    (bundle / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if install:
        install_bundle(bundle)
        write_demo_sentence()
    return metrics


def _train_stage(stage: str, settings: dict[str, Any], work: Path, paths: dict[str, str]
                 ) -> Path:
    """The bundle of ``stage`` ("flint" or "stage1") trained with the recipe's settings and the
    data/FLAME/FLINT ``paths``: reused when ``work/<stage>`` already holds one trained for
    exactly the recipe's steps; otherwise trained, continuing from the last checkpoint of an
    interrupted (or shorter) run. The config is kept as ``work/<stage>.yaml``."""
    from ..train.run import train

    own = dict(settings[stage])
    validations = own.pop("validations")
    config = {**paths, "out": str(work / stage), "seed": settings["seed"], "accelerator": "cpu",
              **own, "val_every": max(1, own["max_steps"] // validations)}
    run = work / stage
    bundle = run / "bundle"
    config_file = bundle / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get(
            "trained_steps") == own["max_steps"]:
        _log(f"{stage} already trained: {bundle}")
        return bundle
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        config["resume"] = str(last)
        _log(f"resuming {stage} from {last}")
    (work / f"{stage}.yaml").write_text(yaml.safe_dump(config))
    return train(stage, work / f"{stage}.yaml")


def write_demo_sentence(wav: Path = SENTENCE_WAV) -> Path:
    """The shipped demo sentence: a held-out sentence in the held-out voice (16-bit WAV), with
    its phone timings beside it (``.json``: text, voice, phones in seconds into the file)."""
    import soundfile

    from .corpus import padded
    from .voices import SAMPLE_RATE, Voice, synthesize

    voice = Voice(HELD_OUT_ENGINE, "cmu_us_slt_arctic_hts")
    utterance = synthesize(SENTENCE_TEXT, voice)
    pad = 0.25
    audio = padded(utterance.audio, pad, pad)
    soundfile.write(str(wav), 0.8 * audio / np.abs(audio).max(), SAMPLE_RATE, subtype="PCM_16")
    phones = [(p, round(s + pad, 4), round(e + pad, 4)) for p, s, e in utterance.phones]
    wav.with_suffix(".json").write_text(json.dumps({
        "text": SENTENCE_TEXT, "voice": f"{voice.engine}:{voice.name}", "phones": phones}))
    return wav


def install_bundle(bundle: Path) -> Path:
    """Copy a trained bundle (config, weights, metrics) into :data:`MODEL_DIR`."""
    staging = MODEL_DIR.with_name("model.new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    config = json.loads((staging / "config.json").read_text())
    config["flint"] = "FLINT trained by the demo recipe (python -m server demo retrain)"
    # The corpus animates the demo head's components before "blink" (a living-face layer's);
    # what the network puts in the others never met a gradient.
    config["expression_components"] = EXPRESSIONS.index("blink")
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    staging.rename(MODEL_DIR)
    _log(f"installed the demo model in {MODEL_DIR}")
    return MODEL_DIR


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def evaluate(bundle: Path, corpus: Path, head_file: Path, flint_bundle: Path | None = None
             ) -> dict[str, Any]:
    """Metrics on the corpus' held-out (test) sequences, run through the inference engine:

    - lip-vertex error (mean distance over the lip vertices, mm) of the model and of the mean
      training pose, and their ratio;
    - with ``flint_bundle``: the lip-vertex error of FLINT reconstructing the target motion
      (encoder mean → decoder): how well the motion prior that stage 1 decodes through can
      represent the targets at all;
    - Pearson correlation of predicted and target jaw opening over all test frames;
    - per emotion: mean upper-face vertex displacement from the Neutral take (mm) and the jaw
      correlation of that emotion's takes.
    """
    import torch

    from ..animator import Animator
    from ..audio import clip_from_samples
    from ..checkpoints import load_flint_bundle, load_model
    from ..flame import FlameModel, load_flame_file
    from ..train.data import read_index

    head = build_demo_head()
    flame = FlameModel(load_flame_file(head_file))
    lips, upper = head.groups["lips"], head.groups["upper_face"]
    animator = Animator(load_model(bundle), device="cpu")
    index = read_index(corpus)
    entries = [e for e in index["sequences"] if e["split"] == "test"]
    train_entries = [e for e in index["sequences"] if e["split"] == "train"]
    mean_motion = np.mean([np.concatenate([d["expression"], d["jaw"]], 1).mean(0) for d in (
        np.load(corpus / e["file"]) for e in train_entries[:400])], axis=0)
    mean_lips = flame.vertices(mean_motion[None, :100], mean_motion[None, 100:])[0, lips]
    emotions = list(animator.loaded.config.emotions)
    style = entries[0]["identity"]
    errors, baseline, jaw_pred, jaw_true, floor = [], [], [], [], []
    flint = load_flint_bundle(flint_bundle).eval() if flint_bundle is not None else None
    per_emotion: dict[str, dict[str, list]] = {e: {"disp": [], "pred": []}
                                               for e in emotions}
    for entry in entries:
        data = np.load(corpus / entry["file"])
        clip = clip_from_samples(data["audio"], source=entry["file"])
        target = flame.vertices(data["expression"], data["jaw"])
        n = min(len(target), clip.frames)
        condition = {"emotion": emotions[entry["emotion"]], "intensity": "medium",
                     "style": style}
        take = animator.generate(clip, condition)
        predicted = flame.vertices(take.expression[:n], take.jaw[:n])
        errors.append(np.linalg.norm(predicted[:, lips] - target[:n, lips], axis=-1).mean())
        baseline.append(np.linalg.norm(mean_lips - target[:n, lips], axis=-1).mean())
        jaw_pred.append(take.jaw[:n, 0])
        jaw_true.append(data["jaw"][:n, 0])
        if flint is not None:
            whole = n - n % flint.config.frames_per_latent
            motion = np.concatenate([data["expression"], data["jaw"]], 1)[None, :whole]
            with torch.no_grad():
                rebuilt = flint(torch.from_numpy(motion).float(), sample=False)[0][0].numpy()
            floor.append(np.linalg.norm(
                flame.vertices(rebuilt[:, :100], rebuilt[:, 100:])[:, lips]
                - target[:whole, lips], axis=-1).mean())
        neutral = None
        for emotion in emotions:
            take_e = animator.generate(clip, {"emotion": emotion, "intensity": "strong",
                                              "style": style})
            vertices = flame.vertices(take_e.expression[:n], take_e.jaw[:n])
            if emotion == emotions[0]:
                neutral = vertices
            per_emotion[emotion]["disp"].append(
                np.linalg.norm(vertices[:, upper] - neutral[:, upper], axis=-1).mean())
            per_emotion[emotion]["pred"].append(take_e.jaw[:n, 0])
    lip_error = float(np.mean(errors)) * 1000
    mean_error = float(np.mean(baseline)) * 1000
    true_jaw = np.concatenate(jaw_true)  # the same targets for every emotion's takes
    metrics: dict[str, Any] = {
        "held_out_sequences": len(entries),
        "held_out_voice": entries[0].get("voice", ""),
        "lip_vertex_error_mm": round(lip_error, 3),
        "mean_pose_lip_error_mm": round(mean_error, 3),
        "lip_error_ratio": round(lip_error / mean_error, 3),
        "jaw_opening_correlation": round(_pearson(np.concatenate(jaw_pred), true_jaw), 3),
        "per_emotion_strong": {
            e: {"upper_face_displacement_mm": round(float(np.mean(v["disp"])) * 1000, 3),
                "jaw_opening_correlation": round(_pearson(np.concatenate(v["pred"]),
                                                          true_jaw), 3)}
            for e, v in per_emotion.items()},
    }
    if floor:
        metrics["flint_lip_error_mm"] = round(float(np.mean(floor)) * 1000, 3)
        metrics["flint_lip_error_ratio"] = round(float(np.mean(floor)) * 1000 / mean_error, 3)
    return metrics
