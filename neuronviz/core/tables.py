"""Result objects as tables: rows of plain values (``as_rows()``) and pandas DataFrames (``to_frame()``).

Every result names its columns the same way: ``layer`` and ``channel`` for a channel of a
layer (``position`` too for a per-unit score), ``image`` for an image of a batch, then one
column per quantity, named as the result's attribute.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

from .errors import NeuronvizError

__all__ = ["Row", "rows_to_frame"]


class Row(dict):
    """One row of a result table: a plain dict, where the old column ``neuron`` still reads.

    ``NeuronScores.as_rows()`` named the channel column ``neuron`` before every result used
    ``channel``; ``row["neuron"]`` still gives that value (the flat unit index for per-unit
    scores, as it was), with a :class:`DeprecationWarning`. The column is not stored, so CSV
    files and DataFrames made from the rows have the new columns only.
    """

    __slots__ = ("_neuron",)

    def __init__(self, *args: Any, neuron: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._neuron = neuron

    def __missing__(self, key: Any) -> Any:
        if key == "neuron" and self._neuron is not None:
            warnings.warn("the row's 'neuron' column is now 'channel' (and 'position' for per-unit scores)",
                          DeprecationWarning, stacklevel=2)
            return self._neuron
        raise KeyError(key)


def rows_to_frame(rows: Iterable[dict], columns: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame of ``rows``, with ``columns`` in this order (also when there are no rows).

    Parameters
    ----------
    rows : iterable of dict
        What a result's ``as_rows()`` gives.
    columns : sequence of str, optional
        The column order; columns of the rows not named here follow, in their order.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    NeuronvizError
        pandas is not installed.
    """
    try:
        import pandas as pd
    except ImportError:
        raise NeuronvizError(
            "to_frame() needs pandas, which is not installed: pip install pandas "
            "(as_rows() gives the same table as a list of dicts without it)"
        ) from None
    rows = [dict(r) for r in rows]
    order = list(columns or [])
    for r in rows:
        order += [k for k in r if k not in order]
    return pd.DataFrame(rows, columns=order)
