"""Which layers to score when none are named: post-activation maps, as the papers scored them.

The input-resampling paper scores every convolution *after its ReLU*, and its dead-channel rule
(mean activation under 0.1) assumes such non-negative maps. A raw convolution or a linear
bottleneck is signed, so by default the views score the outputs of activation modules that
follow convolutions. How a layer is recognised, in order:

1. **Activation modules**: a module of a type in :data:`ACTIVATIONS` (``nn.ReLU``, ``ReLU6``,
   ``SiLU``, ``GELU``, ``Hardswish``, ``Mish``, ``LeakyReLU``, ...) with a spatial (C, H, W)
   output, whose input comes from a convolution (normalisation, dropout and identity modules in
   between are skipped). Found from :func:`~neuronviz.core.capture.layer_summary` alone.
2. **Rectified by a functional call** (with a probe input ``x``, one forward pass): a block
   whose output is non-negative although the last module it ran (a convolution or a batch norm)
   gives signed values, i.e. the block applies ``F.relu`` itself (torchvision's GoogLeNet and
   Inception ``BasicConv2d``); a block whose last module is a shared activation module
   (torchvision ResNet's blocks call one ``nn.ReLU`` twice, so the ReLU itself cannot be
   hooked, but the block's output is its result); and a convolution (or its batch norm) whose
   output the next module receives rectified, ``max(out, 0)`` (``F.relu(self.conv(x))``).
   A block whose output equals the previous candidate's (a conv-bn-act container and its
   ``act``) is the same map and is not listed twice.
3. **Transformers** (torchvision Swin and ViT, detected by their block classes): Swin's stage
   outputs ``features.N`` ((N, H, W, C) maps), the last ones; ViT's encoder blocks
   ``encoder.layers.encoder_layer_N`` ((N, L, D) tokens), the last ones *before* the final
   block: the final block's patch tokens reach the output only through the class token's
   ``LayerNorm``, not through attention, so their correlation with the output says little.
4. **Fallback**: the last convolutions with a spatial output, then the last layers with a
   spatial output, then the last layer.

Among the candidates, :func:`default_layers` takes one layer per resolution, the deepest
candidate of each of the last ``k`` resolutions (coarse maps see the whole object, finer ones
its parts); if there are fewer resolutions than ``k``, the deepest remaining candidates fill up.

The default model (neuronviz ``EfficientNetLite0``) has its layers chosen by measurement
(:data:`EFFICIENTNET_LITE0_LAYERS`; the measurements are in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .capture import LayerSummary, hooks
from .errors import NeuronvizError

__all__ = [
    "ACTIVATIONS",
    "EFFICIENTNET_LITE0_LAYERS",
    "EFFICIENTNET_LITE0_PCACE_LAYERS",
    "activation_layers",
    "default_layers",
    "pcace_default_layers",
    "spatial_convolutions",
]

#: Activation module types whose outputs are scored by default.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.LeakyReLU, nn.PReLU, nn.RReLU,
    nn.ELU, nn.CELU, nn.SELU, nn.Softplus, nn.Hardtanh,
)
#: Modules that pass a convolution's map on unchanged in meaning (skipped when looking back).
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
    nn.modules.dropout._DropoutNd, nn.Identity,
)
_CONV = nn.modules.conv._ConvNd

#: The explorer's and ``nv.demo()``'s layers for the default model: the ReLU6 after the 1x1
#: expansion of block 10 (672 x 14 x 14) and after the depthwise convolution of block 15
#: (1152 x 7 x 7), one per resolution of the last two stages.
EFFICIENTNET_LITE0_LAYERS: tuple[str, ...] = ("blocks.10.expand.act", "blocks.15.depthwise.act")
#: The PCACE view's four layers for the default model (two 14 x 14 and two 7 x 7 maps): its
#: former blocks 6, 10, 12 and 15, each at a post-activation map.
EFFICIENTNET_LITE0_PCACE_LAYERS: tuple[str, ...] = (
    "blocks.6.expand.act", "blocks.10.expand.act", "blocks.12.expand.act", "blocks.15.depthwise.act",
)


def _is_spatial(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and int(torch.tensor(list(shape[1:])).prod()) > 1


def spatial_convolutions(model: nn.Module, summary: LayerSummary) -> list[str]:
    """The convolutions of ``summary`` whose output is a (C, H, W) map of more than one position.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`~neuronviz.core.capture.layer_summary`.

    Returns
    -------
    list of str
        In forward order.
    """
    modules = dict(model.named_modules())
    return [i.name for i in summary if _is_spatial(i.shape) and isinstance(modules.get(i.name), _CONV)]


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _follows_conv(leaves: list[nn.Module], i: int) -> bool:
    """Whether the leaf before ``leaves[i]``, skipping normalisation and the like, is a convolution."""
    for j in range(i - 1, -1, -1):
        if isinstance(leaves[j], _CONV):
            return True
        if not isinstance(leaves[j], _PASS_THROUGH):
            return False
    return False


def _module_candidates(model: nn.Module, summary: LayerSummary) -> list[str]:
    """Rule 1: spatial outputs of activation modules whose input comes from a convolution."""
    modules = dict(model.named_modules())
    rows = [(i.name, modules[i.name], i.shape) for i in summary if i.name in modules]
    leaves = [(n, m, s) for n, m, s in rows if _is_leaf(m)]
    mods = [m for _, m, _ in leaves]
    return [n for k, (n, m, s) in enumerate(leaves)
            if isinstance(m, ACTIVATIONS) and _is_spatial(s) and _follows_conv(mods, k)]


def _fingerprint(t: torch.Tensor) -> tuple:
    """Shape, sum and sum of squares: tells two maps apart without keeping them."""
    d = t.detach().double()
    return tuple(t.shape), float(d.sum()), float(d.pow(2).sum())


def _probe_candidates(model: nn.Module, summary: LayerSummary, x: torch.Tensor) -> list[str]:
    """Rules 1 and 2 from one forward pass of ``x`` (the model's state is restored, no hook stays)."""
    from .model_state import model_device, preserved_state

    listed = {i.name for i in summary if _is_spatial(i.shape)}
    calls: list[dict] = []  # one per module call, in the order the calls finish

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            # everything is measured now: a later in-place operation may change the tensors
            rec: dict = {"name": name, "module": module, "leaf": _is_leaf(module), "out": None}
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                rec["out"] = _fingerprint(output)
                rec["neg"] = bool((output < 0).any())
                rec["pos"] = bool((output > 0).any())
                if rec["leaf"] and rec["neg"]:
                    rec["relu"] = _fingerprint(output.clamp(min=0))
            if rec["leaf"] and args and isinstance(args[0], torch.Tensor):
                rec["in"] = _fingerprint(args[0])
            calls.append(rec)
        return hook

    def pre_hook(module: nn.Module, args: tuple) -> None:
        # the input as it arrives, before this module can change it in place
        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            arrivals[id(module)] = _fingerprint(args[0])

    arrivals: dict[int, tuple] = {}

    def make_leaf_hook(name: str):
        inner = make_hook(name)

        def hook(module: nn.Module, args: tuple, output: object) -> None:
            inner(module, args, output)
            if id(module) in arrivals:
                calls[-1]["in"] = arrivals.pop(id(module))
        return hook

    named = [(name, module) for name, module in model.named_modules() if name]
    fns = {name: make_leaf_hook(name) if _is_leaf(module) else make_hook(name) for name, module in named}
    pre = {name: pre_hook for name, module in named if _is_leaf(module)}
    with preserved_state(model), torch.no_grad(), hooks(model, fns, pre=pre):
        model.eval()
        dev = model_device(model)
        xb = x[:1] if x.dim() == 4 else x.unsqueeze(0)
        model(xb.to(dev) if dev is not None else xb)
    return _candidates_from_calls(calls, listed)


def _candidates_from_calls(calls: list[dict], listed: set[str]) -> list[str]:
    leaves = [k for k, c in enumerate(calls) if c["leaf"]]
    leaf_mods = [calls[k]["module"] for k in leaves]
    position = {k: j for j, k in enumerate(leaves)}
    out: list[str] = []
    prev: tuple | None = None
    last_leaf = -1
    for k, c in enumerate(calls):
        if c["leaf"]:
            last_leaf = position[k]
        name, module = c["name"], c["module"]
        if name not in listed or name in out or c["out"] is None:
            continue
        rectified = False
        if c["leaf"]:
            j = position[k]
            if isinstance(module, ACTIVATIONS):
                rectified = _follows_conv(leaf_mods, j)
            elif isinstance(module, (_CONV, nn.modules.batchnorm._NormBase)) and "relu" in c and j + 1 < len(leaves):
                # the next module receives this output rectified: F.relu(conv(x))
                rectified = calls[leaves[j + 1]].get("in") == c["relu"]
        elif last_leaf >= 0 and any(isinstance(m, _CONV) for m in module.modules()):
            inner = calls[leaves[last_leaf]]
            if isinstance(inner["module"], (nn.ReLU, nn.ReLU6)):
                rectified = True  # e.g. a ResNet block ending with its shared ReLU
            elif isinstance(inner["module"], ACTIVATIONS):
                rectified = _follows_conv(leaf_mods, last_leaf)
            elif isinstance(inner["module"], (_CONV, nn.modules.batchnorm._NormBase)) and inner["out"] is not None:
                # signed last module, non-negative block output: the block rectifies functionally
                rectified = inner["neg"] and not c["neg"] and c["pos"]
        if not rectified:
            continue
        if prev is not None and prev == c["out"]:
            continue  # a container and its last activation: the same map
        out.append(name)
        prev = c["out"]
    return out


def activation_layers(model: nn.Module, summary: LayerSummary, x: torch.Tensor | None = None) -> list[str]:
    """Every post-activation layer found (rules 1 and 2 of the module docstring), in forward order.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`~neuronviz.core.capture.layer_summary`.
    x : torch.Tensor, optional
        A probe input as the model takes it; with it, one forward pass also finds maps rectified
        by functional calls and by shared activation modules. The model's state is restored and
        no hook stays.

    Returns
    -------
    list of str
    """
    if x is None:
        return _module_candidates(model, summary)
    return _probe_candidates(model, summary, x)


def _transformer_layers(model: nn.Module, summary: LayerSummary, k: int) -> list[str] | None:
    """Rule 3: late Swin stages or ViT encoder blocks, by their block classes; None otherwise."""
    modules = dict(model.named_modules())
    names = summary.names()
    vit = [n for n in names if type(modules.get(n)).__name__ == "EncoderBlock"]
    if vit:
        body = vit[:-1] if len(vit) > k else vit
        return body[-k:]
    swin = [n for n in names
            if isinstance(modules.get(n), nn.Sequential) and len(modules[n])
            and all(type(c).__name__.startswith("SwinTransformerBlock") for c in modules[n])]
    if swin:
        return swin[-k:]
    return None


def _one_per_resolution(candidates: list[str], summary: LayerSummary, k: int) -> list[str]:
    """The deepest candidate of each of the last ``k`` resolutions, filled up with the deepest others."""
    shape = {i.name: tuple(i.shape[1:]) for i in summary}
    chosen: list[str] = []
    resolutions: list[tuple[int, ...]] = []
    for name in reversed(candidates):
        if len(chosen) == k:
            break
        if shape[name] not in resolutions:
            resolutions.append(shape[name])
            chosen.append(name)
    for name in reversed(candidates):
        if len(chosen) >= k:
            break
        if name not in chosen:
            chosen.append(name)
    order = {n: i for i, n in enumerate(candidates)}
    return sorted(chosen, key=order.__getitem__)


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeuronvizError(f"k must be a positive integer (how many layers), got {k!r}")
    return k


def _choose(model: nn.Module, summary: LayerSummary, k: int, x: torch.Tensor | None,
            hand_tuned: Sequence[str]) -> list[str]:
    from ..models.efficientnet_lite import EfficientNetLite0  # models depend on core, not the reverse

    names = summary.names()
    if hand_tuned and isinstance(model, EfficientNetLite0) and set(hand_tuned) <= set(names):
        return list(hand_tuned)
    candidates = activation_layers(model, summary, x)
    if candidates:
        return _one_per_resolution(candidates, summary, k)
    found = _transformer_layers(model, summary, k)
    if found:
        return found
    spatial = [i.name for i in summary if _is_spatial(i.shape)]
    for fallback in (spatial_convolutions(model, summary), spatial, names):
        if fallback:
            return fallback[-k:]
    raise NeuronvizError("the model has no layer with a (N, C, ...) output to score; pass layers=[...]")


def default_layers(model: nn.Module, summary: LayerSummary, *, k: int = 2,
                   x: torch.Tensor | None = None) -> list[str]:
    """The layers the explorer, ``nv.demo()`` and the command line score when none are named.

    Post-activation maps (see the module docstring for how they are found): the deepest
    candidate at each of the last ``k`` resolutions. For the default model (EfficientNet-Lite0)
    ``blocks.10.expand.act`` (14 x 14) and ``blocks.15.depthwise.act`` (7 x 7): at each of the
    last two resolutions, the deepest ReLU6 output where the paper's 0.1 threshold keeps at
    least half of the channels in the precision ranking, on the cat and the coffee photo (the
    deeper ones leave out 55-64%, mostly channels that fire on a few positions only).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`~neuronviz.core.capture.layer_summary`.
    k : int
        How many layers (the default model's pair is used for ``k = 2`` only; other counts use
        the general rule).
    x : torch.Tensor, optional
        A probe input (e.g. the image being explained); with it, maps rectified by functional
        calls or by shared activation modules are found too (one forward pass, model restored).
        Without it, models with no activation modules after convolutions get the fallback.

    Returns
    -------
    list of str
        Layer names in forward order (fewer than ``k`` when the model has fewer candidates).

    Raises
    ------
    NeuronvizError
        ``k`` is not a positive integer, or the model has no layer that can be scored.
    """
    k = _check_k(k)
    return _choose(model, summary, k, x, EFFICIENTNET_LITE0_LAYERS if k == 2 else ())


def pcace_default_layers(model: nn.Module, summary: LayerSummary, *, k: int = 4,
                         x: torch.Tensor | None = None) -> list[str]:
    """The layers the PCACE view ranks when none are named: :func:`default_layers` with ``k = 4``.

    For the default model: ``blocks.6.expand.act``, ``blocks.10.expand.act``,
    ``blocks.12.expand.act`` and ``blocks.15.depthwise.act`` (two 14 x 14 and two 7 x 7 maps),
    the view's former blocks 6, 10 and 15 at post-activation maps chosen as in
    :func:`default_layers`, and block 12 for block 13, whose expansion leaves out more than
    half of the channels on the coffee photo.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    summary : LayerSummary
        Its :func:`~neuronviz.core.capture.layer_summary`.
    k : int
        How many layers (the default model's four for ``k = 4`` only).
    x : torch.Tensor, optional
        A probe input; see :func:`default_layers`.

    Returns
    -------
    list of str

    Raises
    ------
    NeuronvizError
        ``k`` is not a positive integer, or the model has no layer that can be ranked.
    """
    k = _check_k(k)
    return _choose(model, summary, k, x, EFFICIENTNET_LITE0_PCACE_LAYERS if k == 4 else ())
