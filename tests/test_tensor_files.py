# SPDX-License-Identifier: GPL-3.0-or-later
"""Tensor files read with NumPy only: torch.save (zip and legacy), torch storages pickled inside
other pickles, safetensors; every declared size checked, nothing runs, memory stays bounded."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from server.safe_pickle import UnsafeFileError, load_pickle
from server.tensor_files import read_safetensors, read_torch_file, safetensors_header
from tests.builders import ROOT


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every element type a checkpoint holds, views with offsets and strides, edge shapes."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(6, 5, generator=g)
    return {
        "float32": torch.randn(3, 4, generator=g),
        "float64": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "float16": torch.randn(7, generator=g).half(),
        "bfloat16": torch.randn(9, generator=g).bfloat16(),
        "int64": torch.randint(-2**40, 2**40, (4,), generator=g),
        "int32": torch.randint(-2**30, 2**30, (2, 2), generator=g, dtype=torch.int32),
        "int16": torch.randint(-2**14, 2**14, (3,), generator=g, dtype=torch.int16),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "uint16": torch.tensor([1, 65535], dtype=torch.uint16),  # an untyped-storage dtype
        "transposed": base.t(),
        "sliced": base[1:5:2, 2:],  # a view with an offset into a shared storage
        "whole": base,
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    }


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def _assert_same(read: dict, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        expected = _numpy(tensor)
        assert isinstance(read[name], np.ndarray), name
        assert read[name].dtype == expected.dtype and read[name].shape == expected.shape, name
        assert np.array_equal(read[name], expected), name
        assert read[name].flags.c_contiguous and read[name].flags.writeable, name


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_reads_every_dtype_and_view_exactly(tmp_path, zip_format):
    tensors = _tensors()
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": tensors, "size": torch.Size([2, 3]), "epoch": 7}, path,
               _use_new_zipfile_serialization=zip_format)
    checkpoint = read_torch_file(path)
    _assert_same(checkpoint["state_dict"], tensors)
    assert checkpoint["size"] == (2, 3) and checkpoint["epoch"] == 7
    # bfloat16 widened exactly: every value is the float32 with the same top 16 bits
    bits = tensors["bfloat16"].view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16
    assert np.array_equal(checkpoint["state_dict"]["bfloat16"].view(np.uint32), bits)


def test_tensors_tagged_for_a_gpu_load_on_the_cpu(tmp_path):
    registry = torch.serialization._package_registry
    before = list(registry)
    torch.serialization.register_package(0, lambda storage: "cuda:0",
                                         lambda storage, location: None)
    try:
        path = tmp_path / "gpu.ckpt"
        torch.save({"w": torch.arange(12.0).reshape(3, 4)}, path)
    finally:
        registry[:] = before
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled
    np.testing.assert_array_equal(read_torch_file(path)["w"], np.arange(12.0).reshape(3, 4))


def test_torch_storages_pickled_inside_a_plain_pickle_are_rebuilt(tmp_path):
    tensors = {"faces": torch.arange(24).reshape(4, 6)[:, 1::2], "weights": torch.rand(5, 3)}
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(tensors, protocol=2))  # storages → _load_from_bytes(...)
    assert b"_load_from_bytes" in path.read_bytes()
    read = load_pickle(path)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(read[name], tensor.numpy())


# -- forged files: sizes a file declares but does not hold ---------------------------------------

class _Global:
    """Pickles as the global ``module.name`` (which need not be importable here)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("only pickled")


class _Call:
    def __init__(self, func: _Global, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class _StorageRef:
    def __init__(self, *saved_id) -> None:
        self.saved_id = saved_id


class _Forger(pickle._Pickler):
    def persistent_id(self, obj):
        return obj.saved_id if isinstance(obj, _StorageRef) else None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)


