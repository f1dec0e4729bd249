"""The input-resampling paper's baseline metrics: per-channel kernel-weight and activation statistics.

The authors' code (Lengerich et al., 2017, arXiv:1707.09641) compares correlation and
precision with four simpler ways of ranking the channels of a layer: the sum and the
variance of each channel's kernel weights, and the sum and the variance of each channel's
activation map on the unperturbed image. They need no perturbed copies: one forward pass at
most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.capture import ActivationCapture, hooks, resolve_layers
from ..core.errors import NeuronvizError
from ..core.locks import runs_model
from ..core.model_state import model_device, preserved_state
from ..core.validation import check_image, forward_checked

if TYPE_CHECKING:
    import pandas

__all__ = [
    "BASELINES",
    "BaselineScores",
    "activation_scores",
    "baseline_scores",
    "kernel_weight_scores",
    "weight_layer",
]

#: The baseline metrics, in the order of the authors' code.
BASELINES = ("weight_sum", "weight_variance", "activation_sum", "activation_variance")


def _kernel(model: nn.Module, name: str, module: nn.Module) -> torch.Tensor:
    """The module's weight as (out_channels, ...); refuse what has no per-channel kernel."""
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        raise NeuronvizError(
            f"layer {name!r} is a transposed convolution ({type(module).__name__}), whose kernels are not "
            "stored one per output channel; name an ordinary convolution or linear layer"
        )
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        kind = type(module).__name__
        what = "no weight" if not isinstance(weight, torch.Tensor) else f"a {weight.dim()}-D weight"
        raise NeuronvizError(
            f"layer {name!r} ({kind}) has {what}, so it has no kernel per channel; name the convolution or "
            "linear layer that makes the channels (e.g. 'conv1' for the ReLU after it), or use weight_layer() "
            "to find it"
        )
    return weight


def kernel_weight_scores(model: nn.Module, layer: str) -> dict[str, torch.Tensor]:
    """Sum and variance of each output channel's kernel weights (the paper's weight baselines).

    Channel ``c`` of a convolution (or output ``c`` of a linear layer) has the kernel
    ``weight[c]``, of shape (in_channels / groups, kh, kw) or (in_features,); its score is
    the sum of those numbers and their population variance (ddof 0). The bias is left out,
    as in the authors' code.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str
        A module with a weight of at least 2 dimensions, output channels first:
        ``nn.Conv1d/2d/3d``, ``nn.Linear`` or alike (see :func:`weight_layer` to find the
        one behind a ReLU or a block).

    Returns
    -------
    dict of str to torch.Tensor
        ``{"sum": (C,), "variance": (C,)}``, float64 on the CPU.

    Raises
    ------
    LayerNotFoundError
        ``layer`` is not a module of ``model`` (closest names suggested).
    NeuronvizError
        The module has no such weight (a ReLU, a batch norm, a block), or is a transposed
        convolution.
    """
    if not isinstance(layer, str):
        raise NeuronvizError(f"layer must be one layer name (a string), got {layer!r}")
    module = resolve_layers(model, layer)[layer]
    with torch.no_grad():
        w = _kernel(model, layer, module).detach().to("cpu", torch.float64)
        flat = w.reshape(w.shape[0], -1)
        return {"sum": flat.sum(1), "variance": flat.var(1, unbiased=False)}


def _channel_stats(a: torch.Tensor, min_mean: float | None) -> dict[str, torch.Tensor]:
    """(C, ...) activation of one image -> per-channel sum and variance over positions."""
    flat = a.detach().to("cpu", torch.float64).reshape(a.shape[0], -1)
    total, var = flat.sum(1), flat.var(1, unbiased=False)
    if min_mean is not None:
        # the authors' code skips channels whose mean activation is below the threshold
        silent = flat.mean(1) < min_mean
        total = torch.where(silent, torch.full_like(total, math.nan), total)
        var = torch.where(silent, torch.full_like(var, math.nan), var)
    return {"sum": total, "variance": var}


