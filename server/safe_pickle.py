# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading pickled model files without running code from them, and without letting them ask for
memory they do not hold.

FLAME ``.pkl`` files, ``.npy`` object arrays and PyTorch-Lightning ``.ckpt`` files are pickles,
and a pickle can name any Python function to call while it loads. This module unpickles them
with its own opcode handlers (NumPy and the standard library only; no torch):

* a pickle may *name* only what real model files name: NumPy's array and dtype rebuilders,
  plain containers and numbers, and torch's tensor rebuilders, which
  :mod:`server.tensor_files` replaces with NumPy ones;
* it may *call* only functions that rebuild data, each checking its arguments first, so that a
  few bytes cannot ask for gigabytes (``bytearray(4_000_000_000)``) or for an array bigger than
  the file; ``numpy.ndarray``, ``bytes``, ``list`` and the like may be named but not called;
* the state a pickle gives an array is checked against the array's shape before NumPy sees it
  (NumPy trusts it, and a short buffer leaves a broken array that crashes the process);
* objects that only carry metadata we never use (Lightning's ``hyper_parameters``, callback
  states, OmegaConf containers, chumpy arrays, scipy sparse matrices) become inert
  :class:`Stub` records whose state is kept as data, so nothing of theirs runs;
* every other name (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) is refused with
  :class:`UnsafeFileError` before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import io
import math
import os
import pickle
import stat
import threading
import types
from collections.abc import Callable
from pathlib import Path
from struct import error as struct_error
from typing import Any, BinaryIO

import numpy as np


class UnsafeFileError(ValueError):
    """The file asks to run code, or for memory, that a model file never needs."""


class FileReadError(ValueError):
    """A file could not be read; the message is a sentence that names it and says why, and
    ``reason`` is the why alone ("it is damaged: ...")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class Refusal(Exception):
    """Raised while unpickling, with a detail; the unpickler turns it into a sentence that names
    the file. ``unsafe``: the file asks for something no real file does (code, memory it does
    not hold); otherwise its own numbers contradict each other (damage)."""

    def __init__(self, detail: str, unsafe: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.unsafe = unsafe


def open_regular_file(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    A FIFO would block the reader and ``/dev/zero`` never ends; they are opened without blocking
    and refused at once, as are folders. Raises ``FileNotFoundError`` or ``ValueError``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError(f"'{path}' is a folder, not a file.")
        if not stat.S_ISREG(mode):
            raise ValueError(f"'{path}' is not a regular file (it is a device, a pipe or a "
                             "socket), so it is not read.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of a regular file (see :func:`open_regular_file`)."""
    with open_regular_file(path) as f:
        return f.read()


# -- what a pickle may name --------------------------------------------------------------------

_NAMES: dict[tuple[str, str], Any] = {}
"""(module, name) → the object the unpickler hands out for that global."""

_CALLABLE: set[int] = set()
"""ids of the objects in ``_NAMES`` a pickle may call (each one checks its own arguments)."""

_BUDGETED: set[int] = set()
"""ids of the callables that allocate: they get ``budget=`` (the bytes the file holds)."""


def register_names(names: dict[tuple[str, str], Any], callables: tuple[Any, ...] = (),
                   budgeted: tuple[Any, ...] = ()) -> None:
    """Let pickles name ``names`` (module, name → object); of those, call only ``callables``
    (and ``budgeted``, which are also told how many bytes the file holds: ``budget=``)."""
    _NAMES.update(names)
    _CALLABLE.update(id(c) for c in callables + budgeted)
    _BUDGETED.update(id(c) for c in budgeted)


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, complex, str, bytes))


