"""Results on disk without pickle: an npz file holding a JSON header and the tensors as named arrays.

Why npz: it needs nothing beyond numpy, numpy reads it with pickle disabled
(``np.load(path, allow_pickle=False)`` refuses object arrays instead of unpickling them), and an
``.npy`` member keeps a tensor's dtype and shape exactly, so a round trip is bit-identical
(NaN positions and signed zeros included). Any npz reader opens the file; the header is
plain JSON, readable by any language.

Layout of a file (a zip archive, each member an ``.npy`` array)::

    header.npy   uint8: the UTF-8 bytes of a JSON object
    a0.npy ...   the tensors and arrays, named in the header

The header holds ``format`` (:data:`FORMAT`), ``format_version`` (:data:`FORMAT_VERSION`),
``neuronviz`` (the version that wrote it), ``type`` (the registered name of the saved object),
``settings`` (the settings that produced it, when known: perturbation, seed, target, layers...),
``model`` (``{"class": name, "fingerprint": "sha256:..."}`` when known, see
:func:`weights_fingerprint`) and ``value``, the object itself in a tagged JSON form:

* ``None``, ``bool``, ``int``, ``str``, finite ``float`` and lists as themselves; a ``dict`` with
  string keys as a JSON object (key order kept);
* ``{"$float": "nan" | "inf" | "-inf"}``, ``{"$tuple": [...]}``, ``{"$items": [[key, value], ...]}``
  (dicts with other keys), ``{"$odict": [...]}``, ``{"$set": [...]}``, ``{"$frozenset": [...]}``,
  ``{"$complex": [re, im]}``, ``{"$bytes": array}``, ``{"$dtype": "float32"}``,
  ``{"$device": "cpu"}``, ``{"$size": [...]}`` (``torch.Size``);
* ``{"$tensor": {"array": "a0", "dtype": "float32"}}`` (a ``torch.Tensor``; bfloat16 and the
  float8 types are stored as their bits, ``"bits": "uint16"``), ``{"$ndarray": "a1"}`` and
  ``{"$npscalar": "a2"}`` (numpy arrays and scalars, dtype kept, bool included);
* ``{"$obj": {"type": "NeuronScores", "fields": {...}}}``: an object of a class registered by
  name with :func:`archived` (dataclasses, NamedTuples, plain classes by their ``__dict__``).

Guarantees: loading never executes code from the file. Types are found by name in the
allow-list registry (:func:`archived`), never by importing a class the file names; arrays are
read with ``allow_pickle=False``. A file from a newer format version, a damaged or truncated
file, a missing array, an unknown type or a pickle payload raises :class:`NeuronvizError` saying
so. Tensors come back detached, on the CPU (a GPU tensor is saved from the CPU copy), as plain
``torch.Tensor`` (a ``Parameter`` is saved as its data); one tensor object referenced twice is
stored once and comes back as one object.

What is not data is refused, not guessed at: a function, a model, a data loader or any object of
an unregistered class raises :class:`NeuronvizError` naming the field. A registered class may
name fields to drop (``archived(name, drop=(...))``, e.g. a receptive field's handle on the model
it measures): those are not stored and come back as the field's default (None when it has none).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import nn

from . import perturb
from .errors import NeuronvizError, NeuronvizTypeError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Archived", "archived", "save", "load", "read", "read_header", "registered",
    "weights_fingerprint", "model_info",
]

#: The ``format`` field of every header.
FORMAT = "neuronviz-archive"
#: The format version this neuronviz writes, and the newest it reads.
FORMAT_VERSION = 1

T = TypeVar("T")

#: Registered name -> class, and class -> (name, dropped fields).
_BY_NAME: dict[str, type] = {}
_BY_CLASS: dict[type, tuple[str, tuple[str, ...]]] = {}

#: Fields of a saved object copied into the header's ``settings`` (what produced the result).
SETTING_FIELDS = (
    "perturbation", "seed", "target", "layers", "layer", "n_samples", "output", "per_unit", "dead_threshold",
    "bootstrap_seed", "k", "by", "quantile", "n_components", "variant", "mask_layer", "feature_layer",
    "background", "loss", "delta", "recipe", "how", "on", "mode", "unit", "min_mean", "source", "n_sets",
)

_MAGIC_ZIP = b"PK\x03\x04"
_HEADER = "header"

# torch dtypes numpy holds as they are, and those stored as their bits
_NUMPY_DTYPES = {
    torch.bool: np.bool_, torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16,
    torch.int32: np.int32, torch.int64: np.int64, torch.float16: np.float16, torch.float32: np.float32,
    torch.float64: np.float64, torch.complex64: np.complex64, torch.complex128: np.complex128,
}
for _name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, _name):
        _NUMPY_DTYPES[getattr(torch, _name)] = getattr(np, _name)
_BITS_DTYPES: dict[torch.dtype, tuple[torch.dtype, type]] = {torch.bfloat16: (torch.int16, np.uint16)}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        _BITS_DTYPES[getattr(torch, _name)] = (torch.uint8, np.uint8)
_TORCH_BY_NAME = {str(d).removeprefix("torch."): d for d in (*_NUMPY_DTYPES, *_BITS_DTYPES)}
# numpy array kinds a file may hold: booleans, integers, floats, complex numbers
_KINDS = "biufc"


# ---------------------------------------------------------------------------------------------
# the registry


def archived(name: str, *, drop: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Register a class under ``name`` so that its objects can be saved and loaded.

    Loading finds a class only through this registry, so a file can name only classes that
    registered themselves; nothing named in a file is imported.

    Parameters
    ----------
    name : str
        The name written in files; unique, and kept across versions.
    drop : tuple of str
        Fields that hold no data (a handle on a model, a cache, what other fields give) and are
        not saved; they come back as the field's default, or None. A dataclass that defines
        ``_after_load(self)`` has it called once its fields are set, to derive them again.

    Returns
    -------
    callable
        The class decorator (returns the class unchanged).

    Raises
    ------
    ValueError
        ``name`` is taken by another class.
    """

    def register(cls: type[T]) -> type[T]:
        known = _BY_NAME.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"archive name {name!r} is taken by {known.__qualname__}")
        _BY_NAME[name] = cls
        _BY_CLASS[cls] = (name, tuple(drop))
        return cls

    return register


