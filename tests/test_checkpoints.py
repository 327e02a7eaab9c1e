# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading the official release layout and our bundles: strict keys, safe unpickling."""

import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from server.animator import Animator
from server.audio import clip_from_samples
from server.checkpoints import LoadedModel, ModelFolderError, load_model, save_bundle
from server.safe_pickle import UnsafeFileError, foreign_pickle_module, load_torch_checkpoint
from server.tensor_files import read_torch_file
from tests.builders import (
    ROOT,
    lightning_checkpoint,
    official_state_dict,
    random_model,
    run_server,
    speech_like,
    write_official_release,
)

CONDITION = {"emotion": "Anger", "intensity": "strong", "style": "W019"}


def _take(model, config_source=None):
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(
        model=model, config=model.config, kind="test", source=config_source, flint_source="")
    clip = clip_from_samples(speech_like(2.0, seed=3))
    return Animator(loaded, device="cpu").generate(clip, CONDITION)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    emote, model = write_official_release(assets, seed=7)
    return assets, emote, model


def test_official_release_loads_with_every_key_matched(release):
    assets, emote, model = release
    loaded = load_model(emote)
    assert loaded.kind == "official"
    assert loaded.config.condition_dim == 43 and loaded.config.period == 30
    assert loaded.flint_source.endswith("loss_total=0.0123.ckpt")  # the smallest val loss
    ours = loaded.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert ours["sequence_decoder.motion_prior.motion_decoder.expander.0.2.num_batches_tracked"] \
        == 1234
    np.testing.assert_array_equal(_take(loaded).expression, _take(model).expression)


def test_flint_decoder_comes_from_flint_checkpoint_when_emote_lacks_it(tmp_path):
    emote, model = write_official_release(tmp_path, seed=8, decoder_in_emote=False)
    loaded = load_model(emote)
    assert any("FLINT checkpoint" in note for note in loaded.notes)
    key = "sequence_decoder.motion_prior.motion_decoder.cross_smooth_layer.weight"
    assert torch.equal(loaded.model.state_dict()[key], model.state_dict()[key])


def test_renamed_key_fails_naming_it(tmp_path):
    emote, model = write_official_release(tmp_path, seed=9)
    ckpt = emote / "checkpoints" / "last.ckpt"
    state = official_state_dict(model)
    state["sequence_decoder.squasher_2.projection.weight"] = state.pop(
        "sequence_decoder.squasher_2.linear.weight")
    torch.save(lightning_checkpoint(state, {}), ckpt, pickle_module=foreign_pickle_module)
    with pytest.raises(ModelFolderError) as error:
        load_model(emote)
    message = str(error.value)
    assert "missing: sequence_decoder.squasher_2.linear.weight" in message
    assert "unexpected: sequence_decoder.squasher_2.projection.weight" in message


def test_assets_root_can_be_given_explicitly(tmp_path, release):
    assets, emote, _ = release
    moved = tmp_path / "elsewhere"
    shutil.copytree(emote, moved / "EMOTE_v2")
    with pytest.raises(ModelFolderError, match="FLINT motion prior .* was not found"):
        load_model(moved / "EMOTE_v2")
    assert load_model(moved / "EMOTE_v2", assets=assets).kind == "official"


class _Trap:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalTrap(_Trap):
    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w')",))


class _TouchTrap(_Trap):
    def __reduce__(self):  # a bound method pickles as getattr(Path(...), "touch")
        return (pathlib.Path(self.target).touch, ())


def _weights():
    return {"w": torch.zeros(2)}


_B17 = {  # the booby-trapped checkpoints of row B17: each would touch the marker file
    "reduce": lambda ckpt, m: torch.save({"state_dict": _weights(),
                                          "hyper_parameters": _Trap(m)}, ckpt),
    "eval": lambda ckpt, m: torch.save({"state_dict": _weights(), "x": _EvalTrap(m)}, ckpt),
    "legacy-format": lambda ckpt, m: torch.save({"state_dict": _weights(), "x": _Trap(m)}, ckpt,
                                                _use_new_zipfile_serialization=False),
    "plain-pickle": lambda ckpt, m: ckpt.write_bytes(pickle.dumps({"x": _Trap(m)}, protocol=2)),
    "numpy-object-array": lambda ckpt, m: torch.save(
        {"state_dict": _weights(), "x": np.array([_Trap(m)], dtype=object)}, ckpt),
    "getattr-touch": lambda ckpt, m: torch.save({"state_dict": _weights(), "x": _TouchTrap(m)},
                                                ckpt),
}