def _plain_call(func: Callable[..., Any], arguments: str) -> Callable[..., Any]:
    """``func`` callable from a pickle with primitive arguments, or with one list or tuple."""

    def call(*args: Any) -> Any:
        if arguments == "iterable":
            ok = len(args) == 0 or (len(args) == 1 and isinstance(args[0], (list, tuple)))
        else:
            ok = all(_primitive(a) for a in args)
        if not ok:
            raise Refusal(f"it calls '{func.__name__}' with arguments that a model file never uses",
                          unsafe=True)
        return func(*args)

    call.__name__ = func.__name__
    return call


_BUILTIN_CALLS = {
    set: "iterable", frozenset: "iterable", collections.OrderedDict: "iterable",
    slice: "primitive", complex: "primitive", int: "primitive", float: "primitive",
    bool: "primitive", str: "primitive", object: "primitive",
}
_CALL_WRAPPERS = {id(func): _plain_call(func, kind) for func, kind in _BUILTIN_CALLS.items()}

for _builtin in ("set", "frozenset", "slice", "complex", "int", "float", "bool", "str", "object",
                 "dict", "list", "tuple"):
    _NAMES[("builtins", _builtin)] = getattr(builtins, _builtin)
del _builtin
_NAMES[("collections", "OrderedDict")] = collections.OrderedDict


_SAFE_ENCODINGS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8",
                   "ascii"}


def _bytes_from(kind: type, source: Any = b"", encoding: str | None = None,
                errors: str = "strict") -> Any:
    # bytes(n) and bytearray(n) allocate n zero bytes out of nothing: only data is accepted.
    if isinstance(source, int):
        raise Refusal(f"it asks for a {source:,}-byte buffer that is not in the file",
                      unsafe=True)
    if isinstance(source, str) and str(encoding or "utf-8").lower() in _SAFE_ENCODINGS:
        return kind(source, encoding or "utf-8", errors)
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        return kind(source)
    raise Refusal(f"it builds {kind.__name__} from something other than data",
                  unsafe=True)


def _bytes(*args: Any) -> bytes:
    return _bytes_from(bytes, *args)


def _bytearray(*args: Any) -> bytearray:
    return _bytes_from(bytearray, *args)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # How Python-2 era pickles (FLAME 2020) and protocol-2 pickles store bytes.
    if not isinstance(obj, str) or str(encoding).lower() not in _SAFE_ENCODINGS:
        raise Refusal("it asks to encode something other than text, or with an unusual "
                      "codec", unsafe=True)
    return codecs.encode(obj, encoding, errors)


def _defaultdict(factory: Any = None, *items: Any) -> collections.defaultdict:
    if factory is not None and factory not in (list, dict, set, int, float, str, tuple,
                                               collections.OrderedDict):
        raise Refusal("it makes a defaultdict whose default is not a plain container",
                      unsafe=True)
    if items and not (len(items) == 1 and isinstance(items[0], (list, tuple, dict))):
        raise Refusal("it fills a defaultdict from something other than data", unsafe=True)
    return collections.defaultdict(factory, *items)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    # copyreg._reconstructor(cls, object, None) is how old pickles make a plain instance; a
    # subclass of a builtin (dict, int ...) is kept as a record of what it was built from.
    if isinstance(cls, type) and issubclass(cls, Stub):
        obj = object.__new__(cls)
        if base is not object:
            obj.args = (state,)
        return obj
    raise Refusal("it asks to rebuild an object of the class "
                  f"'{getattr(cls, '__name__', type(cls).__name__)}', which a model file never "
                  "holds", unsafe=True)


_NAMES[("builtins", "bytes")] = _bytes
_NAMES[("builtins", "bytearray")] = _bytearray
_NAMES[("_codecs", "encode")] = _codecs_encode
_NAMES[("collections", "defaultdict")] = _defaultdict
_NAMES[("copyreg", "_reconstructor")] = _reconstructor
_CALLABLE.update(id(f) for f in (_bytes, _bytearray, _codecs_encode, _defaultdict,
                                 _reconstructor))

# -- NumPy ---------------------------------------------------------------------------------------

