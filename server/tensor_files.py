# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading tensor files with the standard library and NumPy only (no torch, no safetensors).

The add-on runs inside Blender's own Python, which has NumPy but neither torch nor the
``safetensors`` package, so the files a model is made of are parsed here:

* :func:`read_torch_file`: what ``torch.save`` writes (PyTorch-Lightning ``.ckpt`` included),
  in the zip format of current PyTorch and the older "legacy" stream format. The pickle goes
  through :class:`server.safe_pickle.RestrictedUnpickler`; tensors come back as NumPy arrays.
  TorchScript archives (``torch.jit.save``) hold code and are refused before anything is read.
* ``torch.storage._load_from_bytes`` inside any pickle (how DECA's ``landmark_embedding.npy``
  keeps its torch tensors) is rebuilt through the legacy reader.
* :func:`safetensors_header` and :func:`read_safetensors`: the safetensors format.

Every size a file declares is checked against the bytes it holds before anything is allocated.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .safe_pickle import (
    FileReadError,
    Refusal,
    RestrictedUnpickler,
    UnsafeFileError,
    current_source,
    open_regular_file,
    refusal_error,
    register_names,
)

# -- element types -------------------------------------------------------------------------------


class Element:
    """A torch element type as NumPy sees it: ``dtype`` little-endian; bfloat16 is kept as its
    raw 16 bits and widened to float32 exactly (the bits are the top half of a float32)."""

    def __init__(self, name: str, dtype: str, bfloat16: bool = False) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.bfloat16 = bfloat16

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_ELEMENTS = {e.name: e for e in (
    Element("float32", "<f4"), Element("float64", "<f8"), Element("float16", "<f2"),
    Element("bfloat16", "<u2", bfloat16=True), Element("int64", "<i8"), Element("int32", "<i4"),
    Element("int16", "<i2"), Element("int8", "i1"), Element("uint8", "u1"),
    Element("bool", "?"), Element("complex64", "<c8"), Element("complex128", "<c16"),
    Element("uint16", "<u2"), Element("uint32", "<u4"), Element("uint64", "<u8"),
)}

_STORAGE_ELEMENTS = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}