def registered() -> dict[str, type]:
    """The registered names and their classes (what a file may hold)."""
    return dict(_BY_NAME)


class Archived:
    """Mixin giving a registered result class :meth:`save` (and :meth:`load`)."""

    def save(self, path: str | Path, *, model: nn.Module | None = None,
             settings: dict[str, Any] | None = None) -> Path:
        """Save this result to ``path`` (npz with a JSON header; see :mod:`neuronviz.core.archive`).

        Parameters
        ----------
        path : str or pathlib.Path
            The file; written as given (no suffix added), replaced atomically.
        model : torch.nn.Module, optional
            The model that produced it: its class name and weights fingerprint go in the header.
        settings : dict, optional
            More settings to record (beside those the result holds itself).

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            A field holds something that is not data (a function, a model, an unregistered object).
        """
        return save(path, self, model=model, settings=settings)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Load a result saved with :meth:`save`; refuses a file that holds another type.

        Raises
        ------
        NeuronvizError
            As :func:`load`, or the file holds another type.
        """
        obj = load(path)
        if not isinstance(obj, cls):
            raise NeuronvizError(f"{Path(path).name} holds a {type(obj).__name__}, not a {cls.__name__}; "
                                 "nv.load(path) reads any saved result")
        return obj


# ---------------------------------------------------------------------------------------------
# the model's fingerprint


def weights_fingerprint(model: nn.Module) -> str:
    """A SHA-256 over the model's parameters and buffers: names, dtypes, shapes and bytes.

    Two models with the same weights (and buffers such as BatchNorm statistics) under the same
    names give the same fingerprint, whatever their device. The model is only read (neuronviz
    never changes weights, so no lock is needed against its own runs).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    str
        ``"sha256:"`` and 64 hex digits.

    Raises
    ------
    NeuronvizTypeError
        ``model`` is not a ``torch.nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise NeuronvizTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            t = t.detach()
            h.update(f"{kind} {name} {str(t.dtype).removeprefix('torch.')} {list(t.shape)}\n".encode())
            if t.device.type == "meta":
                continue  # no data to hash
            flat = t.cpu().contiguous().reshape(-1)
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return "sha256:" + h.hexdigest()