def _nbytes(shape: Any, dtype: np.dtype) -> int:
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise Refusal(f"an array has the impossible shape {shape!r:.80}")
    return math.prod(shape) * dtype.itemsize


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, np.dtype):
        return value
    if isinstance(value, (str, bytes)):
        try:
            return np.dtype(value.decode("latin1") if isinstance(value, bytes) else value)
        except TypeError as exc:
            raise Refusal(f"an array has the unknown type {value!r:.40}") from exc
    raise Refusal("an array's type is not a NumPy type")


def _reconstruct(subtype: Any, shape: Any, dtype: Any, *, budget: int = 0) -> np.ndarray:
    if subtype is not np.ndarray:
        raise Refusal("it asks to rebuild an array of a class other than numpy.ndarray, "
                      "which a model file never holds", unsafe=True)
    dtype = _as_dtype(dtype)
    nbytes = _nbytes(shape, dtype)
    if nbytes > budget:
        raise Refusal(f"it asks for a {nbytes:,}-byte array that is not in the file",
                      unsafe=True)
    return np.empty(shape, dtype)


def _scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _as_dtype(dtype)
    if dtype.hasobject:
        if dtype != np.dtype(object):
            raise Refusal("it holds a structured NumPy scalar, which a model file never needs",
                          unsafe=True)
        return data
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise Refusal(f"a NumPy {dtype} scalar does not hold {dtype.itemsize} bytes")
    return np.frombuffer(data, dtype)[0]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str = "C") -> np.ndarray:
    # NumPy's protocol-5 array pickles: the data, then its type and shape.
    dtype = _as_dtype(dtype)
    if isinstance(buffer, pickle.PickleBuffer):
        buffer = buffer.raw()
    if not isinstance(buffer, (bytes, bytearray, memoryview)) or dtype.hasobject:
        raise Refusal("an array's data is not a buffer of plain numbers")
    nbytes = _nbytes(shape, dtype)
    if len(memoryview(buffer).cast("B")) != nbytes:
        raise Refusal(f"an array of shape {tuple(shape)} and type {dtype} does not hold "
                      f"{nbytes:,} bytes")
    return np.frombuffer(buffer, dtype).reshape(shape, order="F" if order == "F" else "C")


