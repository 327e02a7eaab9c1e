# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading pickled model files without running code from them.

FLAME ``.pkl`` files and PyTorch-Lightning ``.ckpt`` files are pickles, and a pickle can name any
Python function to call while it loads. This module unpickles them with an allow-list:

* tensors, NumPy arrays and plain containers are rebuilt for real;
* objects that only carry metadata we never use (Lightning's ``hyper_parameters``, callback
  states, OmegaConf containers, chumpy arrays, scipy sparse matrices) become inert
  :class:`Stub` records whose state is kept as data, so nothing of theirs runs;
* every other name (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused with
  :class:`UnsafeFileError` before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import types
from pathlib import Path
from typing import Any


class UnsafeFileError(ValueError):
    """The file asks to run code that a model file never needs."""


# Names rebuilt for real: they only reconstruct data.
_ALLOWED: dict[tuple[str, str], str] = {}


def _allow(module: str, *names: str) -> None:
    for name in names:
        _ALLOWED[(module, name)] = module


_allow("collections", "OrderedDict", "defaultdict")
_allow("builtins", "set", "frozenset", "slice", "complex", "range", "bytearray", "dict", "list",
       "tuple", "int", "float", "str", "bytes", "bool", "object")
_allow("copyreg", "_reconstructor")
_allow("_codecs", "encode")
_allow("torch._utils", "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
       "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy")
_allow("torch._tensor", "_rebuild_from_type_v2")
_allow("torch", "Size", "Tensor", "device", "float32", "float64", "float16", "bfloat16", "int64",
       "int32", "int16", "int8", "uint8", "bool", "complex64", "complex128", "strided")
_allow("torch.nn.parameter", "Parameter")
for _np in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _allow(_np, "_reconstruct", "scalar")
_allow("numpy", "ndarray", "dtype")
_allow("numpy.dtypes", "Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
       "Int16DType", "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType", "UInt8DType",
       "BoolDType", "ObjectDType", "BytesDType", "StrDType")

# Module prefixes whose objects are kept as inert records: metadata we never need, or containers
# (chumpy, scipy.sparse) whose arrays we take out of the record ourselves.
_STUBBED_PREFIXES = (
    "pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "typing", "inferno",
    "chumpy", "scipy.sparse", "torch.optim", "pathlib", "argparse", "enum",
)


class Stub:
    """An inert stand-in for an object we do not rebuild: it keeps what the pickle gave it.

    Pickles build objects through ``cls(*args)``, ``cls.__new__(cls)`` or
    ``copyreg._reconstructor``, then fill them with ``__setstate__``, item assignment or
    ``append``/``extend``; every one of those only records data here.
    """

    stub_module = ""
    stub_name = ""
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("elements", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("elements", []).extend(items)

    def __repr__(self) -> str:
        return f"<stub {self.stub_module}.{self.stub_name}>"


_stub_classes: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        cls = type(name, (Stub,), {"stub_module": module, "stub_name": name,
                                   "__module__": __name__})
        _stub_classes[key] = cls
    return _stub_classes[key]


def _resolve(module: str, name: str) -> Any:
    __import__(module)
    import sys

    obj: Any = sys.modules[module]
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that refuses every global outside the allow-list."""

    source = "the file"

    def find_class(self, module: str, name: str) -> Any:
        # Python-2 pickles (FLAME 2020) name modules the old way (copy_reg, __builtin__).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            return _resolve(module, name)
        if any(module == p or module.startswith(p + ".") for p in _STUBBED_PREFIXES):
            return _stub_class(module, name)
        raise UnsafeFileError(
            f"Refused to load {self.source}: it asks to run '{module}.{name}', which a model "
            "file never needs. The file is damaged or was made to run code; do not use it."
        )


def load_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (FLAME files, plain pickles)."""
    data = Path(path).read_bytes()
    unpickler = RestrictedUnpickler(io.BytesIO(data), encoding=encoding)
    unpickler.source = f"'{path}'"
    return unpickler.load()


def load_pickle_stream(stream: Any, encoding: str = "latin1") -> Any:
    """Unpickle the next pickle of an open binary ``stream`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(stream, encoding=encoding).load()


def _pickle_module_for(path: Path) -> types.ModuleType:
    """A stand-in ``pickle`` module for ``torch.load`` whose Unpickler is restricted."""

    class Unpickler(RestrictedUnpickler):
        source = f"'{path}'"

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: Unpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "restricted_pickle"
    return module


def load_torch_checkpoint(path: Path) -> Any:
    """Load a ``torch.save`` file (a Lightning ``.ckpt`` included) to CPU without running code.

    ``torch.load(weights_only=True)`` refuses the Lightning extras that official checkpoints carry,
    so we give ``torch.load`` our own restricted unpickler instead: tensors are rebuilt, Lightning
    and OmegaConf objects become inert stubs, anything else is refused.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_pickle_module_for(path))
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"Could not read the checkpoint '{path}': {exc}") from exc


# Writing pickles that name classes we do not have (chumpy, old scipy paths, Lightning): how
# official files look. Used to write legacy FLAME files and official-layout test checkpoints.


class ForeignClass:
    """Stands for the class ``module.name`` when pickling; that class need not be installed."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class ForeignObject:
    """Pickles as an instance of ``module.name`` rebuilt with ``state``."""

    def __init__(self, module: str, name: str, state: Any) -> None:
        self.cls = ForeignClass(module, name)
        self.state = state



class ForeignPickler(pickle._Pickler):  # noqa: SLF001 - the pure-Python pickler can name globals
    """A pickler that writes :class:`ForeignClass` markers as the global they stand for."""

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, ForeignClass):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        if isinstance(obj, ForeignObject):  # cls.__new__(cls), then __setstate__(state)
            self.save(obj.cls)
            self.save(())
            self.write(pickle.NEWOBJ)
            self.memoize(obj)
            self.save(obj.state)
            self.write(pickle.BUILD)
            return
        super().save(obj, save_persistent_id)


foreign_pickle_module = types.ModuleType("foreign_pickle")
foreign_pickle_module.Pickler = ForeignPickler  # type: ignore[attr-defined]
foreign_pickle_module.HIGHEST_PROTOCOL = 2  # type: ignore[attr-defined]
"""Pass as ``torch.save(..., pickle_module=foreign_pickle_module)`` to write foreign classes."""
