# SPDX-License-Identifier: GPL-3.0-or-later
"""The ONNX Runtime backend against the torch modules: same weights, same audio, same numbers;
the graphs as valid ONNX; no torch on its path; cancel inside a window; determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from server.animator import Animator, Cancelled  # noqa: E402
from server.audio import clip_from_samples  # noqa: E402
from server.checkpoints import ModelSource, read_model  # noqa: E402
from server.config import EmoteConfig, FlintConfig  # noqa: E402
from server.graphs.emote import emote_graphs, prepare_weights  # noqa: E402
from tests.builders import (  # noqa: E402
    ROOT,
    TINY_WAV2VEC2,
    random_model,
    run_server,
    speech_like,
    tiny_config,
    write_official_release,
    write_wav,
)

TOLERANCE = 1e-4  # max abs difference on expression and jaw, ONNX Runtime vs torch
HAPPY = {"emotion": "Happy", "intensity": 2, "style": 0}


def source_of(model, kind: str = "test") -> ModelSource:
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return ModelSource(config=model.config, state=state, kind=kind, source=ROOT,
                       flint_source="random")


def both(source: ModelSource, **window) -> tuple[Animator, Animator]:
    return (Animator(source, backend="onnx", threads=2, **window),
            Animator(source, backend="torch", device="cpu", threads=2, **window))


def assert_same_takes(onnx: Animator, reference: Animator, seconds: float, seed: int = 3,
                      condition=HAPPY) -> None:
    clip = clip_from_samples(speech_like(seconds, seed=seed))
    a = onnx.generate(clip, condition)
    b = reference.generate(clip, condition)
    assert a.frames == b.frames == clip.frames
    assert np.abs(a.expression - b.expression).max() <= TOLERANCE
    assert np.abs(a.jaw - b.jaw).max() <= TOLERANCE
    assert np.abs(b.expression).max() > 0.05 and np.abs(b.jaw).max() > 1e-3  # visible motion


@pytest.fixture(scope="module")
def official_full(tmp_path_factory):
    """The official release layout at full size (wav2vec2-base, 12 layers × 768), read from its
    Lightning checkpoint as a user downloads it."""
    assets = tmp_path_factory.mktemp("official")
    emote, _ = write_official_release(assets, seed=5, config=EmoteConfig())
    return read_model(emote)


@pytest.fixture(scope="module")
def demo():
    return read_model(None)


@pytest.mark.parametrize("seconds", [3.0, 40.0, 52.0], ids=["short", "40s", "two-windows"])
def test_official_layout_at_full_size_matches_torch(official_full, seconds):
    assert official_full.config.audio.hidden_size == 768
    assert_same_takes(*both(official_full), seconds)


@pytest.mark.parametrize("seconds", [3.0, 40.0, 52.0], ids=["short", "40s", "two-windows"])
def test_demo_model_matches_torch(demo, seconds):
    assert_same_takes(*both(demo), seconds, seed=4,
                      condition={"emotion": {"Sad": 0.7, "Surprise": 0.3}, "intensity": 1,
                                 "style": 3})


def test_many_windows_and_per_frame_conditions_match_torch(demo):
    """Small windows (so the 20 s clip has several), a per-frame curve of conditions."""
    onnx, reference = both(demo, window=160, overlap=32)
    frames = clip_from_samples(speech_like(20.0)).frames
    curve = np.zeros((frames, demo.config.condition_dim), np.float32)
    curve[:, 0] = np.linspace(1, 0, frames)
    curve[:, 6] = np.linspace(0, 1, frames)
    curve[:, 10] = 1.0
    curve[:, 11] = 1.0
    assert_same_takes(onnx, reference, 20.0, condition=curve)


VARIANTS = {
    "layer-norm-cnn-stable-encoder": dict(
        wav2vec2=dict(TINY_WAV2VEC2, feat_extract_norm="layer", do_stable_layer_norm=True,
                      conv_bias=True)),
    "odd-pos-kernel-3-heads": dict(
        wav2vec2=dict(TINY_WAV2VEC2, num_conv_pos_embeddings=15, num_attention_heads=4),
        n_heads=4, period=1, num_layers=2, style_bias=False),
    "quant-2-flint-2-layers-6-heads": dict(
        feature_dim=12, n_heads=6, dim_feedforward=20,
        flint=FlintConfig(feature_dim=12, latent_dim=20, quant_factor=2, n_heads=6,
                          dim_feedforward=18, num_layers=2, smooth_kernel=3)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_configurations_match_torch(name):
    """Any configuration our torch modules build, the graphs are written for."""
    config = EmoteConfig(**{**tiny_config().to_dict(), "flint": tiny_config().flint,
                            **VARIANTS[name]})
    source = source_of(random_model(config, seed=2))
    assert_same_takes(*both(source), 6.0, seed=7)


def test_graphs_are_valid_onnx(demo):
    """Checked by the ``onnx`` package, shapes inferred: every weight the graphs take with each
    run is a fixed-shape input, and only the CNN stores weights (its convolutions')."""
    onnx = pytest.importorskip("onnx")
    weights = prepare_weights(demo.config, demo.state)
    for name, graph in emote_graphs(demo.config, weights).items():
        model = onnx.load_from_string(graph.model)
        assert model.opset_import[0].version == 17, name
        inputs = {i.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                for d in i.type.tensor_type.shape.dim)
                  for i in model.graph.input}
        assert {n: inputs[n] for n in graph.weights} == graph.weights, name
        assert set(inputs) - set(graph.weights) == set(graph.inputs), name
        for n, shape in graph.weights.items():
            assert weights[n].shape == shape, n
        stored = {t.name for t in model.graph.initializer if t.name in weights}
        assert stored == set(graph.stored), name
        if name == "cnn":
            folded = demo.config.audio.feat_extract_norm == "group"  # layer 0: given per run
            convolutions = {n for n in weights if "feature_extractor.conv_layers." in n
                            and ".conv." in n and not (folded and ".conv_layers.0." in n)}
            assert stored == convolutions and stored
        else:
            assert not stored, name
        onnx.checker.check_model(model, full_check=True)


