# SPDX-License-Identifier: GPL-3.0-or-later
"""Training on a tiny synthetic dataset: losses fall, stage rules hold, bundles load."""


import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("lightning")

from server.flame import load_flame_file  # noqa: E402
from server.models.emote import EmoteConfig  # noqa: E402
from server.models.flint import Flint, FlintConfig  # noqa: E402
from server.train.data import SequenceWindows  # noqa: E402
from server.train.geometry import FlameVertices  # noqa: E402
from server.train.modules import EmoteStage1, FlintModule  # noqa: E402
from tests.builders import (  # noqa: E402
    run_server,
    tiny_config,
    write_synthetic_flame,
    write_training_dataset,
)

SMALL_FLINT = FlintConfig(feature_dim=16, latent_dim=16, dim_feedforward=24)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    write_synthetic_flame(folder / "flame.pkl")
    write_training_dataset(folder / "data")
    return folder


def batches(data, window, size, motion_only, steps):
    windows = SequenceWindows(data, "train", window, motion_only=motion_only,
                              windows_per_epoch=size * steps)
    return list(torch.utils.data.DataLoader(windows, batch_size=size))


def fit(module, data, steps):
    optimizer = module.configure_optimizers()
    losses = []
    module.train()
    for batch in data[:steps]:
        loss = module.losses(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_dataset_windows(dataset):
    windows = SequenceWindows(dataset / "data", "train", 64)
    sample = windows[0]
    assert sample["audio"].shape == (64 * 640,) and sample["motion"].shape == (64, 103)
    assert sample["condition"].shape == (8 + 3 + 2,) and sample["condition"].sum() == 3
    long = SequenceWindows(dataset / "data", "train", 200)[0]  # 75-frame clips, padded
    assert long["mask"][:75].min() == 1 and long["mask"][75:].max() == 0


def test_flint_training_improves_reconstruction(dataset):
    torch.manual_seed(0)
    vertices = FlameVertices(load_flame_file(dataset / "flame.pkl"))
    module = FlintModule(SMALL_FLINT, vertices, lr=3e-3)
    data = batches(dataset / "data", 32, 8, True, 40)
    module.eval()
    with torch.no_grad():
        before = float(module.losses(data[0], sample=False)["vertex"])
    losses = fit(module, data, 40)
    module.eval()
    with torch.no_grad():
        after = float(module.losses(data[0], sample=False)["vertex"])
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert after < 0.5 * before


def test_stage1_rules_and_loss(dataset):
    torch.manual_seed(0)
    vertices = FlameVertices(load_flame_file(dataset / "flame.pkl"))
    config = tiny_config(styles=["M003", "W009"], dropout=0.0)
    config.flint = SMALL_FLINT
    module = EmoteStage1(config, Flint(SMALL_FLINT), vertices, lr=1e-3)
    decoder = module.model.sequence_decoder
    assert torch.count_nonzero(decoder.decoder.weight) == 0
    data = batches(dataset / "data", 64, 2, False, 30)
    losses = fit(module, data, 30)
    cnn = module.model.audio_model.model.feature_extractor
    assert all(p.grad is None for p in cnn.parameters())
    assert all(p.grad is None for p in decoder.motion_prior.parameters())
    projection = module.model.audio_model.model.feature_projection.projection
    assert projection.weight.grad is not None
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_cli_trains_and_exports_bundles_generate_accepts(dataset, tmp_path):
    flint_cfg = tmp_path / "flint.yaml"
    flint_cfg.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "out": str(tmp_path / "flint"), "flint": {"feature_dim": 16, "latent_dim": 16,
                                                   "dim_feedforward": 24},
        "batch_size": 4, "max_steps": 4, "val_every": 2, "accelerator": "cpu"}))
    result = run_server("train", "flint", "--config", flint_cfg, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "flint" / "bundle" / "model.safetensors").is_file()
    assert (tmp_path / "flint" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "flint" / "logs").rglob("metrics.csv"))
    stage1_cfg = tmp_path / "stage1.yaml"
    stage1_cfg.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "out": str(tmp_path / "stage1"), "flint_bundle": str(tmp_path / "flint" / "bundle"),
        "model": {"wav2vec2": tiny_config().wav2vec2, "feature_dim": 16, "dim_feedforward": 32},
        "batch_size": 2, "max_steps": 3, "accelerator": "cpu"}))
    result = run_server("train", "stage1", "--config", stage1_cfg, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import soundfile

    soundfile.write(str(tmp_path / "seq00.wav"), np.load(dataset / "data" / "seq00.npz")["audio"],
                    16_000)
    out = tmp_path / "take.npz"
    gen = run_server("generate", tmp_path / "seq00.wav", "--model", tmp_path / "stage1" / "bundle",
                     "--style", "W009", "-o", out)
    assert gen.returncode == 0, gen.stderr
    assert np.load(out)["expression"].shape == (75, 100)


def test_ddp_on_cpu_with_two_processes(dataset, tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "out": str(tmp_path / "ddp"), "flint": {"feature_dim": 16, "latent_dim": 16,
                                                 "dim_feedforward": 24},
        "batch_size": 2, "max_steps": 3, "accelerator": "cpu", "devices": 2,
        "strategy": "ddp"}))
    result = run_server("train", "flint", "--config", config, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size: 2" in result.stderr or "MEMBER: 2/2" in result.stderr
    assert (tmp_path / "ddp" / "bundle" / "model.safetensors").is_file()


def test_cli_stage2_from_stage1_with_released_weight_layouts(dataset, tmp_path):
    """One stage-2 step from the command line, with randomly initialised perceptual networks
    saved in the layouts of their released files."""
    from server.checkpoints import save_bundle
    from server.models.emote import EmoteModel
    from server.train.perceptual import (
        EmotionResNet50,
        LipReadingFrontend,
        VideoEmotionClassifier,
    )

    torch.manual_seed(0)
    lip = LipReadingFrontend()
    torch.save({f"encoder.frontend.{k}": v for k, v in lip.state_dict().items()},
               tmp_path / "model.pth")
    emotion = EmotionResNet50()
    torch.save({"state_dict": emotion.state_dict(), "hyper_parameters": {}},
               tmp_path / "emotion.ckpt")
    torch.save({"state_dict": VideoEmotionClassifier().state_dict()}, tmp_path / "video.ckpt")
    config = tiny_config(styles=["M003", "W009"])
    config.flint = SMALL_FLINT
    save_bundle(tmp_path / "stage1", EmoteModel(config))
    flame = load_flame_file(dataset / "flame.pkl")
    rng = np.random.default_rng(1)
    np.save(tmp_path / "landmark_embedding.npy", {
        "static_lmk_faces_idx": rng.integers(0, len(flame.faces), 51),
        "static_lmk_bary_coords": np.full((51, 3), 1 / 3)}, allow_pickle=True)
    cfg = tmp_path / "stage2.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "landmark_embedding": str(tmp_path / "landmark_embedding.npy"),
        "out": str(tmp_path / "run"), "stage1_bundle": str(tmp_path / "stage1"),
        "lip_reader": str(tmp_path / "model.pth"), "emotion_cnn": str(tmp_path / "emotion.ckpt"),
        "video_emotion": str(tmp_path / "video.ckpt"), "window": 8, "batch_size": 2,
        "max_steps": 1, "accelerator": "cpu"}))
    result = run_server("train", "stage2", "--config", cfg, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = next((tmp_path / "run" / "logs").rglob("metrics.csv")).read_text()
    for column in ("train/lip_exchanged", "train/emotion_exchanged", "train/vertex"):
        assert column in metrics
    assert (tmp_path / "run" / "bundle" / "model.safetensors").is_file()


def test_cosine_schedule_decays_to_its_floor_and_unknown_schedules_are_refused(dataset, tmp_path):
    from server.train.modules import COSINE_FLOOR
    from server.train.run import read_config

    vertices = FlameVertices(load_flame_file(dataset / "flame.pkl"))
    module = FlintModule(SMALL_FLINT, vertices, lr=1e-3)
    assert isinstance(module.configure_optimizers(), torch.optim.Adam)  # EMOTE's: constant
    module.lr_schedule, module.total_steps = "cosine", 10
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-3)
    assert rates[5] == pytest.approx(1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2))
    assert rates[10] == rates[11] == pytest.approx(1e-3 * COSINE_FLOOR)
    assert np.all(np.diff(rates[:11]) < 0)
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"data": "d", "flame": "f", "out": "o",
                                      "lr_schedule": "linear"}))
    with pytest.raises(ValueError, match="Unknown lr_schedule 'linear': use constant or cosine"):
        read_config(config, "flint")