def _forged_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Forger(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _forged_checkpoint(path: Path, obj, storages: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _forged_pickle(obj))
        archive.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def _tensor(numel: int, size: tuple, stride: tuple, offset: int = 0, legacy: bool = False
            ) -> _Call:
    storage = _StorageRef("storage", _Global("torch", "FloatStorage"), "0", "cpu", numel,
                          *((None,) if legacy else ()))
    return _Call(_Global("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride,
                 False, _Call(_Global("collections", "OrderedDict")))


def test_forged_checkpoint_reads_like_torch_save(tmp_path):
    values = np.arange(6, dtype="<f4")
    path = _forged_checkpoint(tmp_path / "ok.ckpt", {"w": _tensor(6, (2, 2), (1, 2), 1)},
                              {"0": values.tobytes()})
    np.testing.assert_array_equal(read_torch_file(path)["w"], [[1, 3], [2, 4]])


@pytest.mark.parametrize("numel, size, stride, offset, storage_bytes, message", [
    (10**12, (2,), (1,), 0, 24, "declares 1,000,000,000,000 elements of 4 bytes but holds 24"),
    (6, (4, 2), (2, 1), 0, 24, "reaches element 7 of a storage of 6"),
    (6, (2,), (1,), 5, 24, "reaches element 6 of a storage of 6"),
    (6, (-1, 2), (2, 1), 0, 24, "impossible shape"),
    (6, (2, 2), (1,), 0, 24, "strides"),
], ids=["numel", "view", "offset", "negative", "strides"])
def test_sizes_a_checkpoint_does_not_hold_are_refused(tmp_path, numel, size, stride, offset,
                                                      storage_bytes, message):
    path = _forged_checkpoint(tmp_path / "forged.ckpt",
                              {"w": _tensor(numel, size, stride, offset)},
                              {"0": bytes(storage_bytes)})
    with pytest.raises(ValueError, match=message) as error:
        read_torch_file(path)
    assert str(path) in str(error.value)


def test_damaged_and_foreign_files_are_named_in_one_sentence(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"w": torch.rand(100)}, path, _use_new_zipfile_serialization=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:-40])
    with pytest.raises(ValueError, match=r"ends inside storage .*400 bytes declared") as error:
        read_torch_file(path)
    assert str(path) in str(error.value)
    torch.save({"w": torch.rand(100)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated or damaged"):
        read_torch_file(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        read_torch_file(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        read_torch_file(path)
    with pytest.raises(ValueError, match="The checkpoint .*missing.ckpt' was not found"):
        read_torch_file(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="The safetensors file .* was not found"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_devices_folders_and_fifos_are_refused_at_once(tmp_path):
    (tmp_path / "zero.ckpt").symlink_to("/dev/zero")
    (tmp_path / "folder.ckpt").mkdir()
    os.mkfifo(tmp_path / "fifo.safetensors")
    for name in ("zero.ckpt", "folder.ckpt", "fifo.safetensors"):
        for reader in (read_torch_file, read_safetensors, safetensors_header):
            with pytest.raises(ValueError, match="not a regular file|is a folder"):
                reader(tmp_path / name)


def test_code_inside_a_nested_torch_storage_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Trap:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    inner = io.BytesIO()
    torch.save(Trap(), inner, _use_new_zipfile_serialization=False)
    path = tmp_path / "embedding.pkl"
    path.write_bytes(_forged_pickle(
        {"t": _Call(_Global("torch.storage", "_load_from_bytes"), inner.getvalue())}))
    with pytest.raises(UnsafeFileError, match="system") as error:
        load_pickle(path)
    assert str(path) in str(error.value) and not marker.exists()


# -- memory: a few bytes must not get gigabytes ------------------------------------------------

_PEAK = """
import resource, sys
sys.path.insert(0, {root!r})
sys.modules["torch"] = None  # the add-on's Python has no torch
from server.safe_pickle import load_pickle
from server.tensor_files import read_torch_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    {reader}({path!r})
    print("LOADED")
except ValueError as exc:
    print(type(exc).__name__, exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("GROWTH_MB", (after - before) / 1024)
"""


def _peak_growth(path: Path, reader: str) -> tuple[str, float]:
    code = _PEAK.format(root=str(ROOT), reader=reader, path=str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), float(lines[-1].split()[1])


def _opcodes(*parts: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(parts) + pickle.STOP


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _int(n: int) -> bytes:
    return pickle.LONG1 + bytes([len(pickle.encode_long(n))]) + pickle.encode_long(n)


BOMBS = {
    "bytes": _opcodes(_global("builtins", "bytes"), _int(4_000_000_000), pickle.TUPLE1,
                      pickle.REDUCE),
    "reconstruct": _opcodes(_global("numpy.core.multiarray", "_reconstruct"),
                            _global("numpy", "ndarray"), _int(500_000_000), pickle.TUPLE1,
                            pickle.SHORT_BINBYTES + b"\x01O", pickle.TUPLE3, pickle.REDUCE),
    "ndarray-call": _opcodes(_global("numpy", "ndarray"), _int(500_000_000), pickle.TUPLE1,
                             pickle.BINUNICODE + struct.pack("<I", 1) + b"O", pickle.TUPLE2,
                             pickle.REDUCE),
    "ndarray-newobj": _opcodes(_global("numpy", "ndarray"), _int(500_000_000), pickle.TUPLE1,
                               pickle.TUPLE1, pickle.NEWOBJ),
    "range": _opcodes(_global("builtins", "list"), _global("builtins", "range"),
                      _int(10**9), pickle.TUPLE1, pickle.REDUCE, pickle.TUPLE1, pickle.REDUCE),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_pickles_asking_for_memory_they_do_not_hold_are_refused_cheaply(tmp_path, name):
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(BOMBS[name])
    assert len(BOMBS[name]) < 100
    printed, growth = _peak_growth(path, "load_pickle")
    assert printed.startswith("UnsafeFileError") and str(path) in printed, printed
    assert growth < 30, f"{growth:.0f} MB for a {len(BOMBS[name])}-byte file"


def test_an_array_state_shorter_than_its_shape_is_refused_without_crashing(tmp_path):
    # NumPy trusts the state: a 16-byte buffer for 10^8 doubles leaves an array that crashes
    # the process when freed.
    state = (1, (100_000_000,), np.dtype("f8"), False, bytes(16))
    path = tmp_path / "short.pkl"
    path.write_bytes(
        pickle.PROTO + b"\x02" + _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray") + pickle.BININT1 + b"\x00" + pickle.TUPLE1
        + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE
        + pickle.dumps(state, protocol=2)[2:-1] + pickle.BUILD + pickle.STOP)
    printed, growth = _peak_growth(path, "load_pickle")
    assert printed.startswith("FileReadError") and "does not hold 800,000,000 bytes" in printed
    assert growth < 30


def test_a_legacy_checkpoint_declaring_a_huge_storage_is_refused_cheaply(tmp_path):
    stream = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(value, stream, protocol=2)
    stream.write(_forged_pickle(_tensor(10**10, (10**10,), (1,), legacy=True)))
    pickle.dump(["0"], stream, protocol=2)
    stream.write(struct.pack("<q", 10**10) + bytes(64))
    path = tmp_path / "legacy.ckpt"
    path.write_bytes(stream.getvalue())
    printed, growth = _peak_growth(path, "read_torch_file")
    assert "declares 10000000000 elements" in printed and str(path) in printed, printed
    assert growth < 30


# -- without torch -------------------------------------------------------------------------------

_NO_TORCH = """
import sys
sys.path.insert(0, {root!r})
sys.modules["torch"] = None  # import torch now fails, as in Blender's Python
sys.modules["safetensors"] = None
import numpy as np
from server.tensor_files import read_safetensors, read_torch_file
arrays = {{}}
for name, value in read_torch_file({zip!r})["state_dict"].items():
    arrays["zip/" + name] = value
for name, value in read_torch_file({legacy!r})["state_dict"].items():
    arrays["legacy/" + name] = value
for name, value in read_safetensors({safetensors!r}).items():
    arrays["safetensors/" + name] = value
np.savez({out!r}, **arrays)
"""


def test_everything_reads_in_a_python_without_torch(tmp_path):
    tensors = _tensors(seed=3)
    torch.save({"state_dict": tensors}, tmp_path / "zip.ckpt")
    torch.save({"state_dict": tensors}, tmp_path / "legacy.ckpt",
               _use_new_zipfile_serialization=False)
    flat = {k: v.detach().contiguous() for k, v in tensors.items() if k != "uint16"}
    save_file(flat, tmp_path / "model.safetensors")
    code = _NO_TORCH.format(root=str(ROOT), zip=str(tmp_path / "zip.ckpt"),
                            legacy=str(tmp_path / "legacy.ckpt"),
                            safetensors=str(tmp_path / "model.safetensors"),
                            out=str(tmp_path / "read.npz"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    read = np.load(tmp_path / "read.npz")
    for kind, expected in (("zip", tensors), ("legacy", tensors), ("safetensors", flat)):
        _assert_same({k: read[f"{kind}/{k}"] for k in expected}, expected)


# -- safetensors ---------------------------------------------------------------------------------

def test_safetensors_read_exactly_as_the_safetensors_package_does(tmp_path):
    g = torch.Generator().manual_seed(5)
    tensors = {
        "f32": torch.randn(3, 4, generator=g), "f64": torch.randn(5, generator=g).double(),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "i64": torch.randint(-2**40, 2**40, (3,), generator=g),
        "i32": torch.randint(-9, 9, (2, 2), generator=g, dtype=torch.int32),
        "i16": torch.randint(-9, 9, (4,), generator=g, dtype=torch.int16),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "u16": torch.tensor([7, 65535], dtype=torch.uint16),
        "bool": torch.tensor([True, False, True]), "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    reference = {k: _numpy(v) for k, v in load_file(path).items()}
    read = read_safetensors(path)
    assert set(read) == set(reference)
    for name, expected in reference.items():
        assert read[name].dtype == expected.dtype and np.array_equal(read[name], expected), name
    header = safetensors_header(path)
    assert header["bf16"] == ("BF16", (7,)) and header["scalar"] == ("F32", ())
    assert "__metadata__" not in header
    assert list(read_safetensors(path, ["i8"])) == ["i8"]


def _raw_safetensors(path: Path, header: dict, data: bytes = b"", length: int | None = None
                     ) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded
                     + data)
    return path


@pytest.mark.parametrize("header, data, length, message", [
    ({}, b"", 2**62, "header claims 4,611,686,018,427,387,904 bytes"),
    ({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}},
     bytes(16), None, "lies outside the file's 16 bytes"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(16), None,
     "needs 12 bytes but is given 8"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(16), None,
     "impossible shape"),
    ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), None,
     "type 'C64', which is not supported"),
], ids=["header-length", "outside", "size", "negative", "dtype"])
def test_safetensors_sizes_are_checked_before_anything_is_read(tmp_path, header, data, length,
                                                                message):
    path = _raw_safetensors(tmp_path / "model.safetensors", header, data, length)
    for reader in (read_safetensors, safetensors_header):
        with pytest.raises(ValueError, match=message) as error:
            reader(path)
        assert str(path) in str(error.value)


def test_safetensors_with_a_name_twice_is_refused(tmp_path):
    entry = '{"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}'
    encoded = f'{{"w": {entry}, "w": {entry}}}'.encode()
    path = tmp_path / "twice.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\x01")
    with pytest.raises(ValueError, match="a name appears twice"):
        read_safetensors(path)


def test_a_real_lightning_checkpoint_reads_exactly(tmp_path):
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self, width: int = 3):
            super().__init__()
            self.save_hyperparameters()
            self.linear = torch.nn.Linear(width, 2)
            self.norm = torch.nn.BatchNorm1d(2)

        def training_step(self, batch, index):
            return self.norm(self.linear(batch[0])).pow(2).mean()

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), 1e-3)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]

    torch.manual_seed(0)
    module = Module()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)),
                                       batch_size=4)
    trainer = L.Trainer(max_steps=2, default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path,
                                                                       save_last=True)])
    trainer.fit(module, data)
    checkpoint = read_torch_file(tmp_path / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["hyper_parameters"] == {"width": 3}
    for name, value in module.state_dict().items():
        assert np.array_equal(checkpoint["state_dict"][name], value.numpy()), name
    adam = checkpoint["optimizer_states"][0]["state"][0]
    assert adam["exp_avg"].shape == (2, 3) and np.isfinite(adam["exp_avg"]).all()


def test_damaged_files_fail_with_one_sentence_never_a_traceback(tmp_path):
    """Seeded random damage to each kind of file: a ValueError that names it, nothing else."""
    import random

    from server.flame import load_flame_file, load_landmark_embedding
    from tests.builders import write_deca_landmark_embedding, write_synthetic_flame

    write_synthetic_flame(tmp_path / "flame.pkl", legacy=True)
    write_deca_landmark_embedding(tmp_path / "embedding.npy")
    state = {"state_dict": {"a": torch.rand(3, 4), "b": torch.arange(5)}}
    torch.save(state, tmp_path / "zip.ckpt")
    torch.save(state, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    readers = {"flame.pkl": load_flame_file, "embedding.npy": load_landmark_embedding,
               "zip.ckpt": read_torch_file, "legacy.ckpt": read_torch_file}
    rng = random.Random(0)
    for name, reader in readers.items():
        original = (tmp_path / name).read_bytes()
        damaged = tmp_path / f"damaged-{name}"
        for _ in range(100):
            data = bytearray(original)
            for _ in range(rng.randint(1, 4)):  # mostly the structure, not the raw numbers
                data[rng.randrange(min(len(data), 4000))] = rng.randrange(256)
            damaged.write_bytes(bytes(data[:rng.randrange(len(data))] if rng.random() < 0.2
                                      else data))
            try:
                reader(damaged)
            except ValueError as error:
                assert str(damaged) in str(error), str(error)
