# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile or broken model folders: every one is refused with one sentence, before anything of
the size it asks for is allocated, and nothing non-finite ever comes out of a model that loads."""

from __future__ import annotations

import json
import resource
import shutil

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from server.checkpoints import ModelFolderError, read_model
from tests.builders import run_server, write_official_release


def _bundle(tmp_path, tiny_bundle, edit_config=None, edit_weights=None):
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    if edit_config is not None:
        path = folder / "config.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps(edit_config(meta)))
    if edit_weights is not None:
        state = load_file(str(folder / "model.safetensors"))
        edit_weights(state)
        save_file(state, str(folder / "model.safetensors"))
    return folder


def _model(**changes):
    def edit(meta):
        for dotted, value in changes.items():
            node = meta["model"]
            *parents, last = dotted.split("__")
            for part in parents:
                node = node[part]
            node[last] = value
        return meta
    return edit


# Rows B1, B2, B3, B5, B6, B8, B9 of the findings: (config edit, words the sentence must hold)
BAD_CONFIGS = {
    "feature_dim 1e9": (_model(feature_dim=10**9), "feature_dim"),
    "flint input_dim 1e9": (_model(flint__input_dim=10**9), "input_dim"),
    "quant_factor 40": (_model(flint__quant_factor=40), "quant_factor"),
    "hidden_size 1e7": (_model(wav2vec2__hidden_size=10**7), "hidden_size"),
    "feature_dim 8000 (memory bomb)": (_model(feature_dim=8000), "do not match"),
    "num_layers 1e6": (_model(num_layers=10**6), "num_layers"),
    "wav2vec2 layers 1e5": (_model(wav2vec2__num_hidden_layers=10**5), "num_hidden_layers"),
    "feature_dim -5": (_model(feature_dim=-5), "feature_dim"),
    "feature_dim 0": (_model(feature_dim=0), "feature_dim"),
    "quant_factor -1": (_model(flint__quant_factor=-1), "quant_factor"),
    "period 0": (_model(period=0), "period"),
    "period -30": (_model(period=-30), "period"),
    "n_heads 7": (_model(n_heads=7), "multiple"),
    "version abc": (lambda m: {**m, "version": "abc"}, "version"),
    "model is a list": (lambda m: {**m, "model": [1, 2]}, "'model'"),
    "no model": (lambda m: {k: v for k, v in m.items() if k != "model"}, "'model'"),
    "top-level list": (lambda m: [1, 2], "JSON object"),
    "eight emotions named Happy": (_model(emotions=["Happy"] * 8), "more than once"),
    "flame is a number": (lambda m: {**m, "flame": 5}, "'flame'"),
    "unknown wav2vec2 key": (_model(wav2vec2__hiden_size=64), "hiden_size"),
    "stable layer norm as text": (_model(wav2vec2__do_stable_layer_norm="yes"),
                                  "do_stable_layer_norm"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_bundle_config_is_one_sentence_before_any_allocation(tmp_path, tiny_bundle, case):
    edit, words = BAD_CONFIGS[case]
    folder = _bundle(tmp_path, tiny_bundle, edit_config=edit)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFolderError, match=words):
        read_model(folder)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"{case}: the peak grew by {grown_mb:.0f} MB"


@pytest.mark.parametrize("case", ["feature_dim 8000 (memory bomb)", "period 0",
                                  "top-level list", "flame is a number"])
def test_the_cli_says_it_in_one_line(tmp_path, tiny_bundle, case):
    edit, words = BAD_CONFIGS[case]
    folder = _bundle(tmp_path, tiny_bundle, edit_config=edit)
    for backend in ("onnx", "torch"):
        result = run_server("info", "--model", folder, "--backend", backend)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


BAD_WEIGHTS = {  # rows B12, B13
    "int64 weights": (lambda s: s.update(
        {k: v.astype(np.int64) for k, v in s.items() if k.endswith("linear.weight")}),
        "floating-point"),
    "bool weights": (lambda s: s.update(
        {k: v > 0 for k, v in s.items() if k.endswith("map.weight")}), "floating-point"),
    "NaN weights": (lambda s: s.update(
        {k: np.full_like(v, np.nan) for k, v in s.items() if v.dtype.kind == "f"}), "NaN"),
    "one infinite weight": (lambda s: s["sequence_decoder.decoder.bias"].__setitem__(
        0, np.inf), "NaN or infinite"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, tiny_bundle, case):
    edit, words = BAD_WEIGHTS[case]
    folder = _bundle(tmp_path, tiny_bundle, edit_weights=edit)
    with pytest.raises(ModelFolderError, match=words):
        read_model(folder)


def test_an_official_config_naming_a_billion_emotions_is_refused(tmp_path):
    emote, _ = write_official_release(tmp_path, seed=1)
    cfg = yaml.safe_load((emote / "cfg.yaml").read_text())
    cfg["model"]["sequence_decoder"]["style_embedding"]["n_expression"] = 10**9
    (emote / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelFolderError, match="n_expression"):
        read_model(emote)
    cfg["model"]["sequence_decoder"]["style_embedding"]["n_expression"] = "eight"
    (emote / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelFolderError, match="eight"):
        read_model(emote)


def test_a_good_bundle_still_loads_with_every_weight(tiny_bundle):
    source = read_model(tiny_bundle)
    assert source.kind == "bundle" and len(source.state) > 50
    assert all(np.isfinite(v).all() for v in source.state.values())


def test_a_bundle_names_the_expression_components_it_was_trained_to_drive(tmp_path,
                                                                          tiny_bundle):
    """The demo model's corpus animates the demo head's first 18 components; the others (the
    head's "blink" among them, a living-face layer) are written as zero, not as the untrained
    network's noise."""
    from server.animator import Animator
    from server.audio import clip_from_samples
    from tests.builders import speech_like

    demo = read_model(None)
    assert demo.expression_components == 18
    take = Animator(demo, backend="onnx").generate(clip_from_samples(speech_like(3.0)),
                                                   {"emotion": "Happy"})
    assert np.abs(take.expression[:, :18]).max() > 0.1
    assert not take.expression[:, 18:].any()
    for bad in (0, 101, "18", True):
        folder = _bundle(tmp_path / str(bad), tiny_bundle,
                         edit_config=lambda m, bad=bad: {**m, "expression_components": bad})
        with pytest.raises(ModelFolderError, match="expression_components"):
            read_model(folder)


def test_a_written_bundle_gets_the_umask_mode_and_never_replaces_a_link(tmp_path):
    """Finding E7 for bundles: files came out 0600 whatever the umask, over any path."""
    import os
    import stat

    from server.checkpoints import save_bundle
    from tests.builders import random_model

    model = random_model()
    old = os.umask(0o022)
    try:
        folder = save_bundle(tmp_path / "bundle", model)
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644
    assert read_model(folder).kind == "bundle"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "model.safetensors").symlink_to(victim)
    with pytest.raises(ModelFolderError, match="in the way"):
        save_bundle(linked, model)
    assert victim.read_text() == "keep me" and not (linked / "config.json").exists()