class StorageType:
    """What a pickle names as ``torch.FloatStorage`` and the like: only its element type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.element = _ELEMENTS[_STORAGE_ELEMENTS[name]]


def _to_native(values: np.ndarray, element: Element) -> np.ndarray:
    """A C-contiguous copy in native byte order; bfloat16 widened to float32."""
    if element.bfloat16:
        bits = values.astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.array(values, dtype=values.dtype.newbyteorder("="), order="C", copy=True)


# -- storages and tensors ----------------------------------------------------------------------


class Storage:
    """One storage of a torch file: ``data`` a 1-D array of its elements (``None`` until read)."""

    def __init__(self, element: Element, numel: int, location: str, order: str = "<",
                 data: np.ndarray | None = None) -> None:
        self.element = element
        self.numel = numel
        self.location = location
        self.order = order  # the file's byte order: "<" or ">"
        self.data = data


def _check_dims(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in values):
        raise Refusal(f"a tensor has the impossible {what} {values!r:.80}")
    return tuple(values)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any,
            element: Element | None = None, metadata: Any = None) -> np.ndarray | None:
    """The tensor ``storage[offset + Σ index·stride]`` of shape ``size``, copied out."""
    if not isinstance(storage, Storage):
        raise Refusal("a tensor's data is not one of the file's storages")
    size = _check_dims(size, "shape")
    stride = _check_dims(stride, "strides")
    if len(stride) != len(size) or not isinstance(offset, int) or offset < 0:
        raise Refusal(f"a tensor of shape {size} has {len(stride)} strides or a negative "
                      "offset")
    element = element or storage.element
    numel = storage.numel
    if element is not storage.element:  # a v3 tensor over untyped bytes
        nbytes = storage.numel * storage.element.dtype.itemsize
        if nbytes % element.dtype.itemsize:
            raise Refusal(f"a storage of {nbytes} bytes does not hold whole {element} "
                          "elements")
        numel = nbytes // element.dtype.itemsize
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= numel:
            raise Refusal(f"a tensor of shape {size} reaches element {last:,} of a storage "
                          f"of {numel:,}")
    if storage.data is None:  # the legacy format's first pass: storages not read yet
        return None
    data = storage.data
    if element is not storage.element:
        data = data.view(np.uint8).view(element.dtype.newbyteorder(storage.order))
    if 0 in size:
        values = np.zeros(size, data.dtype)
    else:
        item = data.dtype.itemsize
        values = np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
    tensor = _to_native(values, element)
    if isinstance(metadata, dict):  # torch's lazy negation and conjugation bits
        if metadata.get("neg"):
            tensor = np.negative(tensor)
        if metadata.get("conj"):
            tensor = np.conj(tensor)
    return tensor


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Any:
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> Any:
    return _tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> Any:
    if not isinstance(dtype, Element):
        raise Refusal("a tensor's type is not a torch type")
    return _tensor(storage, storage_offset, size, stride, dtype, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any,
                                  state: Any) -> Any:
    return data


def _rebuild_device_tensor_from_numpy(data: Any, dtype: Any, device: Any,
                                      requires_grad: Any = False) -> Any:
    if not isinstance(data, np.ndarray) or not isinstance(dtype, Element):
        raise Refusal("a tensor stored as a NumPy array is not one")
    return _to_native(np.asarray(data, dtype.dtype), dtype)


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
               _rebuild_parameter_with_state, _rebuild_device_tensor_from_numpy)


class TorchClass:
    """What a pickle names as ``torch.Tensor`` or ``torch.nn.Parameter``: a name only."""

    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # Tensor subclasses (Parameter) pickle as "rebuild a tensor, then make it this type".
    if not any(func is f for f in _REBUILDERS) or not isinstance(args, tuple):
        raise Refusal("it rebuilds a tensor with something other than torch's tensor "
                      "rebuilders", unsafe=True)
    if not isinstance(new_type, TorchClass):
        raise Refusal("it makes a tensor of a class other than torch's own", unsafe=True)
    return func(*args)


def _size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (tuple, list)) or not all(isinstance(n, int) for n in dims):
        raise Refusal("a torch.Size is not a list of whole numbers")
    return tuple(dims)


def _device(*args: Any) -> str:
    if not all(isinstance(a, (str, int)) for a in args):
        raise Refusal("a torch.device is not a name and number")
    return ":".join(str(a) for a in args)


def _load_from_bytes(data: Any) -> Storage:
    # A storage pickled on its own (inside a plain pickle or an .npy): legacy torch.save bytes.
    if not isinstance(data, bytes):
        raise Refusal("a pickled torch storage is not bytes")
    stored = _read_legacy(data, current_source(), nested=True)
    if not isinstance(stored, Storage):
        raise Refusal("a pickled torch storage holds something other than a storage")
    return stored


_TORCH_NAMES: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_device_tensor_from_numpy,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
    ("torch", "Tensor"): TorchClass("Tensor"),
    ("torch.nn.parameter", "Parameter"): TorchClass("Parameter"),
}
_TORCH_NAMES.update({("torch", name): element for name, element in _ELEMENTS.items()})
for _module in ("torch", "torch.cuda", "torch.storage"):
    _TORCH_NAMES.update({(_module, name): StorageType(name) for name in _STORAGE_ELEMENTS})
register_names(_TORCH_NAMES, callables=_REBUILDERS + (_rebuild_from_type_v2, _load_from_bytes,
                                                      _size, _device))

# -- torch.save files ----------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def read_torch_file(path: str | Path) -> Any:
    """The object a ``torch.save`` file holds, its tensors as NumPy arrays, read without torch
    and without running code from the file.

    Reads the zip format (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``) and the legacy
    stream format; tensors tagged ``cuda:0`` load like any other. Lightning, OmegaConf and
    optimizer objects become inert :class:`server.safe_pickle.Stub` records. Raises
    :class:`server.safe_pickle.UnsafeFileError` for TorchScript archives and for pickles that
    ask to run code, ``ValueError`` (one sentence naming the file) for missing, damaged or
    foreign files.
    """
    path = Path(path)
    source = f"'{path}'"
    with _open(path, "checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FileReadError(f"The checkpoint '{path}' is empty.")
        head = f.read(512)
        f.seek(0)
        try:
            if head.startswith(b"PK"):
                return _read_zip(f, source, size)
            if head[257:262] == b"ustar":
                raise FileReadError(f"'{path}' is in the tar format of PyTorch before 0.4, which "
                                    "is not supported.")
            return _read_legacy(f.read(), source)
        except Refusal as refusal:
            raise refusal_error(refusal, source) from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error,
                NotImplementedError, UnicodeError) as exc:
            raise FileReadError(f"Could not read the checkpoint '{path}': it is truncated or "
                                f"damaged ({exc}).") from None


def _open(path: Path, kind: str) -> BinaryIO:
    try:
        return open_regular_file(path)
    except FileNotFoundError:
        raise FileReadError(f"The {kind} '{path}' was not found.") from None
    except OSError as exc:
        raise FileReadError(f"The {kind} '{path}' could not be opened ({exc.strerror}).") from None


def _is_torchscript(names: list[str]) -> bool:
    """``torch.jit.save`` archives keep their code under ``code/`` and ``constants.pkl``."""
    for name in names:
        inner = name.split("/", 1)[1] if "/" in name else name
        if inner == "constants.pkl" or inner.startswith("code/"):
            return True
    return False


def _read_zip(f: BinaryIO, source: str, size: int) -> Any:
    with zipfile.ZipFile(f) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        if _is_torchscript(list(infos)):
            raise UnsafeFileError(f"{source} is a TorchScript archive, not a checkpoint: it "
                                  "holds code, so it is not loaded.")
        pickles = [name for name in infos if name.count("/") == 1 and
                   name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise FileReadError(f"{source} is a zip archive but not a PyTorch checkpoint (it "
                                f"holds {'no' if not pickles else 'several'} data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]

        def entry(name: str) -> bytes:
            info = infos[name]
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                raise Refusal(f"its entry '{name}' is compressed or larger than the archive, "
                              "which torch.save never writes")
            return archive.read(info)

        byteorder = "little"
        if prefix + "byteorder" in infos:
            byteorder = entry(prefix + "byteorder").decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise Refusal(f"its byte order is '{byteorder[:20]}'")
        order = "<" if byteorder == "little" else ">"
        storages: dict[str, Storage] = {}

        def persistent_load(saved_id: Any) -> Storage:
            if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and
                    saved_id[0] == "storage" and isinstance(saved_id[1], StorageType)):
                raise Refusal("it refers to stored data that is not a tensor storage")
            _, kind, key, location, numel = saved_id
            key = str(key)
            if key in storages:
                return storages[key]
            name = f"{prefix}data/{key}"
            if name not in infos:
                raise Refusal(f"its storage '{key}' is missing")
            element = kind.element
            if not isinstance(numel, int) or numel < 0 or (
                    numel * element.dtype.itemsize != infos[name].file_size):
                raise Refusal(f"its storage '{key}' declares {numel:,} elements of "
                              f"{element.dtype.itemsize} bytes but holds "
                              f"{infos[name].file_size:,} bytes")
            data = np.frombuffer(entry(name), element.dtype.newbyteorder(order))
            storages[key] = Storage(element, numel, str(location), order, data)
            return storages[key]

        unpickler = RestrictedUnpickler(io.BytesIO(entry(pickles[0])), source=source,
                                        budget=size)
        unpickler.persistent_load = persistent_load
        return unpickler.load_checked()


def _read_legacy(data: bytes, source: str, nested: bool = False) -> Any:
    """The legacy stream: magic number, protocol, system info, the object, its storage keys,
    then each storage as an int64 element count and its raw elements.

    The storages come after the object that uses them, so the object pickle is read twice:
    once to learn each storage's type and size, then, with the data read and checked, for real.
    """
    stream = io.BytesIO(data)

    def unpickle(persistent_load: Any = None) -> Any:
        unpickler = RestrictedUnpickler(stream, source=source, budget=len(data))
        if persistent_load is not None:
            unpickler.persistent_load = persistent_load
        return unpickler.load_checked()

    magic = unpickle()
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        if nested:
            raise Refusal("a pickled torch storage is not in torch's own format")
        raise FileReadError(f"{source} is not a PyTorch checkpoint (neither the zip nor the "
                            "legacy format).")
    version = unpickle()
    if type(version) is not int or version != _LEGACY_PROTOCOL:
        raise Refusal("its legacy format version is not 1001")
    info = unpickle()
    order = "<" if not isinstance(info, dict) or info.get("little_endian", True) else ">"
    start = stream.tell()
    storages: dict[str, Storage] = {}
    views: dict[str, Storage] = {}

    def persistent_load(saved_id: Any) -> Storage:
        if isinstance(saved_id, tuple) and saved_id and saved_id[0] == "module":
            raise Refusal("it holds a pickled module, that is code", unsafe=True)
        if not (isinstance(saved_id, tuple) and len(saved_id) == 6 and
                saved_id[0] == "storage" and isinstance(saved_id[1], StorageType)):
            raise Refusal("it refers to stored data that is not a tensor storage")
        _, kind, key, location, numel, view = saved_id
        key = str(key)
        if not isinstance(numel, int) or numel < 0 or numel * kind.element.dtype.itemsize > len(
                data):
            raise Refusal(f"its storage '{key}' declares {numel!r:.30} elements")
        root = storages.setdefault(key, Storage(kind.element, numel, str(location), order))
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and all(
                isinstance(v, int) for v in view[1:])):
            raise Refusal(f"a view of storage '{key}' is not described by a key, offset and size")
        view_key, offset, count = str(view[0]), view[1], view[2]
        if offset < 0 or count < 0 or offset + count > root.numel:
            raise Refusal(f"a view of storage '{key}' lies outside it")
        if view_key not in views:
            sliced = None if root.data is None else root.data[offset: offset + count]
            views[view_key] = Storage(root.element, count, root.location, order, sliced)
        return views[view_key]

    unpickle(persistent_load)  # learn the storages
    keys = unpickle()
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise Refusal("its list of storages does not match the storages its object uses")
    for key in map(str, keys):
        storage = storages[key]
        itemsize = storage.element.dtype.itemsize
        header = stream.read(8)
        if len(header) < 8:
            raise Refusal(f"it ends before storage '{key}'")
        (count,) = struct.unpack(f"{order}q", header)
        if count != storage.numel:
            raise Refusal(f"its storage '{key}' holds {count:,} elements where its object "
                          f"says {storage.numel:,}")
        here = stream.tell()
        if count * itemsize > len(data) - here:
            raise Refusal(f"it ends inside storage '{key}' ({count * itemsize:,} bytes "
                          f"declared, {len(data) - here:,} left)")
        storage.data = np.frombuffer(data, storage.element.dtype.newbyteorder(order), count,
                                     here)
        stream.seek(here + count * itemsize)
    stream.seek(start)
    views.clear()
    return unpickle(persistent_load)


# -- safetensors ---------------------------------------------------------------------------------

_SAFETENSORS_TYPES = {
    "F64": _ELEMENTS["float64"], "F32": _ELEMENTS["float32"], "F16": _ELEMENTS["float16"],
    "BF16": _ELEMENTS["bfloat16"], "I64": _ELEMENTS["int64"], "I32": _ELEMENTS["int32"],
    "I16": _ELEMENTS["int16"], "I8": _ELEMENTS["int8"], "U8": _ELEMENTS["uint8"],
    "U16": _ELEMENTS["uint16"], "U32": _ELEMENTS["uint32"], "U64": _ELEMENTS["uint64"],
    "BOOL": Element("bool", "u1"),  # read as bytes, then compared with 0
}
_HEADER_LIMIT = 100_000_000  # the safetensors format's own limit


class _Layout:
    def __init__(self, metadata: dict[str, str], tensors: dict[str, tuple[str, tuple[int, ...],
                                                                          int, int]],
                 data_start: int) -> None:
        self.metadata, self.tensors, self.data_start = metadata, tensors, data_start


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise FileReadError("a name appears twice in the header")
    return result


def _safetensors_layout(f: BinaryIO, path: Path) -> _Layout:
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise FileReadError(f"'{path}' is not a safetensors file: it is too short to hold a "
                            "header.")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > min(size - 8, _HEADER_LIMIT) or length < 2:
        raise FileReadError(f"'{path}' is not a safetensors file or is truncated: its header "
                            f"claims {length:,} bytes and the file holds {size - 8:,} after it.")
    try:
        header = json.loads(f.read(length).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FileReadError(f"'{path}' is not a safetensors file: its header is not valid JSON "
                            f"({exc}).") from None
    if not isinstance(header, dict):
        raise FileReadError(f"'{path}' is not a safetensors file: its header is not a table.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values()):
        raise FileReadError(f"'{path}' is damaged: its metadata is not a table of strings.")
    data_size = size - 8 - length
    tensors = {}
    for name, entry in header.items():
        where = f"'{path}' is damaged: the tensor '{name}'"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FileReadError(f"{where} is not described by dtype, shape and data_offsets.")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _SAFETENSORS_TYPES:
            raise FileReadError(f"'{path}': the tensor '{name}' has the type {dtype!r:.20}, which "
                                "is not supported (F32, F64, F16, BF16, I64, I32, I16, I8, U8, "
                                "U16, U32, U64, BOOL).")
        if not isinstance(shape, list) or not all(
                type(n) is int and n >= 0 for n in shape):
            raise FileReadError(f"{where} has the impossible shape {shape!r:.80}.")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                type(n) is int for n in offsets) and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise FileReadError(f"{where} lies outside the file's {data_size:,} bytes of data "
                                f"({offsets!r:.60}).")
        nbytes = math.prod(shape) * _SAFETENSORS_TYPES[dtype].dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise FileReadError(f"{where} of shape {tuple(shape)} and type {dtype} needs "
                                f"{nbytes:,} bytes but is given {offsets[1] - offsets[0]:,}.")
        tensors[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    return _Layout(metadata, tensors, 8 + length)


def safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name → (safetensors dtype such as ``"F32"``, shape) of every tensor in a ``.safetensors``
    file, every size checked against the file; nothing but the header is read."""
    path = Path(path)
    with _open(path, "safetensors file") as f:
        layout = _safetensors_layout(f, path)
    return {name: (dtype, shape) for name, (dtype, shape, _, _) in layout.tensors.items()}


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` table of a ``.safetensors`` file (empty when it has none)."""
    path = Path(path)
    with _open(path, "safetensors file") as f:
        return dict(_safetensors_layout(f, path).metadata)


def read_safetensors(path: str | Path, names: list[str] | None = None
                     ) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file (all, or ``names``) as native NumPy arrays; BF16
    becomes float32 exactly. Sizes are checked before anything is allocated."""
    path = Path(path)
    with _open(path, "safetensors file") as f:
        layout = _safetensors_layout(f, path)
        wanted = list(layout.tensors) if names is None else list(names)
        missing = [n for n in wanted if n not in layout.tensors]
        if missing:
            raise FileReadError(f"'{path}' has no tensor named {', '.join(map(repr, missing))}.")
        arrays = {}
        for name in wanted:
            dtype, shape, begin, end = layout.tensors[name]
            element = _SAFETENSORS_TYPES[dtype]
            raw = np.empty(shape, element.dtype)
            if end > begin:
                f.seek(layout.data_start + begin)
                if f.readinto(memoryview(raw.reshape(-1)).cast("B")) != end - begin:
                    raise FileReadError(f"'{path}' is truncated: the tensor '{name}' ends past the "
                                        "end of the file.")
            if dtype == "BOOL":
                arrays[name] = raw != 0
            elif element.bfloat16 or not raw.dtype.isnative:
                arrays[name] = _to_native(raw, element)
            else:
                arrays[name] = raw
    return arrays
