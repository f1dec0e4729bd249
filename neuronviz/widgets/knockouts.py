"""The views' faithfulness sections: knock-outs and deletion curves computed in the background.

:class:`CurvesSection` is a :class:`~neuronviz.widgets.panels.faithfulness.FaithfulnessPanel`
with a button and a status line whose curves are computed in a background thread: the
explorer's deletion curves, the PCACE view's curve of its ranking (:func:`pcace_curves`), the
inversion view's deletion and insertion curves of its mask (:func:`mask_curves`). The first
press computes them; from then on the view's :meth:`CurvesSection.refresh` after every run (and
new shown layer) computes them again, so they stay those of what is shown, while a view whose
curves were never asked for runs its model no more than before. A new start (or
:meth:`CurvesSection.clear`) cancels the one running at its next batch, and its curves are
dropped.

The explorer's :class:`KnockoutSection` adds a toggle that knocks the selected neuron (or the
correlation / precision top-k of its layer) out and shows the output before and after; its
button draws the deletion curves of correlation against precision against random rankings for
the shown layers. Everything runs through :func:`neuronviz.knockout_effect`,
:func:`neuronviz.deletion_curve` and :func:`neuronviz.mask_deletion_curve`, which take the
model's lock, so they wait for the view's own run and leave the model as it was.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable, Union

import ipywidgets as W
import torch
from torch import nn

from ..core.errors import NeuronvizError
from ..methods.faithfulness import FaithfulnessCurves, deletion_curve, mask_deletion_curve
from ..methods.inversion import InversionResult
from ..methods.knockout import knockout_effect
from ..methods.pcace import PCACEScores
from ..methods.resampling import NeuronScores, score_neurons
from .panels.faithfulness import FaithfulnessPanel, KnockoutToggle

__all__ = ["KnockoutSection", "CurvesSection", "curve_ks", "ranking_ks", "pcace_curves", "mask_curves",
           "CURVE_POINTS", "CURVE_K", "CURVE_RANDOM", "CURVE_STEPS"]

#: The deletion curves' points and random seeds in the view (9 points up to k = 32, 3 seeds).
CURVE_POINTS, CURVE_K, CURVE_RANDOM = 9, 32, 3
#: Steps of the inversion mask's deletion and insertion curves (11 points each).
CURVE_STEPS = 10
WHAT = ("this neuron", "correlation top-k", "precision top-k")

Curves = Union[FaithfulnessCurves, list[FaithfulnessCurves]]
Progress = Callable[[int, int], None]


def ranking_ks(shortest: int) -> list[int]:
    """:data:`CURVE_POINTS` points from 0 to ``min(CURVE_K, shortest)``, the ranking that ranks fewest neurons.

    Parameters
    ----------
    shortest : int
        Length of the shortest ranking drawn.

    Returns
    -------
    list of int
    """
    top = min(CURVE_K, shortest)
    return sorted({round(i * top / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)})


def curve_ks(scores: NeuronScores) -> list[int]:
    """The view's ks: :data:`CURVE_POINTS` points from 0 to ``min(CURVE_K, the shortest ranking)``."""
    size = max(int(t.numel()) for t in scores.correlation.values())
    return ranking_ks(min(len(v) for m in ("correlation", "precision") for v in scores.top(m, size).values()))


def pcace_curves(model: nn.Module, images: torch.Tensor, scores: PCACEScores, *, n_images: int,
                 criteria: bool = False, progress: Progress | None = None) -> FaithfulnessCurves:
    """The PCACE view's deletion curve of one layer: its PCACE ranking against random ones (and the criteria).

    The target is the logit PCACE explained, evaluated on the first ``n_images`` images (the
    mean over them). With ``criteria``, the correlation and precision rankings of the layer
    over all the images (:func:`neuronviz.score_neurons` with ``samples=images``, one more
    pass over them) are drawn too, each if it ranks at least as many channels as the curve's
    last point; the view leaves them out, since they cost about as much again as the curve
    (``benchmarks/RESULTS.md``).

    Parameters
    ----------
    model : torch.nn.Module
        The ranked network.
    images : torch.Tensor
        (N, C, H, W), the images the ranking was computed over.
    scores : PCACEScores
        The layer's scores (with a class target).
    n_images : int
        Images the curve is evaluated on.
    criteria : bool
        Also the correlation and precision rankings (default no).
    progress : callable, optional
        ``progress(done, total)``; raising from it cancels.

    Returns
    -------
    FaithfulnessCurves
        Group ``scores.layer``; rankings ``"pcace"`` (and ``"correlation"``, ``"precision"``),
        ``"random"`` over :data:`CURVE_RANDOM` seeds.
    """
    layer, n = scores.layer, scores.ranking.numel()
    rankings = {"pcace": {layer: scores.ranking.tolist()}}
    top = min(CURVE_K, n)
    if criteria:
        ns = score_neurons(model, images[:1], [layer], target=scores.target, output="logit", samples=images,
                           progress=False)
        for metric in ("correlation", "precision"):
            ranked = ns.top(metric, n)[layer]
            if len(ranked) >= top:
                rankings[metric] = {layer: ranked}
    return deletion_curve(model, images[:1], rankings, ks=ranking_ks(n), random=CURVE_RANDOM,
                          target=scores.target, output="logit", samples=images[:n_images], progress=progress)