def _record(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, order: bool = False
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One clean forward pass: the layers' activations on ``x``, and (``order=True``) the names of
    the modules in the order they finished.
    """
    finished: list[str] = []
    note = {name: (lambda m, a, o, name=name: finished.append(name)) for name, _ in model.named_modules() if name}
    with preserved_state(model), torch.no_grad():
        model.eval()
        with hooks(model, note if order else {}), ActivationCapture(model, layers, layout="auto") as rec:
            forward_checked(model, x.to(model_device(model)))
            acts = rec.outputs()
    return {name: acts[name][0] for name in layers}, finished


def activation_scores(
    model: nn.Module, x: torch.Tensor, layer: str, *, min_mean: float | None = 0.0
) -> dict[str, torch.Tensor]:
    """Sum and variance of each channel's activation map on one image (the paper's activation baselines).

    One forward pass of the unperturbed image in eval mode without gradients; the model's
    modes and flags are restored and every hook removed afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    layer : str
        Layer name (see :func:`neuronviz.layer_summary`); a (N, F) layer has F channels of
        one position each (variance 0).
    min_mean : float or None
        Channels whose mean activation is below this get NaN (never selected), as in the
        authors' code (threshold 0: on a post-ReLU layer no channel is left out). None keeps
        every channel.

    Returns
    -------
    dict of str to torch.Tensor
        ``{"sum": (C,), "variance": (C,)}``: the sum over positions and the population
        variance over positions (ddof 0), float64 on the CPU.

    Raises
    ------
    NeuronvizError
        Bad image, unknown layer (closest names suggested), a layer that did not run or
        whose output is not (1, C, ...).
    """
    if not isinstance(layer, str):
        raise NeuronvizError(f"layer must be one layer name (a string), got {layer!r}")
    return baseline_scores(model, x, [layer], min_mean=min_mean, weights=False)._activation(layer)


def weight_layer(model: nn.Module, x: torch.Tensor, layer: str) -> str:
    """The module whose kernels make the channels of ``layer``.

    Found by one forward pass: the last module with a weight of at least 2 dimensions
    (a convolution or linear layer) that finished before ``layer`` did; ``layer`` itself when
    it is one. ``relu1`` after ``conv1`` gives ``conv1``; a ReLU after a batch norm gives the
    convolution before the batch norm; a residual block gives its last convolution.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        An image the model takes, (1, C, H, W) or (C, H, W).
    layer : str
        Layer name.

    Returns
    -------
    str
        The module's name.

    Raises
    ------
    NeuronvizError
        No such module ran before ``layer``, or its output channels do not match the
        layer's channels (e.g. a flatten or pooling layer that changes the channel count);
        name the module yourself then.
    """
    return baseline_scores(model, x, [layer], activations=False).weight_layers[layer]


def _find_weight_layer(model: nn.Module, layer: str, channels: int, finished: list[str]) -> str:
    modules = dict(model.named_modules())
    end = finished.index(layer)
    for name in reversed(finished[: end + 1]):
        m = modules[name]
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2 and not isinstance(m, nn.modules.conv._ConvTransposeNd):
            if w.shape[0] != channels:
                raise NeuronvizError(
                    f"layer {layer!r} has {channels} channels, but the last convolution or linear layer before it, "
                    f"{name!r}, has {w.shape[0]} output channels, so the kernels behind {layer!r} are unclear; "
                    f"pass weight_layers={{{layer!r}: 'name of the module'}}"
                )
            return name
    raise NeuronvizError(
        f"no convolution or linear layer runs before {layer!r}, so it has no kernels to score; "
        f"pass weight_layers={{{layer!r}: 'name of the module'}} or score another layer"
    )


def _top(values: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest values, best first; NaN never, ties by lower index."""
    flat = values.reshape(-1)
    valid = torch.nonzero(~torch.isnan(flat)).flatten()
    return valid[torch.sort(-flat[valid], stable=True).indices][:k].tolist()