def test_stage1_phone_loss_and_loss_scale(dataset, tmp_path):
    """Per-frame phone labels travel with the windows; the phone classifier adds its weighted
    cross-entropy, trains with the model, and stays out of the exported model."""
    from server.train.data import read_index, write_index, write_sequence

    data = tmp_path / "phones"
    data.mkdir()
    entries = []
    for entry in read_index(dataset / "data")["sequences"]:
        with np.load(dataset / "data" / entry["file"]) as seq:
            frames = len(seq["jaw"])
            labels = (np.arange(frames) // 10 % 3).astype(np.int16)  # three "phones" in turn
            labels[:5] = -1  # unknown
            new = write_sequence(data / entry["file"], seq["audio"], seq["expression"],
                                 seq["jaw"], int(seq["emotion"]), int(seq["intensity"]),
                                 str(seq["identity"]), phones=labels)
        entries.append({**new, "split": entry["split"]})
    write_index(data, entries, ["M003", "W009"], phones=["pau", "aa", "m"])
    with pytest.raises(ValueError, match=r"phones must be \(75,\), got \(74,\)"):
        write_sequence(tmp_path / "bad.npz", np.zeros(48000), np.zeros((75, 100)),
                       np.zeros((75, 3)), 0, 1, "M003", phones=np.zeros(74))
    windows = SequenceWindows(data, "train", 100)
    sample = windows[0]
    assert sample["phones"].shape == (100,) and sample["phones"].dtype == torch.long
    assert (sample["phones"][:5] == -1).all() and (sample["phones"][75:] == -1).all()
    assert set(sample["phones"][5:75].tolist()) == {0, 1, 2}
    assert "phones" not in SequenceWindows(dataset / "data", "train", 64)[0]

    torch.manual_seed(0)
    vertices = FlameVertices(load_flame_file(dataset / "flame.pkl"))
    config = tiny_config(styles=["M003", "W009"], dropout=0.0)
    config.flint = SMALL_FLINT
    module = EmoteStage1(config, Flint(SMALL_FLINT), vertices, lr=1e-3, loss_scale=1e6,
                         phone_classes=3, phone_weight=0.5)
    batch = next(iter(torch.utils.data.DataLoader(windows, batch_size=2)))
    losses = module.losses(batch)
    value = {k: float(v.detach()) for k, v in losses.items()}
    assert value["loss"] == pytest.approx(1e6 * value["vertex"] + 0.5 * value["phone"], rel=1e-5)
    assert 0.5 < value["phone"] < 3  # about ln 3 untrained
    losses["loss"].backward()
    assert module.phone_head.weight.grad.abs().sum() > 0
    assert module.phone_head.weight in set(module.trainable())
    assert not any("phone" in key for key in module.model.state_dict())
    plain = EmoteStage1(config, Flint(SMALL_FLINT), vertices)
    with torch.no_grad():
        assert set(plain.losses(batch)) == {"loss", "vertex"} and plain.phone_head is None

    phone_data = batches(data, 64, 2, False, 40)
    phone_module = EmoteStage1(config, Flint(SMALL_FLINT), vertices, lr=3e-3,
                               phone_classes=3, phone_weight=1.0)
    with torch.no_grad():
        start = float(phone_module.losses(phone_data[0])["phone"])
    fit(phone_module, phone_data, 40)
    phone_module.eval()
    with torch.no_grad():
        assert float(phone_module.losses(phone_data[0])["phone"]) < 0.8 * start


def test_a_phone_loss_needs_phone_labels(dataset, tmp_path):
    config = tmp_path / "stage1.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "out": str(tmp_path / "out"), "flint_bundle": str(tmp_path / "no-flint"),
        "phone_weight": 0.1, "max_steps": 1, "accelerator": "cpu"}))
    result = run_server("train", "stage1", "--config", config, timeout=300)
    assert result.returncode != 0
    assert "phone_weight needs per-frame phone labels" in result.stderr
    assert not (tmp_path / "out" / "bundle").exists()


@pytest.mark.parametrize("flint, message", [
    ({"latent_dim": "64"}, "FLINT config 'latent_dim' must be a whole number, got '64'."),
    ({"latnt_dim": 64}, "Unknown FLINT config keys: latnt_dim"),
])
def test_wrongly_typed_model_settings_are_named(dataset, tmp_path, flint, message):
    config = tmp_path / "flint.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(dataset / "data"), "flame": str(dataset / "flame.pkl"),
        "out": str(tmp_path / "out"), "max_steps": 1, "accelerator": "cpu", "flint": flint}))
    result = run_server("train", "flint", "--config", config, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_emote_config_names_a_wrongly_typed_setting():
    for settings, message in (({"dropout": "0.1"}, "'dropout' must be a number, got '0.1'"),
                              ({"n_heads": 4.5}, "'n_heads' must be a whole number"),
                              ({"styles": "M003"}, "'styles' must be a list of names")):
        with pytest.raises(ValueError, match=message):
            EmoteConfig.from_dict(settings)
    config = EmoteConfig.from_dict({"dropout": 0, "n_heads": 4})
    assert config.dropout == 0.0 and isinstance(config.dropout, float)
