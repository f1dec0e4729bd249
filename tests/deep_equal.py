"""Deep equality of results for round-trip tests: tensors and arrays bit for bit."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch


def same(a: Any, b: Any, where: str = "value") -> None:
    """Deep equality: tensors bit-identical (dtype, shape, NaN positions), types and dict order kept."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype} {a.shape} != {b.dtype} {b.shape}"
        bits = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]  # NaNs and -0.0 too
        assert torch.equal(*bits), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif hasattr(a, "__dict__") and type(a).__module__.startswith("neuronviz"):
        same(vars(a), vars(b), where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