@archived('BaselineScores')
@dataclass
class BaselineScores(Archived):
    """The four baseline metrics of every channel of the scored layers.

    Attributes
    ----------
    weight_sum, weight_variance : dict of str to torch.Tensor
        Per scored layer, (C,) sum and population variance of each channel's kernel
        weights, taken from the module in :attr:`weight_layers`.
    activation_sum, activation_variance : dict of str to torch.Tensor
        Per scored layer, (C,) sum and population variance over positions of each channel's
        activation on the unperturbed image; NaN for a channel whose mean is below
        :attr:`min_mean`.
    weight_layers : dict of str to str
        Per scored layer, the module whose kernels were used.
    layers : list of str
        The scored layers, in the order given.
    min_mean : float or None
        The threshold of the activation metrics.
    """

    weight_sum: dict[str, torch.Tensor]
    weight_variance: dict[str, torch.Tensor]
    activation_sum: dict[str, torch.Tensor]
    activation_variance: dict[str, torch.Tensor]
    weight_layers: dict[str, str]
    layers: list[str] = field(default_factory=list)
    min_mean: float | None = 0.0

    def metric(self, name: str) -> dict[str, torch.Tensor]:
        """The scores of one metric (one of :data:`BASELINES`), per layer.

        Raises
        ------
        ValueError
            Unknown metric name, or a metric that was not computed.
        """
        if name not in BASELINES:
            raise NeuronvizError(f"metric must be one of {BASELINES}, got {name!r}")
        values = getattr(self, name)
        if not values and self.layers:
            raise NeuronvizError(f"{name!r} was not computed for these scores")
        return values

    def top(self, metric: str, k: int = 5) -> dict[str, list[int]]:
        """The ``k`` channels of each layer with the largest ``metric``, best first.

        NaN scores are never selected; ties keep the lower index first (as
        :meth:`neuronviz.NeuronScores.top`, so :func:`neuronviz.overlap` compares the two).

        Parameters
        ----------
        metric : str
            One of :data:`BASELINES`.
        k : int
            How many per layer.

        Returns
        -------
        dict of str to list of int

        Raises
        ------
        ValueError
            Unknown metric or ``k < 0``.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise NeuronvizError(f"k must be an integer >= 0, got {k!r}")
        return {layer: _top(v, k) for layer, v in self.metric(metric).items()}

    def _activation(self, layer: str) -> dict[str, torch.Tensor]:
        return {"sum": self.activation_sum[layer], "variance": self.activation_variance[layer]}

    def as_rows(self) -> list[dict]:
        """One dict per channel: ``layer``, ``channel``, then the metrics that were computed
        (``weight_layer``, ``weight_sum``, ``weight_variance``, ``activation_sum``,
        ``activation_variance``).

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        rows: list[dict] = []
        for layer in self.layers:
            metrics = {name: getattr(self, name)[layer].reshape(-1).tolist() for name in BASELINES
                       if layer in getattr(self, name)}
            channels = len(next(iter(metrics.values()), []))
            for c in range(channels):
                row: dict = {"layer": layer, "channel": c}
                if layer in self.weight_layers:
                    row["weight_layer"] = self.weight_layers[layer]
                row.update({name: values[c] for name, values in metrics.items()})
                rows.append(row)
        return rows

    def to_frame(self) -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed.
        """
        from ..core.tables import rows_to_frame

        return rows_to_frame(self.as_rows(), ["layer", "channel", "weight_layer", *BASELINES])

    def __repr__(self) -> str:
        layers = ", ".join(f"{name} (kernels of {self.weight_layers[name]})" if name in self.weight_layers else name
                           for name in self.layers)
        return f"BaselineScores(layers [{layers}])"


@runs_model
def baseline_scores(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Sequence[str],
    *,
    weight_layers: Mapping[str, str] | None = None,
    min_mean: float | None = 0.0,
    weights: bool = True,
    activations: bool = True,
) -> BaselineScores:
    """All four baseline metrics of every channel of ``layers`` (one forward pass).

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it was (modes, flags, no hooks).
    x : torch.Tensor
        The unperturbed image, (1, C, H, W) or (C, H, W), normalised as the model expects.
    layers : str or sequence of str
        The layers whose channels are ranked (the names given to
        :func:`neuronviz.score_neurons`).
    weight_layers : mapping of str to str, optional
        For some scored layers, the module whose kernels make their channels; the others
        are found as :func:`weight_layer` does.
    min_mean : float or None
        Threshold of the activation metrics (see :func:`activation_scores`).
    weights, activations : bool
        Compute the weight metrics and the activation metrics (both by default).

    Returns
    -------
    BaselineScores

    Raises
    ------
    NeuronvizError
        Bad image, unknown layer, a layer without channels, or a layer whose kernels cannot
        be found or do not match its channel count.
    """
    names = list(resolve_layers(model, layers))
    x = check_image(x, model)
    if min_mean is not None and (not isinstance(min_mean, (int, float)) or math.isnan(min_mean)):
        raise NeuronvizError(f"min_mean must be a number or None, got {min_mean!r}")
    given = dict(weight_layers or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise NeuronvizError(f"weight_layers names layers that are not scored: {unknown}; scored: {names}")
    resolve_layers(model, list(given.values()) or names)  # unknown kernel modules fail before the forward pass

    acts, finished = _record(model, x, names, order=weights)
    for name, a in acts.items():
        if a.dim() < 1:
            raise NeuronvizError(f"layer {name!r} gives one number per image; a layer with channels is needed")

    w_sum: dict[str, torch.Tensor] = {}
    w_var: dict[str, torch.Tensor] = {}
    a_sum: dict[str, torch.Tensor] = {}
    a_var: dict[str, torch.Tensor] = {}
    chosen: dict[str, str] = {}
    for name in names:
        channels = acts[name].shape[0]
        if weights:
            source = given.get(name) or _find_weight_layer(model, name, channels, finished)
            stats = kernel_weight_scores(model, source)
            if stats["sum"].numel() != channels:
                raise NeuronvizError(
                    f"layer {name!r} has {channels} channels but the kernels of {source!r} make "
                    f"{stats['sum'].numel()}; name the module that makes the channels of {name!r}"
                )
            chosen[name], w_sum[name], w_var[name] = source, stats["sum"], stats["variance"]
        if activations:
            stats = _channel_stats(acts[name], min_mean)
            a_sum[name], a_var[name] = stats["sum"], stats["variance"]
    return BaselineScores(
        weight_sum=w_sum,
        weight_variance=w_var,
        activation_sum=a_sum,
        activation_variance=a_var,
        weight_layers=chosen,
        layers=names,
        min_mean=min_mean,
    )