def test_onnx_runs_are_deterministic(demo):
    clip = clip_from_samples(speech_like(8.0, seed=9))
    first = Animator(demo, backend="onnx").generate(clip, HAPPY)
    second = Animator(demo, backend="onnx").generate(clip, HAPPY)
    np.testing.assert_array_equal(first.expression, second.expression)
    np.testing.assert_array_equal(first.jaw, second.jaw)


def test_the_shared_arena_carries_nothing_from_one_run_to_the_next(demo, official_full):
    """The sessions of every model in the worker draw activations from one arena: a longer
    clip, other models and a run stopped by its terminate flag in between leave a clip's
    numbers as they were."""
    from server.backends import onnx_runtime

    clip = clip_from_samples(speech_like(6.0, seed=11))
    animator = Animator(demo, backend="onnx")
    before = animator.generate(clip, HAPPY)
    assert onnx_runtime._arena is True  # the runtime took the shared arena
    other = Animator(source_of(random_model(tiny_config(), seed=4)), backend="onnx")
    other.generate(clip_from_samples(speech_like(30.0, seed=12)), HAPPY)

    full = Animator(official_full, backend="onnx", threads=2)
    cancel = threading.Event()
    original = full.backend._run
    stopped = []

    def run(graph, feeds, options, cancel_event, outputs=1):
        cancel.set()  # lands inside this full-size CNN piece (tens of ms)
        try:
            return original(graph, feeds, options, cancel_event, outputs)
        except Cancelled:
            stopped.append(graph)  # the runtime raised: terminated mid-run
            raise

    full.backend._run = run
    with pytest.raises(Cancelled):
        full.generate(clip_from_samples(speech_like(20.0, seed=13)), HAPPY, cancel=cancel)
    assert stopped == ["cnn"]
    animator.generate(clip_from_samples(speech_like(30.0, seed=14)), {"emotion": "Sad"})
    after = Animator(demo, backend="onnx").generate(clip, HAPPY)
    np.testing.assert_array_equal(before.expression, after.expression)
    np.testing.assert_array_equal(before.jaw, after.jaw)


def test_a_cancel_stops_inside_a_long_window(official_full):
    """The cancel lands while wav2vec2 runs on a 40 s window (one window: the engine's own
    checks between windows never run); ONNX Runtime's terminate flag stops the run."""
    animator = Animator(official_full, backend="onnx", threads=2)
    clip = clip_from_samples(speech_like(40.0, seed=1))
    cancel = threading.Event()
    backend = animator.backend
    original = backend._run
    seen = []

    def run(graph, feeds, options, cancel_event, outputs=1):
        seen.append(graph)
        if graph == "audio_encoder":  # the transformer: cancel once this run has begun
            threading.Timer(0.05, cancel.set).start()
        return original(graph, feeds, options, cancel_event, outputs)

    backend._run = run
    with pytest.raises(Cancelled):
        animator.generate(clip, HAPPY, cancel=cancel)
    assert seen[-1] == "audio_encoder" and animator.stats["audio_encodes"] == 0
    backend._run = original
    take = animator.generate(clip, HAPPY, cancel=threading.Event())  # works afterwards
    assert take.frames == clip.frames


