"""Receptive fields: the input pixels that one position of a layer can see.

Two ways, and the result says which one a layer got (``ReceptiveField.method``):

- ``"analytic"``: when the modules that run before the layer form a chain (each takes the
  previous one's output, the first the model's input) of convolutions, poolings with a fixed
  kernel and element-wise modules (activations, batch norm, dropout), the field follows from
  their arithmetic. For kernel k, stride s, padding q and dilation d on an input whose position
  p covers pixels ``[o + p j, o + p j + r - 1]``, the output position p covers
  ``[o' + p j', o' + p j' + r' - 1]`` with ``o' = o - q j``, ``j' = s j``,
  ``r' = r + d (k - 1) j`` (per axis). Exact.
- ``"gradient"``: otherwise (branches, adaptive pooling, attention), the field is measured: the
  gradient of the sum over channels of the layer's output at one position with respect to the
  input, at a few seeded random images; the field is the box around the pixels whose gradient is
  not zero on any of them. A pixel whose influence happens to vanish at all of them is missed,
  so this is a lower bound of the true field.

Boxes are ``(top, left, bottom, right)`` with ``bottom``/``right`` exclusive, clipped to the
image (the padding outside it is not part of the picture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .archive import Archived, archived
from .capture import ActivationCapture, hooks, resolve_layers
from .errors import NeuronvizError
from .locks import hold_model, runs_model
from .model_state import preserved_state

__all__ = ["ReceptiveField", "receptive_field", "analytic_chain"]

#: Modules that change no position: the field passes through them unchanged.
_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
    nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.Dropout, nn.Dropout2d,
)
_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)

#: Random images the gradient probe averages over.
PROBE_IMAGES = 3


def _pair(v: int | str | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@archived("ReceptiveField", drop=("_probe",))  # the probe holds the model: not data
@dataclass
class ReceptiveField(Archived):
    """Where each position of a layer looks in the input.

    Attributes
    ----------
    layer : str
        The layer.
    method : {"analytic", "gradient"}
        How the field was found (see the module's description).
    grid : tuple of int
        (H, W) of the layer's positions.
    image_size : tuple of int
        (H, W) of the input.
    jump, offset, size : tuple of int
        Analytic only: per axis (rows, columns), the step between positions' fields, where
        position 0's field starts (negative inside the padding) and its side.
    """

    layer: str
    method: str
    grid: tuple[int, int]
    image_size: tuple[int, int]
    jump: tuple[int, int] | None = None
    offset: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    _boxes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict, repr=False)
    _probe: Any = field(default=None, repr=False, compare=False)  # (model, input) to measure later

    def measure(self, positions: Sequence[int | tuple[int, int]]) -> None:
        """Measure the gradient boxes of these positions now (in one batch), if not measured yet.

        Parameters
        ----------
        positions : sequence of int or (row, column)
        """
        if self.method != "gradient" or self._probe is None:
            return
        flat = [p[0] * self.grid[1] + p[1] if isinstance(p, (tuple, list)) else int(p) for p in positions]
        flat = [p for p in flat if p not in self._boxes]
        model = self._probe[0]
        if flat and model is not None:
            with hold_model(model):
                self._boxes.update(_gradient_boxes(model, self.layer, self._probe[1], flat, self.grid))

    def position(self, flat: int) -> tuple[int, int]:
        """(row, column) of a flat position index."""
        return divmod(int(flat), self.grid[1])

    def box(self, position: int | tuple[int, int], *, clip: bool = True) -> tuple[int, int, int, int]:
        """The input box ``(top, left, bottom, right)`` (bottom, right exclusive) a position sees.

        Parameters
        ----------
        position : int or (row, column)
            A flat position index (as :func:`neuronviz.top_examples` gives) or its row and column.
        clip : bool
            Clip to the image (default); analytic fields may reach into the padding otherwise.

        Returns
        -------
        tuple of int

        Raises
        ------
        NeuronvizError
            A position outside the layer's grid, or a gradient field not measured for it.
        """
        if isinstance(position, (tuple, list)):
            row, col = int(position[0]), int(position[1])
        else:
            row, col = self.position(position)
        if not (0 <= row < self.grid[0] and 0 <= col < self.grid[1]):
            raise NeuronvizError(f"position ({row}, {col}) is outside layer {self.layer!r}'s grid {self.grid}")
        if self.method == "analytic":
            assert self.offset is not None and self.jump is not None and self.size is not None  # an analytic field
            top = self.offset[0] + row * self.jump[0]
            left = self.offset[1] + col * self.jump[1]
            box = (top, left, top + self.size[0], left + self.size[1])
        else:
            flat = row * self.grid[1] + col
            self.measure([flat])
            if flat not in self._boxes:
                raise NeuronvizError(
                    f"the gradient-measured field of layer {self.layer!r} has no box for position ({row}, {col}); "
                    "measure it with receptive_field(model, layer, x, positions=[...])"
                )
            box = self._boxes[flat]
        if clip:
            h, w = self.image_size
            box = (max(0, box[0]), max(0, box[1]), min(h, box[2]), min(w, box[3]))
        return box


def analytic_chain(model: nn.Module, layer: str, x: torch.Tensor) -> list[nn.Module] | None:
    """The modules run before ``layer``'s output, when they form a chain of convs, pools and point-wise modules.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layer : str
        The layer.
    x : torch.Tensor
        One input (1, C, H, W).

    Returns
    -------
    list of torch.nn.Module or None
        The windowed and point-wise leaf modules in the order they ran, or None when the path
        is not such a chain (another kind of module, a branch, a functional op between modules
        that changes the tensor).
    """
    leaves = {name: m for name, m in model.named_modules() if name and not list(m.children())}
    order: list[tuple[nn.Module, object, object]] = []
    done: dict[str, object] = {"stop": False}

    def make(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not done["stop"]:
                order.append((module, args[0] if args else None, output))

        return hook

    def stop(module: nn.Module, args: tuple, output: object) -> None:
        done["stop"] = True
        done["out"] = output

    fns = {name: make(name) for name in leaves}
    with preserved_state(model), torch.no_grad():
        model.eval()
        with hooks(model, fns):
            with hooks(model, {layer: stop}):  # registered after the leaves': runs once the layer's leaf has run
                model(x)
    if "out" not in done:
        return None
    chain: list[nn.Module] = []
    prev: object = x
    for module, inp, out in order:
        if inp is not prev and not (isinstance(inp, torch.Tensor) and isinstance(prev, torch.Tensor)
                                    and inp.data_ptr() == prev.data_ptr() and inp.shape == prev.shape):
            return None
        if not isinstance(module, _POINTWISE + _WINDOWED):
            return None
        chain.append(module)
        prev = out
    final = done["out"]
    if not isinstance(final, torch.Tensor) or not isinstance(prev, torch.Tensor) or final.data_ptr() != prev.data_ptr():
        return None
    return chain


def _analytic(chain: Sequence[nn.Module]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    jump, offset, size = [1, 1], [0, 0], [1, 1]
    for m in chain:
        if not isinstance(m, _WINDOWED):
            continue
        k, s, q = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        for a in range(2):
            offset[a] -= q[a] * jump[a]
            size[a] += d[a] * (k[a] - 1) * jump[a]
            jump[a] *= s[a]
    return (jump[0], jump[1]), (offset[0], offset[1]), (size[0], size[1])


def _gradient_boxes(model: nn.Module, layer: str, x: torch.Tensor, positions: Sequence[int],
                    grid: tuple[int, int], seed: int = 0) -> dict[int, tuple[int, int, int, int]]:
    g = torch.Generator().manual_seed(seed)
    probes = torch.randn((PROBE_IMAGES, *x.shape[1:]), generator=g, dtype=torch.float32).to(x.device, x.dtype)
    boxes: dict[int, tuple[int, int, int, int]] = {}
    positions = list(dict.fromkeys(int(p) for p in positions))
    with preserved_state(model), torch.enable_grad():
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for lo in range(0, len(positions), 32):
            part = positions[lo : lo + 32]
            inp = probes.repeat(len(part), 1, 1, 1).requires_grad_(True)
            with ActivationCapture(model, [layer], keep_graph=True, stop_after_last=True) as rec:
                rec.forward(inp)
                a = rec[layer]
            a = a.reshape(a.shape[0], a.shape[1], -1)
            sel = torch.tensor(part, device=a.device).repeat_interleave(PROBE_IMAGES)
            picked = a[torch.arange(a.shape[0], device=a.device), :, sel]
            (grad,) = torch.autograd.grad(picked.sum(), inp)
            support = grad.abs().sum(1).reshape(len(part), PROBE_IMAGES, *x.shape[-2:]).sum(1) > 0
            for j, pos in enumerate(part):
                rows = support[j].any(1).nonzero().flatten()
                cols = support[j].any(0).nonzero().flatten()
                if rows.numel() == 0:
                    boxes[pos] = (0, 0, 0, 0)
                else:
                    boxes[pos] = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    return boxes


@runs_model
def receptive_field(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    *,
    positions: Sequence[int] | None = None,
    method: str = "auto",
) -> ReceptiveField:
    """The input region each position of ``layer`` sees, exact for chains, measured otherwise.

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it was (modes, ``requires_grad``, no hook).
    layer : str
        A layer with a spatial output (N, C, H, W).
    x : torch.Tensor
        An input of the model's size, (1, C, H, W) or (N, C, H, W) (the first image is used;
        its values do not matter).
    positions : sequence of int, optional
        Flat positions to measure now when the field is measured by gradient (default: none; each
        position is measured when its box is first asked for).
    method : {"auto", "analytic", "gradient"}
        "auto": analytic where the path is a chain, gradient otherwise; "analytic" refuses a
        model that is not a chain; "gradient" always measures.

    Returns
    -------
    ReceptiveField
        ``.box(position)`` gives the input box; ``.method`` says how it was found.

    Raises
    ------
    NeuronvizError
        Unknown layer, a layer without a spatial output, ``method="analytic"`` on a path that is
        not a chain, an unknown ``method``.
    """
    if method not in ("auto", "analytic", "gradient"):
        raise NeuronvizError(f"method must be 'auto', 'analytic' or 'gradient', got {method!r}")
    resolve_layers(model, [layer])
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        raise NeuronvizError("x must be an image tensor (C, H, W) or a batch (N, C, H, W) of the model's input size")
    x = (x if x.dim() == 4 else x.unsqueeze(0))[:1].detach()
    with preserved_state(model), torch.no_grad():
        model.eval()
        with ActivationCapture(model, [layer], stop_after_last=True) as rec:
            rec.forward(x)
            shape = tuple(rec[layer].shape)
    if len(shape) != 4:
        raise NeuronvizError(f"layer {layer!r} has output shape {shape}; a receptive field needs (N, C, H, W)")
    grid, image = (shape[2], shape[3]), (int(x.shape[-2]), int(x.shape[-1]))
    chain = analytic_chain(model, layer, x) if method != "gradient" else None
    if chain is not None:
        jump, offset, size = _analytic(chain)
        return ReceptiveField(layer, "analytic", grid, image, jump=jump, offset=offset, size=size)
    if method == "analytic":
        raise NeuronvizError(
            f"the modules before layer {layer!r} are not a chain of convolutions, poolings and point-wise "
            "modules, so its receptive field has no closed form; use method='auto' or 'gradient'"
        )
    rf = ReceptiveField(layer, "gradient", grid, image)
    rf._probe = (model, x.clone())  # boxes measured when first asked for
    if positions is not None:
        rf.measure(list(positions))
    return rf
