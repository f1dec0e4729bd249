"""Exception types: every error neuronviz raises on bad input is one of these."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "NeuronvizError",
    "NeuronvizTypeError",
    "NeuronvizWarning",
    "LayerNotFoundError",
    "CaptureError",
    "closest_names",
]


class NeuronvizError(ValueError):
    """Base class of the errors raised for bad input or an unusable model.

    ``except nv.NeuronvizError`` catches every refusal of bad input; as a ``ValueError``
    subclass, ``except ValueError`` keeps working too.
    """


class NeuronvizTypeError(NeuronvizError, TypeError):
    """An argument of the wrong type (a function passed as the model, a string as a count...).

    Both ``except nv.NeuronvizError`` and ``except TypeError`` catch it.
    """


class NeuronvizWarning(RuntimeWarning):
    """A run finished but its result may mislead (every correlation NaN, an empty mask...).

    Emitted with :func:`warnings.warn`; ``warnings.catch_warnings(record=True)`` around a call
    collects them (the views show them), ``warnings.simplefilter("error", nv.NeuronvizWarning)``
    turns them into errors.
    """


class LayerNotFoundError(NeuronvizError, KeyError):
    """A layer name does not name a module of the model."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class CaptureError(NeuronvizError):
    """A hooked module produced no usable output (none, not a tensor, or more than once)."""


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names among ``candidates`` that look most like ``name``.

    Parameters
    ----------
    name : str
        The name that was not found.
    candidates : iterable of str
        The valid names.
    n : int
        How many suggestions at most.

    Returns
    -------
    list of str
        Best matches first; may be empty.
    """
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        # "block10" vs "blocks.10": fall back to names sharing the longest prefix or suffix
        found = [c for c in candidates if name and (c.startswith(name) or c.endswith(name))][:n]
    return found