def model_info(model: nn.Module) -> dict[str, str]:
    """``{"class": the model's class name, "fingerprint": weights_fingerprint(model)}``."""
    return {"class": type(model).__name__, "fingerprint": weights_fingerprint(model)}


# ---------------------------------------------------------------------------------------------
# writing


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("neuronviz")
    except Exception:  # noqa: BLE001 - not installed (a source tree on the path)
        return "unknown"


class _Writer:
    """Turns a value into the tagged JSON form, collecting its arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._seen: dict[int, tuple[Any, dict]] = {}  # id -> (the object, kept alive; its tag)
        self._active: set[int] = set()

    def _array(self, a: np.ndarray) -> str:
        name = f"a{len(self.arrays)}"
        self.arrays[name] = a
        return name

    def encode(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if type(v) is int:
            return v
        if type(v) is float:
            if math.isfinite(v):
                return v
            return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(v, torch.Tensor):
            return self._tensor(v, where)
        if isinstance(v, np.generic):
            self._check_kind(v.dtype, where)
            return {"$npscalar": self._array(np.asarray(v))}
        if type(v) is np.ndarray:
            seen = self._seen.get(id(v))
            if seen is not None:
                return seen[1]
            self._check_kind(v.dtype, where)
            tag = {"$ndarray": self._array(v)}
            self._seen[id(v)] = (v, tag)
            return tag
        if type(v) is complex:
            return {"$complex": [self.encode(v.real, where), self.encode(v.imag, where)]}
        if type(v) is bytes:
            return {"$bytes": self._array(np.frombuffer(v, dtype=np.uint8).copy())}
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"$device": str(v)}
        if isinstance(v, torch.Size):
            return {"$size": list(v)}
        key = id(v)
        if key in self._active:
            raise NeuronvizError(f"cannot save {where}: it contains itself")
        self._active.add(key)
        try:
            return self._container(v, where)
        finally:
            self._active.discard(key)

    def _container(self, v: Any, where: str) -> Any:
        if type(v) is list:
            return [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if type(v) is tuple:
            return {"$tuple": [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if type(v) in (set, frozenset):
            tag = "$set" if type(v) is set else "$frozenset"
            return {tag: [self.encode(x, f"{where}{{…}}") for x in v]}
        if type(v) is dict or type(v) is OrderedDict:
            plain = type(v) is dict and all(isinstance(k, str) and not k.startswith("$") for k in v)
            if plain:
                return {k: self.encode(x, f"{where}[{k!r}]") for k, x in v.items()}
            items = [[self.encode(k, f"{where} key"), self.encode(x, f"{where}[{k!r}]")] for k, x in v.items()]
            return {"$odict" if type(v) is OrderedDict else "$items": items}
        entry = _BY_CLASS.get(type(v))
        if entry is not None:
            return self._object(v, entry, where)
        raise NeuronvizError(_not_data(v, where))

    def _object(self, v: Any, entry: tuple[str, tuple[str, ...]], where: str) -> dict:
        name, drop = entry
        if dataclasses.is_dataclass(v):
            names = [f.name for f in dataclasses.fields(v)]
        elif isinstance(v, tuple) and hasattr(type(v), "_fields"):
            names = list(type(v)._fields)  # type: ignore[attr-defined]
        else:
            names = list(vars(v))
        fields = {n: self.encode(getattr(v, n), f"{where}.{n}") for n in names if n not in drop}
        return {"$obj": {"type": name, "fields": fields}}

    def _tensor(self, t: torch.Tensor, where: str) -> dict:
        seen = self._seen.get(id(t))
        if seen is not None:
            return seen[1]
        if t.layout != torch.strided:
            raise NeuronvizError(f"cannot save {where}: a {t.layout} tensor; save its .to_dense()")
        if t.is_quantized:
            raise NeuronvizError(f"cannot save {where}: a quantized tensor; save its .dequantize()")
        data = t.detach()
        if data.device.type == "meta":
            raise NeuronvizError(f"cannot save {where}: a tensor on the meta device holds no data")
        data = data.cpu().contiguous()
        dtype = str(data.dtype).removeprefix("torch.")
        if data.dtype in _NUMPY_DTYPES:
            if data.is_conj():
                data = data.resolve_conj()
            if data.is_neg():
                data = data.resolve_neg()
            tag = {"$tensor": {"array": self._array(data.numpy().copy()), "dtype": dtype}}
        elif data.dtype in _BITS_DTYPES:
            as_int, np_type = _BITS_DTYPES[data.dtype]
            bits: np.ndarray = data.view(as_int).numpy().view(np_type).copy()
            tag = {"$tensor": {"array": self._array(bits), "dtype": dtype, "bits": np.dtype(np_type).name}}
        else:
            raise NeuronvizError(f"cannot save {where}: tensors of dtype {data.dtype} are not supported")
        self._seen[id(t)] = (t, tag)
        return tag

    @staticmethod
    def _check_kind(dtype: np.dtype, where: str) -> None:
        if dtype.kind not in _KINDS:
            raise NeuronvizError(f"cannot save {where}: a numpy array of dtype {dtype} (only booleans and numbers "
                                 "are saved; an object array would need pickle)")


def _not_data(v: Any, where: str) -> str:
    kind = type(v)
    if isinstance(v, nn.Module):
        what = f"a model ({kind.__name__})"
    elif callable(v) and not isinstance(v, type):
        what = f"a function or callable ({kind.__name__})"
    elif isinstance(v, torch.utils.data.DataLoader):
        what = "a data loader"
    elif isinstance(v, torch.utils.data.Dataset):
        what = "a data set"
    else:
        what = f"an object of the unregistered class {kind.__module__}.{kind.__qualname__}"
    hint = ""
    if dataclasses.is_dataclass(v) or isinstance(v, perturb.Perturbation):
        hint = (f"; register the class with @neuronviz.core.archive.archived({kind.__name__!r}) to save it")
    return (f"cannot save {where}: it holds {what}, which is not data; only numbers, strings, tensors, arrays, "
            f"lists, dicts and registered result classes are saved{hint}")


def _settings_of(obj: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return {}
    names = {f.name for f in dataclasses.fields(obj)}
    return {n: getattr(obj, n) for n in SETTING_FIELDS if n in names}


def save(path: str | Path, obj: Any, *, model: nn.Module | None = None, settings: dict[str, Any] | None = None,
         model_record: dict[str, str | None] | None = None) -> Path:
    """Write ``obj`` to ``path`` as npz with a JSON header (see the module's description).

    Parameters
    ----------
    path : str or pathlib.Path
        The file; written as given (no suffix added), replaced atomically.
    obj : object
        A registered result (or plain data: dicts, lists, tensors, arrays, numbers, strings).
    model : torch.nn.Module, optional
        The model that produced it: its class name and weights fingerprint go in the header.
    settings : dict, optional
        Settings to record beside the fields named in :data:`SETTING_FIELDS` that ``obj`` has.
    model_record : dict, optional
        ``{"class": ..., "fingerprint": ...}`` to record when ``model`` is not given (a result
        loaded from a file and saved again).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    NeuronvizError
        Something in ``obj`` is not data (a function, a model, a loader, an unregistered
        object), or the file cannot be written.
    """
    path = Path(path)
    writer = _Writer()
    entry = _BY_CLASS.get(type(obj))
    kind = entry[0] if entry is not None else type(obj).__name__
    value = writer.encode(obj, kind)
    recorded = {**_settings_of(obj), **(settings or {})}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "neuronviz": _version(),
        "type": kind,
        "settings": writer.encode(recorded, "settings"),
        "model": model_info(model) if model is not None else model_record,
        "value": value,
    }
    text = json.dumps(header, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    arrays = {_HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **writer.arrays}
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise NeuronvizError(f"cannot write {path}: {err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# reading


class _Reader:
    """Turns the tagged JSON form back into the value, reading arrays from the npz on demand."""

    def __init__(self, npz: Any, name: str) -> None:
        self.npz = npz
        self.name = name
        self.files = set(npz.files)
        self._cache: dict[tuple[str, Any], Any] = {}

    def _damaged(self, why: str) -> NeuronvizError:
        return NeuronvizError(f"{self.name} is damaged: {why}")

    def array(self, name: Any) -> np.ndarray:
        if not isinstance(name, str):
            raise self._damaged(f"an array reference {name!r} is not a name")
        if name not in self.files or name == _HEADER:
            raise self._damaged(f"the array {name!r} the header names is missing (an incomplete or edited file)")
        a = _read_member(self.npz, name, self.name)
        if a.dtype.kind not in _KINDS:
            raise self._damaged(f"the array {name!r} has dtype {a.dtype}; a neuronviz archive holds only numbers")
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        return a

    def decode(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.decode(x, where) for x in v]
        if not isinstance(v, dict):
            raise self._damaged(f"unexpected JSON value at {where}")
        tags = [k for k in v if k.startswith("$")]
        if not tags:
            return {k: self.decode(x, f"{where}[{k!r}]") for k, x in v.items()}
        if len(v) != 1:
            raise self._damaged(f"a tagged value at {where} has other keys: {sorted(v)}")
        tag, body = next(iter(v.items()))
        try:
            return self._tagged(tag, body, where)
        except NeuronvizError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as err:
            raise self._damaged(f"the value at {where} ({tag}) cannot be read: {err}") from None

    def _tagged(self, tag: str, body: Any, where: str) -> Any:
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise self._damaged(f"$float {body!r} at {where}")
            return float(body)
        if tag == "$tuple":
            return tuple(self.decode(_list(body), where))
        if tag in ("$set", "$frozenset"):
            items = self.decode(_list(body), where)
            return set(items) if tag == "$set" else frozenset(items)
        if tag in ("$items", "$odict"):
            pairs = [self.decode(_list(p), where) for p in _list(body)]
            if any(len(p) != 2 for p in pairs):
                raise self._damaged(f"a dict item at {where} is not a [key, value] pair")
            return OrderedDict(pairs) if tag == "$odict" else dict(pairs)
        if tag == "$complex":
            re, im = (self.decode(x, where) for x in _list(body))
            return complex(re, im)
        if tag == "$bytes":
            return self.array(body).astype(np.uint8, copy=False).tobytes()
        if tag == "$dtype":
            if body not in _TORCH_BY_NAME:
                raise self._damaged(f"unknown torch dtype {body!r} at {where}")
            return _TORCH_BY_NAME[body]
        if tag == "$device":
            return torch.device(str(body))
        if tag == "$size":
            return torch.Size([int(x) for x in _list(body)])
        if tag == "$tensor":
            return self._tensor(body, where)
        if tag in ("$ndarray", "$npscalar"):
            key = (tag, body)
            if key not in self._cache:
                a = self.array(body)
                self._cache[key] = a[()] if tag == "$npscalar" else a
            return self._cache[key]
        if tag == "$obj":
            return self._object(body, where)
        raise self._damaged(f"unknown tag {tag!r} at {where} (written by a newer neuronviz?)")

    def _tensor(self, body: Any, where: str) -> torch.Tensor:
        if not isinstance(body, dict) or not isinstance(body.get("dtype"), str):
            raise self._damaged(f"a tensor at {where} lacks its array or dtype")
        key = ("$tensor", body.get("array"))
        if key in self._cache:
            return self._cache[key]
        dtype = _TORCH_BY_NAME.get(body["dtype"])
        if dtype is None:
            raise self._damaged(f"the tensor at {where} has an unknown dtype {body['dtype']!r}")
        a = self.array(body.get("array"))
        if dtype in _BITS_DTYPES:
            as_int, np_type = _BITS_DTYPES[dtype]
            if a.dtype != np.dtype(np_type):
                raise self._damaged(f"the bits of the {body['dtype']} tensor at {where} are {a.dtype}, not "
                                    f"{np.dtype(np_type).name}")
            t = torch.from_numpy(_contiguous(a).view(np.dtype(str(as_int).removeprefix("torch."))))
            t = t.view(dtype)
        else:
            if a.dtype != np.dtype(_NUMPY_DTYPES[dtype]):
                raise self._damaged(f"the array of the {body['dtype']} tensor at {where} is {a.dtype}")
            t = torch.from_numpy(_contiguous(a))
        self._cache[key] = t
        return t

    def _object(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not isinstance(
                body.get("fields"), dict):
            raise self._damaged(f"an object at {where} lacks its type or fields")
        name = body["type"]
        cls = _BY_NAME.get(name)
        if cls is None:
            raise NeuronvizError(
                f"{self.name} holds an object of the unknown type {name!r} at {where}: this neuronviz reads "
                f"{sorted(_BY_NAME)} (import neuronviz first; a newer version may know it)")
        drop = _BY_CLASS[cls][1]
        raw = body["fields"]
        values = {k: self.decode(x, f"{where}.{k}") for k, x in raw.items()}
        if dataclasses.is_dataclass(cls):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            unknown = sorted(set(values) - set(fields))
            if unknown:
                raise NeuronvizError(f"{self.name}: {name} at {where} has fields this neuronviz does not know: "
                                     f"{unknown} (written by a newer version?)")
            obj = object.__new__(cls)  # no __init__ / __post_init__: the saved fields are set as they were
            for n, f in fields.items():
                if n in values:
                    value = values[n]
                elif f.default is not dataclasses.MISSING:
                    value = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    value = f.default_factory()
                elif n in drop:
                    value = None
                else:
                    raise self._damaged(f"{name} at {where} lacks its field {n!r}")
                object.__setattr__(obj, n, value)
            after = getattr(cls, "_after_load", None)
            if after is not None:
                after(obj)
            return obj
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):
            if set(values) != set(cls._fields):  # type: ignore[attr-defined]
                raise self._damaged(f"{name} at {where} has fields {sorted(values)}, not {list(cls._fields)}")  # type: ignore[attr-defined]
            return cls(**values)
        obj = object.__new__(cls)
        for n, value in values.items():
            if not n.isidentifier() or n.startswith("__"):
                raise self._damaged(f"{name} at {where} has an attribute {n!r}")
            obj.__dict__[n] = value
        for n in drop:
            obj.__dict__.setdefault(n, None)
        return obj


def _contiguous(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
    return a if a.flags.c_contiguous else a.copy(order="C")


def _list(v: Any) -> list:
    if not isinstance(v, list):
        raise TypeError(f"expected a list, got {type(v).__name__}")
    return v


_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, struct.error, OSError, KeyError,
                IndexError, UnicodeDecodeError)


def _read_member(npz: Any, member: str, name: str) -> np.ndarray:
    try:
        return npz[member]
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise NeuronvizError(
                f"{name} holds pickled Python objects in the array {member!r}; refused: loading never unpickles "
                "(a neuronviz archive holds only numbers, and this file did not come from neuronviz)") from None
        raise NeuronvizError(f"{name} is damaged: the array {member!r} cannot be read ({err})") from None
    except _READ_ERRORS as err:
        raise NeuronvizError(f"{name} is damaged or truncated: the array {member!r} cannot be read "
                             f"({type(err).__name__}: {err})") from None


def _open(path: Path) -> Any:
    name = path.name
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise NeuronvizError(f"no such file: {path}") from None
    except OSError as err:
        raise NeuronvizError(f"cannot read {path}: {err}") from None
    if magic != _MAGIC_ZIP:
        if magic[:1] == b"\x80" or magic[:1] in (b"(", b"c", b"]", b"}"):
            what = "looks like a Python pickle: refused, loading never unpickles"
        elif magic.startswith(b"\x93NUM"):
            what = "is a single .npy array, not a neuronviz archive"
        elif not magic:
            what = "is empty"
        else:
            what = "is not a neuronviz archive (an npz file)"
        raise NeuronvizError(f"{name} {what}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise NeuronvizError(f"{name} holds pickled data: refused, loading never unpickles") from None
        raise NeuronvizError(f"{name} is damaged or truncated: {err}") from None
    except _READ_ERRORS as err:
        raise NeuronvizError(f"{name} is damaged or truncated ({type(err).__name__}: {err})") from None


def _header(npz: Any, name: str) -> dict:
    if _HEADER not in npz.files:
        raise NeuronvizError(f"{name} is not a neuronviz archive: it has no header array")
    raw = _read_member(npz, _HEADER, name)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise NeuronvizError(f"{name} is damaged: its header is {raw.dtype} {raw.shape}, not UTF-8 bytes")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NeuronvizError(f"{name} is damaged: its header is not JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NeuronvizError(f"{name} is not a neuronviz archive: its header's format is "
                             f"{header.get('format') if isinstance(header, dict) else None!r}, not {FORMAT!r}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NeuronvizError(f"{name} is damaged: its format version is {version!r}")
    if version > FORMAT_VERSION:
        raise NeuronvizError(
            f"{name} was written in format version {version} (by neuronviz {header.get('neuronviz', '?')}); this "
            f"neuronviz ({_version()}) reads format versions up to {FORMAT_VERSION}: upgrade neuronviz to load it")
    if "value" not in header:
        raise NeuronvizError(f"{name} is damaged: its header holds no value")
    return header


def read_header(path: str | Path) -> dict:
    """The header of a saved file, without its arrays (``type``, ``settings``, ``model``, versions).

    Raises
    ------
    NeuronvizError
        Not a neuronviz archive, damaged, or from a newer format version.
    """
    path = Path(path)
    npz = _open(path)
    with npz:
        header = _header(npz, path.name)
    return {k: v for k, v in header.items() if k != "value"}


def read(path: str | Path) -> tuple[Any, dict]:
    """The saved object and its header (the header's ``settings`` decoded, ``value`` left out).

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    (object, dict)

    Raises
    ------
    NeuronvizError
        As :func:`load`.
    """
    path = Path(path)
    npz = _open(path)
    with npz:
        header = _header(npz, path.name)
        reader = _Reader(npz, path.name)
        obj = reader.decode(header["value"], str(header.get("type", "value")))
        settings = reader.decode(header.get("settings", {}), "settings")
    info = {k: v for k, v in header.items() if k != "value"}
    info["settings"] = settings
    return obj, info


def load(path: str | Path) -> Any:
    """Load a result saved with ``.save(path)`` (npz with a JSON header); never executes code from the file.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    object
        The saved result (``NeuronScores``, ``PCACEScores``, ``InversionResult`` ...), its tensors
        on the CPU; a saved view gives its record (load the view itself with
        ``nv.NeuronExplorer.load(path)``).

    Raises
    ------
    NeuronvizError
        No such file; not a neuronviz archive; a pickle payload; a damaged or truncated file or a
        missing array; a file from a newer format version; an object of a type this neuronviz
        does not know.
    """
    return read(path)[0]


# core types results hold: the perturbations, and the layer table of a view
for _cls in perturb.KINDS.values():
    archived(f"perturb.{_cls.__name__}")(_cls)


def _register_core() -> None:
    from .capture import LayerInfo

    archived("LayerInfo")(LayerInfo)


_register_core()