@pytest.mark.parametrize("trap", list(_B17))
def test_booby_trapped_checkpoint_is_refused_and_runs_nothing(tmp_path, release, trap):
    _, emote, _ = release
    folder = tmp_path / "EMOTE_v2"
    shutil.copytree(emote, folder)
    marker = tmp_path / "pwned"
    ckpt = folder / "checkpoints" / "last.ckpt"
    _B17[trap](ckpt, marker)
    with pytest.raises(UnsafeFileError, match="system|eval|getattr"):
        load_torch_checkpoint(ckpt)
    with pytest.raises(UnsafeFileError, match=str(ckpt)):
        read_torch_file(ckpt)
    with pytest.raises(UnsafeFileError):
        load_model(folder, assets=emote.parents[2])
    assert not marker.exists()


def test_booby_trapped_flint_checkpoint_is_refused_and_runs_nothing(tmp_path):
    emote, _ = write_official_release(tmp_path, seed=10)
    marker = tmp_path / "pwned"
    best = next(tmp_path.rglob("loss_total=0.0123.ckpt"))
    _B17["reduce"](best, marker)
    with pytest.raises(UnsafeFileError, match="system"):
        load_model(emote)
    assert not marker.exists()


def _torchscript_archive(path, target):
    """What ``torch.jit.save`` writes for a module whose exported ``__setstate__`` writes 32
    bytes into ``target`` when the archive is loaded with torch.jit.load."""

    class Sneaky(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.target = target

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.w, self.training, self.target)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool, str]):
            written = torch.from_file(state[2], shared=True, size=32,
                                      dtype=torch.uint8).fill_(65)
            self.w = state[0] + written[:2].to(torch.float32) * 0.0  # kept: used below
            self.training = state[1]
            self.target = state[2]

    torch.jit.save(torch.jit.script(Sneaky(str(target))), path)


def test_torchscript_checkpoint_is_refused_before_anything_is_unpickled(tmp_path, release):
    assets, emote, _ = release
    folder = tmp_path / "EMOTE_v2"
    shutil.copytree(emote, folder)
    marker = tmp_path / "written-by-the-archive"
    ckpt = folder / "checkpoints" / "last.ckpt"
    _torchscript_archive(ckpt, marker)
    assert not marker.exists()
    for loader in (load_torch_checkpoint, read_torch_file):
        with pytest.raises(UnsafeFileError, match="is a TorchScript archive, not a checkpoint: "
                                                  "it holds code, so it is not loaded"):
            loader(ckpt)
    with pytest.raises(UnsafeFileError):
        load_model(folder, assets=assets)
    result = run_server("info", "--model", folder, "--assets", assets)
    assert result.returncode != 0 and "TorchScript archive" in result.stderr
    assert not marker.exists()


def test_lightning_extras_load_as_inert_records(release):
    _, emote, _ = release
    checkpoint = load_torch_checkpoint(emote / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 41
    hyper = checkpoint["hyper_parameters"]
    assert type(hyper).__name__ == "AttributeDict" and "cfg" in hyper.state
    assert [type(k).__name__ for k in checkpoint["callbacks"]] == ["type"]


def test_bundle_round_trip_gives_identical_takes(tmp_path):
    model = random_model(seed=11)
    save_bundle(tmp_path / "bundle", model, flint_source="test")
    loaded = load_model(tmp_path / "bundle")
    assert loaded.kind == "bundle" and loaded.info()["styles"][0] == "M003"
    np.testing.assert_array_equal(_take(loaded).jaw, _take(model).jaw)


def test_wrong_folders_are_explained(tmp_path):
    with pytest.raises(ModelFolderError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "readme.txt").write_text("hi")
    with pytest.raises(ModelFolderError, match="is not an EMOTE model folder"):
        load_model(tmp_path / "random")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.yaml").write_text("model: {}\n")
    with pytest.raises(ModelFolderError, match="no checkpoints/last.ckpt"):
        load_model(tmp_path / "half")


def test_no_folder_means_the_built_in_demo_model(tmp_path, monkeypatch):
    from server import checkpoints
    from server.demo import recipe

    loaded = load_model()
    assert loaded.kind == "bundle" and loaded.info()["styles"][0] == "moderate-neutral-brisk"
    assert recipe.MODEL_DIR == checkpoints.DEMO_MODEL_DIR  # the recipe installs where we read
    monkeypatch.setattr(checkpoints, "DEMO_MODEL_DIR", tmp_path / "model")
    with pytest.raises(ModelFolderError, match="built-in demo model is missing"):
        load_model()


def test_the_inference_core_does_not_import_the_demo_recipe_or_torch():
    """Loading a model and generating needs neither the demo recipe (training code) nor
    torch."""
    code = ("import sys; from server.checkpoints import read_model; "
            "from server.animator import Animator; read_model(); "
            "print(sorted(m for m in sys.modules if m.startswith(('server.demo', 'server.train',"
            " 'torch', 'transformers'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