def test_auto_backend_is_onnx_on_cpu_and_torch_for_cuda(demo):
    from server import backends

    assert backends.choose("auto", "auto") == "onnx"
    assert backends.choose("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        backends.choose("onnx", "cuda")
    with pytest.raises(ValueError, match="Unknown backend"):
        backends.choose("tensorflow", "cpu")
    assert Animator(demo).backend.name == "onnx"


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'safetensors', 'smplx', 'scipy'):
            raise ImportError(f'{name} must not be imported on the ONNX path')
sys.meta_path.insert(0, Block())
"""


def test_the_onnx_path_never_imports_torch(tmp_path, official_full):
    """The CLI, end to end on the demo model and on the official layout, in a Python where
    importing torch, transformers, safetensors, smplx or scipy fails."""
    wav = write_wav(tmp_path / "line.wav", 3.0)
    for model in (None, official_full.source):
        out = tmp_path / f"take-{'demo' if model is None else 'official'}.npz"
        args = ["generate", str(wav), "--emotion", "Happy", "-o", str(out), "--backend", "onnx"]
        if model is not None:  # and vertices from the release's own FLAME file
            flame = model.parents[2] / "FLAME" / "geometry" / "generic_model.pkl"
            args += ["--model", str(model), "--flame", str(flame)]
        code = BLOCK_TORCH + f"from server.cli import main; sys.exit(main({args!r}))"
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        with np.load(out) as take:
            assert take["expression"].shape == (75, 100) and np.isfinite(take["jaw"]).all()
            if model is not None:
                assert take["vertices"].shape == (75, 300, 3) and len(take["faces"])


def test_cli_backends_agree_and_info_names_the_backend(tmp_path):
    wav = write_wav(tmp_path / "line.wav", 3.0, seed=2)
    takes = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / f"{backend}.npz"
        result = run_server("generate", wav, "--emotion", "Anger", "--backend", backend,
                            "-o", out)
        assert result.returncode == 0, result.stderr
        with np.load(out) as take:
            takes[backend] = {k: take[k] for k in ("expression", "jaw")}
    for key in ("expression", "jaw"):
        assert np.abs(takes["onnx"][key] - takes["torch"][key]).max() <= TOLERANCE
    info = run_server("info", "--json", "--backend", "onnx")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["backend"] == "onnx" and "ONNX Runtime" in described["runtime"]
    assert "authored from the model's config" in described["graphs"]


def test_torch_state_and_onnx_weights_share_names(official_full):
    """The graphs ask for exactly the checkpoint's weights (the positional convolution's two
    weight-norm parameters folded into one; the first convolution and its GroupNorm given per
    window, folded together from the window's statistics outside the graphs)."""
    graphs = emote_graphs(official_full.config,
                          prepare_weights(official_full.config, official_full.state))
    asked = set().union(*(set(g.weights) | set(g.stored) for g in graphs.values()))
    state = set(official_full.state)
    assert asked - state == {"audio_model.model.encoder.pos_conv_embed.conv.weight"}
    unused = state - asked
    first = "audio_model.model.feature_extractor.conv_layers.0."
    assert unused == {k for k in state if k.endswith((
        "num_batches_tracked", "masked_spec_embed", "weight.original0", "weight.original1"))
        or k.startswith(first)}
    assert {"first_weight", "first_bias"} <= set(graphs["cnn"].inputs)
    torch_keys = set(random_model(official_full.config).state_dict())
    assert torch_keys == state


@pytest.mark.skipif("EMOTE_EXPECT_ONNX_RUNTIME" not in os.environ,
                    reason="only where tools/test.sh runs these tests on another ONNX Runtime")
def test_these_tests_ran_on_the_onnx_runtime_asked_for():
    import onnxruntime

    assert onnxruntime.__version__ == os.environ["EMOTE_EXPECT_ONNX_RUNTIME"]


def test_a_weight_is_either_given_with_each_run_or_stored_never_both():
    from server.graphs.builder import GraphBuilder

    given = GraphBuilder("t")
    given.weight("w", (2, 3))
    with pytest.raises(ValueError, match="weight w given twice"):
        given.stored("w", np.zeros((2, 3), np.float32))
    stored = GraphBuilder("t")
    stored.stored("w", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="weight w given twice"):
        stored.weight("w", (2, 3))
    assert stored.build().stored == ["w"] and stored.build().weights == {}