def _set_array_state(array: np.ndarray, state: Any) -> None:
    """``ndarray.__setstate__`` after checking that the data matches the shape (NumPy does not
    always: a short buffer leaves an array that crashes the process when it is freed)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise Refusal("an array's state is not NumPy's")
    shape, dtype, fortran, data = state[-4:]
    if not isinstance(dtype, np.dtype) or fortran not in (True, False):
        raise Refusal("an array's state is not NumPy's")
    _nbytes(shape, dtype)  # a shape of whole numbers, none negative
    count = math.prod(shape)
    if dtype.hasobject:
        if dtype != np.dtype(object) or not isinstance(data, list) or len(data) != count:
            raise Refusal(f"an object array of shape {tuple(shape)} does not hold {count} items")
    else:
        size = len(data) if isinstance(data, (bytes, bytearray, str)) else -1
        if size != count * dtype.itemsize:
            raise Refusal(f"an array of shape {tuple(shape)} and type {dtype} does not hold "
                          f"{count * dtype.itemsize:,} bytes")
    array.__setstate__(state)


def _set_dtype_state(dtype: np.dtype, state: Any) -> None:
    # Plain types only: sub-arrays and fields would let the state change the item size.
    if not (isinstance(state, tuple) and len(state) in (8, 9)
            and all(part is None for part in state[2:5] + state[8:])):
        raise Refusal("it holds a structured NumPy type, which a model file never needs",
                      unsafe=True)
    dtype.__setstate__(state)


for _np in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NAMES[(_np, "_reconstruct")] = _reconstruct
    _NAMES[(_np, "scalar")] = _scalar
for _np in ("numpy.core.numeric", "numpy._core.numeric"):
    _NAMES[(_np, "_frombuffer")] = _frombuffer
_NAMES[("numpy", "ndarray")] = np.ndarray
_NAMES[("numpy", "dtype")] = np.dtype
_CALL_WRAPPERS[id(np.dtype)] = _plain_call(np.dtype, "primitive")
_CALLABLE.update(id(f) for f in (_reconstruct, _scalar, _frombuffer))
_BUDGETED.add(id(_reconstruct))
for _name_ in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
               "Int16DType", "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType",
               "UInt8DType", "BoolDType", "ObjectDType", "BytesDType", "StrDType"):
    _NAMES[("numpy.dtypes", _name_)] = getattr(np.dtypes, _name_)

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


_NEW_WITHOUT_ARGUMENTS = (object, dict, collections.OrderedDict, list, set)
"""Classes whose ``__new__`` ignores its arguments (they are filled afterwards)."""


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - its opcode handlers are replaced
    """An unpickler that names, calls and fills only what data files need (module docstring).

    ``budget`` is how many bytes the file holds: no array it asks for may be larger. Use
    :meth:`load_checked` to get errors as sentences naming ``source``.
    """

    def __init__(self, file: BinaryIO, *, source: str = "the file", budget: int | None = None,
                 encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source
        self.budget = budget if budget is not None else _remaining(file)

    # -- names -------------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        # Python-2 pickles (FLAME 2020) name modules the old way (copy_reg, __builtin__).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "torch" or module.startswith("torch."):
            from . import tensor_files  # noqa: F401 - registers torch's rebuilders (NumPy ones)
        if (module, name) in _NAMES:
            return _NAMES[(module, name)]
        if any(module == p or module.startswith(p + ".") for p in _STUBBED_PREFIXES):
            return _stub_class(module, name)
        raise UnsafeFileError(
            f"Refused to load {self.source}: it asks to run '{module}.{name}', which a model "
            "file never needs. The file is damaged or was made to run code; do not use it."
        )

    # -- calls -------------------------------------------------------------------------------

    def _call(self, func: Any, args: tuple, kwargs: dict | None = None) -> Any:
        if kwargs:
            raise Refusal("it calls a function with keyword arguments, which a model file "
                          "never does", unsafe=True)
        if isinstance(func, type) and issubclass(func, Stub):
            return func(*args)
        if id(func) in _CALL_WRAPPERS:
            return _CALL_WRAPPERS[id(func)](*args)
        if id(func) in _BUDGETED:
            return func(*args, budget=self.budget)
        if id(func) in _CALLABLE:
            return func(*args)
        raise Refusal(f"it calls '{getattr(func, '__name__', type(func).__name__)}' in a way "
                      "a model file never does", unsafe=True)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise Refusal("a call's arguments are not a tuple")
        self.stack[-1] = self._call(self.stack[-1], args)

    def _new(self, cls: Any, args: tuple, kwargs: dict | None = None) -> Any:
        if isinstance(cls, type) and issubclass(cls, Stub):
            return cls.__new__(cls)
        if cls in _NEW_WITHOUT_ARGUMENTS and not kwargs:
            return cls.__new__(cls)
        return self._call(cls, args, kwargs)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args)))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:  # OBJ and INST
        self.append(self._new(klass, tuple(args)) if not args else self._call(klass, tuple(args)))

    # -- filling objects ---------------------------------------------------------------------

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Stub):
            inst.__setstate__(state)
        elif type(inst) is np.ndarray:
            _set_array_state(inst, state)
        elif isinstance(inst, np.dtype):
            _set_dtype_state(inst, state)
        elif isinstance(inst, collections.OrderedDict) and isinstance(state, dict) and all(
                isinstance(k, str) for k in state):
            inst.__dict__.update(state)  # a state dict's ``_metadata``
        else:
            raise Refusal(f"it sets the state of a {type(inst).__name__}, which a model file "
                          "never does", unsafe=True)

    @staticmethod
    def _fillable(target: Any, kind: tuple[type, ...]) -> Any:
        if not isinstance(target, kind + (Stub,)):
            raise Refusal(f"it adds items to a {type(target).__name__}, which a model file "
                          "never does", unsafe=True)
        return target

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._fillable(self.stack[-1], (dict,))[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._fillable(self.stack[-1], (dict,))
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._fillable(self.stack[-1], (list,)).append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._fillable(self.stack[-1], (list,)).extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise Refusal(f"it adds items to a {type(target).__name__}, which a model file "
                          "never does", unsafe=True)
        target.update(items)

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems

    # -- errors as sentences -----------------------------------------------------------------

    def load_checked(self) -> Any:
        """``load()``, with every failure raised as a ``ValueError`` sentence naming the file
        (:class:`UnsafeFileError` where the file asks for code or memory)."""
        _reading.__dict__.setdefault("sources", []).append(self.source)
        try:
            return self.load()
        except (UnsafeFileError, FileReadError):
            raise
        except Refusal as refusal:
            raise refusal_error(refusal, self.source) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                LookupError, struct_error, ArithmeticError, MemoryError, RuntimeError) as exc:
            reason = (f"it is damaged or not a pickle of data ({type(exc).__name__}: "
                      f"{str(exc)[:200]})")
            raise FileReadError(f"Could not read {self.source}: {reason}.", reason) from None
        finally:
            _reading.sources.pop()


_reading = threading.local()


def current_source() -> str:
    """The file being unpickled on this thread (for rebuilders that read data nested in it)."""
    sources = getattr(_reading, "sources", None)
    return sources[-1] if sources else "the file"


def refusal_error(refusal: Refusal, source: str) -> ValueError:
    """The user-facing error for a :class:`Refusal` raised while reading ``source``."""
    if refusal.unsafe:
        return UnsafeFileError(f"Refused to load {source}: {refusal.detail}. The file is "
                               "damaged or was made to harm this computer; do not use it.")
    return FileReadError(f"{source} is damaged: {refusal.detail}.",
                         f"it is damaged: {refusal.detail}")


def _remaining(stream: Any) -> int:
    try:
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
        return max(0, end - here)
    except (AttributeError, OSError, ValueError):
        return 0


def load_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Unpickle the file ``path`` with :class:`RestrictedUnpickler` (FLAME files, plain
    pickles). Errors are ``ValueError`` sentences naming the file."""
    data = read_regular_file(path)
    return RestrictedUnpickler(io.BytesIO(data), source=f"'{path}'", budget=len(data),
                               encoding=encoding).load_checked()


def load_pickle_stream(stream: Any, encoding: str = "latin1", source: str = "the file") -> Any:
    """Unpickle the next pickle of an open binary ``stream`` with :class:`RestrictedUnpickler`;
    arrays may be no bigger than what remains of the stream."""
    return RestrictedUnpickler(stream, source=source, encoding=encoding).load_checked()


def load_torch_checkpoint(path: Path) -> Any:
    """Load a ``torch.save`` file (a Lightning ``.ckpt`` included) without running code, with
    its tensors as CPU ``torch.Tensor`` (for the training code; inference reads NumPy arrays
    with :func:`server.tensor_files.read_torch_file`). TorchScript archives are refused."""
    import torch

    from .tensor_files import read_torch_file

    def to_torch(value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype != object:
            return torch.from_numpy(value)
        if isinstance(value, collections.OrderedDict):
            converted = collections.OrderedDict((k, to_torch(v)) for k, v in value.items())
            converted.__dict__.update(value.__dict__)
            return converted
        if isinstance(value, dict):
            return {k: to_torch(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_torch(v) for v in value]
        if isinstance(value, tuple):
            return tuple(to_torch(v) for v in value)
        return value

    return to_torch(read_torch_file(path))


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