def mask_curves(model: nn.Module, x: torch.Tensor, result: InversionResult,
                progress: Progress | None = None) -> list[FaithfulnessCurves]:
    """The inversion view's deletion and insertion curves of the stage-2 mask against random masks.

    Removed pixels take the run's background when it is a removal (``"blur"`` or ``"mean"``),
    else the blurred image; :data:`CURVE_STEPS` steps, :data:`CURVE_RANDOM` random masks, the
    class probability of the explained class.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The explained image.
    result : InversionResult
        The run's result.
    progress : callable, optional
        ``progress(done, total)``; raising from it cancels.

    Returns
    -------
    list of FaithfulnessCurves
        The deletion curves, then the insertion curves.
    """
    background = result.background if result.background in ("blur", "mean") else "blur"
    return [mask_deletion_curve(model, x, result, mode=mode, steps=CURVE_STEPS, random=CURVE_RANDOM,
                                background=background, progress=progress) for mode in ("deletion", "insertion")]


class _Stale(Exception):
    """Raised in the progress callback of curves that a newer start replaced."""


def _model_of(view: Any) -> nn.Module:
    """The model of a view (or of any object with ``model``); a clear error for a view loaded without one."""
    require = getattr(view, "require_model", None)
    return require() if require is not None else view.model


class CurvesSection:
    """A faithfulness panel whose curves a button (or the view) computes in a background thread.

    DOM class: ``nv-curves`` (the box).

    Parameters
    ----------
    prepare : callable
        Called in the caller's thread when the curves are to be computed: returns
        ``work(progress) -> FaithfulnessCurves (or a list of them)``, run in the background, or
        None when there is nothing to compute yet (the status then says ``not_ready``). It
        reads the view's state at that moment, so a later change does not mix in.
    label, tooltip : str
        The button's.
    not_ready : str
        The status when ``prepare`` returns None.
    key : callable, optional
        What the curves are of (e.g. the shown layer's scores), compared by identity: a
        :meth:`refresh` while the key is unchanged keeps the curves (a new top-k redraws the
        view, not its curves).
    width, height : int
        Size of each plot.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The section.
    curves : FaithfulnessCurves, list of them, or None
        The curves drawn now (None while computing, after :meth:`clear` or before the first).
    panel : FaithfulnessPanel
        The plots.
    follow : bool
        Whether :meth:`refresh` computes the curves (True once :meth:`start` was called).
    """

    def __init__(self, prepare: Callable[[], Callable[[Progress], Curves] | None], *, label: str = "Deletion curves",
                 tooltip: str = "", not_ready: str = "run the view first", key: Callable[[], object] | None = None,
                 width: int = 300, height: int = 220) -> None:
        self._prepare = prepare
        self._key_of = key
        self._key: object = None
        self.not_ready = not_ready
        self.panel = FaithfulnessPanel(width=width, height=height)
        self.button = W.Button(description=label, icon="line-chart", tooltip=tooltip)
        self.button.on_click(lambda _b: self.start())
        self.status = W.HTML("")
        self.curves: Curves | None = None
        self.follow = False
        self._generation = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.widget = W.VBox([W.HBox([self.button, self.status]), self.panel.widget])
        self.widget.add_class("nv-curves")

    def refresh(self) -> bool:
        """What is shown changed: compute its curves if they were asked for before (:attr:`follow`), else clear.

        Returns
        -------
        bool
            Whether a computation started.
        """
        if self._key_of is not None and self._key is not None and self._key_of() is self._key:
            return False  # the same curves: drawn, or on their way
        if self.follow:
            return self.start()
        self.clear()
        return False

    def start(self) -> bool:
        """Compute the curves in the background (a running computation is cancelled); False when not ready.

        From then on :meth:`refresh` computes them too (:attr:`follow`).

        Returns
        -------
        bool
            Whether a computation started (False before the view has a result).
        """
        self.follow = True
        with self._lock:
            self._generation += 1
            mine = self._generation
            self.curves = None
        self._key = self._key_of() if self._key_of is not None else None
        try:
            work = self._prepare()
        except NeuronvizError as err:  # e.g. a view loaded without its model
            self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
            self.panel.show(None)
            return False
        if work is None:
            self.status.value = html.escape(self.not_ready)
            self.panel.show(None)
            return False
        self.status.value = "knocking out…"
        self.panel.show(None, "computing…")

        def progress(done: int, total: int) -> None:
            if self._generation != mine:
                raise _Stale

        def run() -> None:
            try:
                curves = work(progress)
            except _Stale:
                return
            except Exception as err:  # noqa: BLE001 - shown in the section: the view keeps working
                if self._generation == mine:
                    self.status.value = f"<span style='color:#b00'>{html.escape(f'{type(err).__name__}: {err}')}</span>"
                return
            with self._lock:
                if self._generation != mine:
                    return
                self.curves = curves
                self.panel.show(curves)
                self.status.value = ""

        thread = threading.Thread(target=run, daemon=True, name="neuronviz-curves")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return True

    def clear(self, text: str = "") -> None:
        """Cancel a running computation (at its next batch) and clear the plots."""
        with self._lock:
            self._generation += 1
            self.curves = None
            self._key = None
        self.panel.show(None)
        self.status.value = html.escape(text)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background computations ended."""
        for thread in list(self._threads):
            thread.join(timeout)


class KnockoutSection:
    """Knock-out toggle and faithfulness panel for a view with ``model``, ``x``, ``top_k`` and ``scores``.

    Parameters
    ----------
    view : View
        The explorer (or any view with those attributes).

    Attributes
    ----------
    widget : ipywidgets.VBox
        The section, to put in any box.
    curves : FaithfulnessCurves or None
        The last deletion curves drawn.
    effect : tuple (str, float, float) or None
        What the toggle shows now: the set's description, the output before and after.
    """

    def __init__(self, view: Any) -> None:
        self.view = view
        self.neuron: tuple[str, int] | None = None
        self.effect: tuple[str, float, float] | None = None
        self.toggle = KnockoutToggle(self._toggled)
        self.what = W.Dropdown(options=WHAT, value=WHAT[0], layout=W.Layout(width="150px"))
        self.section = CurvesSection(self._prepare_curves, label="Deletion curves",
                                     tooltip="knock out the top-k of correlation, precision and random rankings of "
                                             "the shown layers, k up to 32 (one batched pass per batch of sets)",
                                     key=self._scores)
        self.panel, self.button, self.status = self.section.panel, self.section.button, self.section.status
        self._of: NeuronScores | None = None  # the scores the curves were drawn for
        self._threads: list[threading.Thread] = []
        self.widget = W.VBox([W.HBox([self.toggle.button, self.what]), self.toggle.text, self.section.widget])
        self.widget.add_class("nv-knockouts")

    @property
    def curves(self) -> FaithfulnessCurves | None:
        """The deletion curves drawn now (None before the first, or while they are computed)."""
        curves = self.section.curves
        return curves if isinstance(curves, FaithfulnessCurves) else None

    def current_curves(self) -> FaithfulnessCurves | None:
        """The curves drawn, if they are those of the view's current scores (else None)."""
        scores = self._scores()
        return self.curves if scores is not None and self._of is scores else None

    def _scores(self) -> NeuronScores | None:
        return getattr(self.view, "scores", None)

    def select(self, neuron: tuple[str, int] | None) -> None:
        """A new selection: the toggle is released and its text cleared."""
        self.neuron = neuron
        self.effect = None
        self.toggle.reset()
        if self._of is not None and self._scores() is not self._of:  # a new run: its own curves, or none
            self.section.refresh()

    def _set(self) -> dict[str, list[int]] | None:
        scores = self._scores()
        if self.neuron is None or scores is None:
            return None
        layer, channel = self.neuron
        if self.what.value == WHAT[0]:
            return {layer: [channel]}
        metric = "correlation" if self.what.value == WHAT[1] else "precision"
        return {layer: scores.top(metric, int(getattr(self.view, "top_k", 5)))[layer]}

    def _background(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - shown in the section: the view keeps working
                text = html.escape(f"{type(err).__name__}: {err}")
                self.status.value = f"<span style='color:#b00'>{text}</span>"

        thread = threading.Thread(target=run, daemon=True, name="neuronviz-knockouts")
        self._threads.append(thread)
        thread.start()

    def _toggled(self, pressed: bool) -> None:
        if not pressed:
            self.effect = None
            self.toggle.show(None, None)
            return
        chosen, scores = self._set(), self._scores()
        if chosen is None or scores is None:
            return
        try:
            model = _model_of(self.view)
        except NeuronvizError as err:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
            return
        what = f"{self.what.value} ({', '.join(str(c) for c in next(iter(chosen.values())))}):"

        def effect() -> None:
            eff = knockout_effect(model, self.view.x, chosen, target=scores.target, output=scores.output,
                                  layout={layer: scores.layouts.get(layer, "auto") for layer in chosen})
            if self.toggle.button.value:
                self.effect = (what.rstrip(":"), eff.original, float(eff.knocked[0]))
                self.toggle.show(eff.original, float(eff.knocked[0]), what)

        self._background(effect)

    def _prepare_curves(self) -> Callable[[Progress], Curves] | None:
        scores = self._scores()
        self._of = scores
        if scores is None:
            return None
        model, x = _model_of(self.view), self.view.x
        return lambda progress: deletion_curve(model, x, scores, ks=curve_ks(scores), random=CURVE_RANDOM,
                                               progress=progress)

    def draw_curves(self) -> None:
        """Compute and draw the deletion curves of the shown layers (in the background)."""
        self.section.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background knock-outs ended."""
        for thread in list(self._threads):
            thread.join(timeout)
        self.section.wait(timeout)
