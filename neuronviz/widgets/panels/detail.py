"""One neuron's activation against the output over the perturbed copies, and a strip of copies with its map."""

from __future__ import annotations

import math
from typing import Sequence

import bqplot
import ipywidgets as W
import numpy as np
import torch

from ...methods.resampling import NeuronScores
from ...render.explorer import blend_overlay, layer_colour, pearson
from ...render.maps import upsample_map
from ..pictures import encode_png
from .signals import close_widgets

__all__ = ["NeuronDetail"]

Neuron = tuple[str, int]


class NeuronDetail:
    """One neuron's activation (channel mean) against the output over the perturbed samples, and samples.

    The figure's first mark holds one point per perturbed sample; its second rings the
    samples shown in the strip below. The strip shows those samples with the neuron's map
    over them (when per-sample maps are given).

    DOM classes: ``nv-detail`` (the bqplot Figure), ``nv-strip`` (the strip box).

    Parameters
    ----------
    width, height : int
        Size of the figure in pixels.
    thumb : int
        Displayed width of each sample in the strip.
    """

    def __init__(self, width: int = 380, height: int = 280, thumb: int = 96) -> None:
        self.x_scale, self.y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        scales = {"x": self.x_scale, "y": self.y_scale}
        tooltip = bqplot.Tooltip(fields=["index", "x", "y"], formats=["", ".4g", ".4g"],
                                 labels=["copy", "activation", "output"])
        self.points_mark = bqplot.Scatter(x=[], y=[], scales=scales, default_size=24, colors=[layer_colour(0)],
                                          opacities=[0.75], stroke="white", stroke_width=0.5,
                                          interactions={"hover": "tooltip"}, tooltip=tooltip)
        self.shown_mark = bqplot.Scatter(x=[], y=[], scales=scales, default_size=90, colors=["black"], fill=False,
                                         stroke_width=1.6)
        self.x_axis = bqplot.Axis(scale=self.x_scale, label="channel activation (mean over positions)",
                                  tick_format=".3g")
        self.y_axis = bqplot.Axis(scale=self.y_scale, side="left", label="output", tick_format=".3g",
                                  label_offset="45px")
        self.figure = bqplot.Figure(marks=[self.points_mark, self.shown_mark], axes=[self.x_axis, self.y_axis],
                                    title="no neuron selected", title_style={"font-size": "13px"},
                                    fig_margin={"top": 40, "bottom": 50, "left": 65, "right": 15},
                                    layout=W.Layout(width=f"{width}px", height=f"{height}px"), animation_duration=0)
        self.figure.add_class("nv-detail")
        self.thumb = thumb
        self.strip = W.HBox([])
        self.strip.add_class("nv-strip")
        self.widget = W.VBox([self.figure, W.HTML("<span style='font-size:12px'>perturbed copies</span>"), self.strip])
        self.scores: NeuronScores | None = None
        self.samples: list[np.ndarray] = []
        self.sample_indices: list[int] = []
        self.sample_maps: dict[str, torch.Tensor] | None = None
        self._images: list[W.Image] = []
        self._captions: list[W.HTML] = []

    def set_run(
        self,
        scores: NeuronScores,
        samples: Sequence[np.ndarray],
        sample_indices: Sequence[int],
        sample_maps: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Take a run's results: scores with ``channel_means``, a few perturbed samples and their maps.

        Parameters
        ----------
        scores : NeuronScores
            Computed with ``keep_channel_means=True``.
        samples : sequence of numpy.ndarray
            (H, W, 3) float images in [0, 1] of the samples ``sample_indices``.
        sample_indices : sequence of int
            Which perturbed copies they are.
        sample_maps : dict of str to torch.Tensor, optional
            Per layer, (n, C, h, w) maps of the samples.
        """
        self.scores = scores
        self.samples, self.sample_indices = list(samples), [int(i) for i in sample_indices]
        self.sample_maps = sample_maps
        if len(self._images) != len(self.samples):  # else the thumbnails stay: new widgets cost the browser a redraw
            close_widgets(self.strip.children)
            self._images = [W.Image(format="png", layout=W.Layout(width=f"{self.thumb}px")) for _ in self.samples]
            self._captions = [W.HTML(layout=W.Layout(width=f"{self.thumb + 4}px")) for _ in self.samples]
            self.strip.children = [W.VBox([im, cap]) for im, cap in zip(self._images, self._captions)]
        out = {"probability": "probability", "logit": "logit"}.get(scores.output, "target value")
        self.y_axis.label = f"output ({out})"

    def show(self, neuron: Neuron | None, opacity: float = 0.6) -> None:
        """Plot ``neuron``'s activation against the output and its maps on the samples."""
        scores = self.scores
        if scores is None or neuron is None or scores.channel_means is None:
            with self.points_mark.hold_sync():
                self.points_mark.x, self.points_mark.y = np.zeros(0), np.zeros(0)
            self.figure.title = "no neuron selected"
            self._show_strip(None, opacity)
            return
        layer, channel = neuron
        a = scores.channel_means[layer][:, channel].double().numpy()
        o = scores.outputs.double().numpy()
        with self.points_mark.hold_sync():
            self.points_mark.x, self.points_mark.y = a, o
            self.points_mark.colors = [layer_colour(scores.layers.index(layer))]
        idx = [i for i in self.sample_indices if 0 <= i < len(o)]
        with self.shown_mark.hold_sync():
            self.shown_mark.x, self.shown_mark.y = a[idx], o[idx]
        r = pearson(a, o)
        self.figure.title = f"{layer} ch {channel} · r(mean, out) = {'n/a' if math.isnan(r) else f'{r:.2f}'}"
        self._show_strip(neuron, opacity)

    def _show_strip(self, neuron: Neuron | None, opacity: float) -> None:
        outputs = self.scores.outputs if self.scores is not None else None
        maps = None
        if neuron is not None and self.sample_maps is not None:
            m = self.sample_maps.get(neuron[0])
            if m is not None and m.dim() == 4 and m.shape[2] * m.shape[3] > 1:
                maps = m[:, neuron[1]]
        for j, (img, im, cap) in enumerate(zip(self.samples, self._images, self._captions)):
            heat = upsample_map(maps[j], img.shape[:2]) if maps is not None else None
            im.value = encode_png(blend_overlay(img, heat, opacity))
            i = self.sample_indices[j]
            out = f"{float(outputs[i]):.3g}" if outputs is not None and i < len(outputs) else "?"
            cap.value = f"<span style='font-size:11px'>copy {i}<br>output {out}</span>"
