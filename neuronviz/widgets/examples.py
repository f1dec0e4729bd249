"""Data-set examples in a view: found once in the background, cached per layer, shown for the selected neuron.

:class:`ExamplesSection` owns an :class:`~neuronviz.widgets.panels.examples.ExamplesPanel` and runs
:func:`neuronviz.top_examples` in a thread of its own (holding the model's lock, so it takes
turns with the view's runs, and giving way to them between batches): the first time a neuron is
shown, for every layer the view scores, in one pass; a layer added later gets a pass of its own.
Clicking a crop shows that image in the view's overlay with the neuron's map over it.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import threading
import time
import weakref
from typing import Any, Iterator

import torch
from torch import nn

from ..core.locks import hold_model
from ..core.model_state import model_device
from ..methods.examples import Crop, TopExamples, dataset_item, top_examples
from .panels.examples import HOW_TO_GIVE, ExamplesPanel
from .pictures import DISPLAY_SIZE, display_picture, resize

__all__ = ["ExamplesSection", "crops_dataset", "demo_examples"]


class _Closed(Exception):
    """The view was closed: the search stops."""


class _GiveWay(Exception):
    """The view wants the model: the search stops, to start again once the view is idle."""


class _Stale(Exception):
    """Another neuron was shown: cutting this one's crops stops."""


#: Seconds the interpreter waits at exit for a search to reach its next batch and stop.
EXIT_WAIT_S = 10.0
#: Images per forward pass of the search on a CPU: between two, a run of the view goes first.
SEARCH_BATCH = 4
#: Seconds between two looks at whether the view still wants the model.
GIVE_WAY_POLL_S = 0.02
#: Neurons whose crops are kept (they do not depend on the view's runs).
CROPS_KEPT = 64
_EXITING = threading.Event()
_THREADS: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


@atexit.register
def _stop_searches() -> None:
    # a daemon thread still inside a torch operation when the interpreter ends aborts the process
    _EXITING.set()
    for thread in list(_THREADS):
        thread.join(EXIT_WAIT_S)


def _thread(target: Any, *args: Any, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True, name=name)
    _THREADS.add(thread)
    thread.start()
    return thread


def crops_dataset(source: Any) -> Any:
    """What the crops are cut from: a tensor or Dataset itself, a DataLoader's dataset."""
    if isinstance(source, torch.utils.data.DataLoader):
        return source.dataset
    return source


class ExamplesSection:
    """The examples panel of a view and the background search that feeds it.

    The search and the crops' forward passes give way to the view's own runs: they wait while
    the view wants the model (:meth:`View.wants_model`: a live run scheduled or under way), and a
    search under way stops at its next batch (of :data:`SEARCH_BATCH` images on a CPU) when a
    run is scheduled, to start again once the view is idle. So a live run never waits for them
    for more than one short batch, and never shares the processor with them. The crops of a
    neuron are cut once and kept (:data:`CROPS_KEPT` neurons).

    Parameters
    ----------
    view : View
        A view with ``model``, ``layers`` (the layers it scores), ``overlay`` and ``image``.
    source : tensor, Dataset, loader or None
        The images; None shows how to give them.
    names : sequence of str, optional
        Class names for the labels.
    how : str, optional
        What the panel says without a source (HTML; default :data:`~.panels.examples.HOW_TO_GIVE`).
    """

    def __init__(self, view: Any, source: Any, names: Any = None, how: str | None = None) -> None:
        self.view, self.source, self.names = view, source, names
        self.panel = ExamplesPanel()
        self.widget = self.panel.widget
        self.cache: dict[str, TopExamples] = {}
        self.neuron: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._fills: list[threading.Thread] = []
        self._crops: dict[tuple[str, int], tuple[list[Crop], str]] = {}
        self._shown: tuple[str, int] | None = None  # whose crops the panel shows
        self._generation = 0  # bumped by every show: an older fill stops at its next step
        self._lock = threading.Lock()
        self.error: str | None = None
        self._on_found: list[Any] = []
        self.panel.on_open(self.open)
        if source is None:
            self.panel.message(how or HOW_TO_GIVE)

    def on_found(self, fn: Any) -> None:
        """Call ``fn()`` (in the search's thread) each time a search has found some layers' examples."""
        self._on_found.append(fn)

    def _closed(self) -> bool:
        return _EXITING.is_set() or getattr(self.widget, "comm", None) is None

    def _view_busy(self) -> bool:
        wants = getattr(self.view, "wants_model", None)
        return bool(wants()) if callable(wants) else False

    def _give_way(self, generation: int | None = None) -> None:
        """Wait while the view wants the model; raise when closed or (with ``generation``) superseded."""
        while True:
            if self._closed():
                raise _Closed
            if generation is not None and generation != self._generation:
                raise _Stale
            if not self._view_busy():
                return
            time.sleep(GIVE_WAY_POLL_S)

    @contextlib.contextmanager
    def _turn(self, generation: int | None = None) -> Iterator[None]:
        """Hold the model's lock at a moment the view does not want the model."""
        while True:
            self._give_way(generation)
            with hold_model(self.view.model):
                if not self._view_busy():  # a run scheduled while the lock was taken goes first
                    yield
                    return

    def show(self, neuron: tuple[str, int] | None) -> None:
        """Show the neuron's crops, starting the search for its layer if needed; restore the view's own image."""
        overlay = getattr(self.view, "overlay", None)
        if overlay is not None:
            overlay.image = self.view.image
        with self._lock:
            self._generation += 1
            generation = self._generation
        self.neuron = neuron
        if self.source is None or neuron is None:
            return
        if neuron == self._shown and self.panel.crops:
            return  # the same neuron after a new run: its crops do not depend on the run
        layer = neuron[0]
        if layer in self.cache:
            if neuron in self._crops:
                self._set_crops(neuron)
                return
            # the crops' maps need a forward pass: off the selection's path, and after the view's runs
            thread = _thread(self._fill_quietly, generation, name="neuronviz-example-crops")
            self._fills = [t for t in self._fills if t.is_alive()] + [thread]
            return
        self.panel.message(f"finding the data-set examples of <b>{html.escape(layer)}</b> in the background…")
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return  # the running search starts the next one when it ends
            wanted = [name for name in dict.fromkeys([*(self.view.layers or []), self.neuron[0]])
                      if name not in self.cache] if self.neuron else []
            if not wanted:
                return
            self._thread = _thread(self._search, wanted, name="neuronviz-examples")

    def _search(self, layers: list[str]) -> None:
        def between_batches(done: int, total: int) -> None:
            if self._closed():
                raise _Closed
            if self._view_busy():
                raise _GiveWay

        model = self.view.model
        batch = SEARCH_BATCH if model_device(model).type == "cpu" else None
        while True:
            try:
                with self._turn():
                    ex = top_examples(model, self.source, layers, k=self.panel.k, batch_size=batch,
                                      progress=between_batches)
                break
            except _GiveWay:
                continue  # a run of the view goes first; the pass starts again once it has ended
            except _Closed:
                return
            except Exception as err:  # noqa: BLE001 - shown in the panel: the view itself keeps working
                self.error = f"{type(err).__name__}: {err}"
                failed = html.escape(self.error)
                self.panel.message(f"<span style='color:#b00'>data-set examples failed: {failed}</span>")
                return
        for layer in layers:
            self.cache[layer] = ex
        if self._closed():
            return
        for fn in self._on_found:
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - shown in the panel: the view itself keeps working
                self.panel.message(f"<span style='color:#b00'>generality not shown: {html.escape(str(err))}</span>")
        if self.neuron is not None and self.neuron[0] in self.cache:
            self._fill_quietly(self._generation)
        elif self.neuron is not None:
            self._start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background search (if any) and the cutting of crops ended."""
        for thread in [self._thread, *self._fills]:
            if thread is not None:
                thread.join(timeout)

    def _fill_quietly(self, generation: int) -> None:
        try:
            self._fill(generation)
        except (_Closed, _Stale):
            return
        except Exception as err:  # noqa: BLE001 - shown in the panel: the view itself keeps working
            self.panel.message(f"<span style='color:#b00'>data-set examples failed: {html.escape(str(err))}</span>")

    def _fill(self, generation: int) -> None:
        """Cut the shown neuron's crops (a position's receptive field at a time, giving way between)."""
        assert self.neuron is not None  # filled only once a neuron is shown
        neuron = layer, channel = self.neuron
        if neuron in self._crops:
            self._set_crops(neuron)
            return
        ex = self.cache[layer]
        if channel >= ex.values[layer].shape[1]:
            return
        rf = ex.receptive_fields.get(layer)
        if rf is not None:
            for row in ex.examples(layer, channel):
                if row.position is not None:
                    with self._turn(generation):
                        rf.measure([row.position])  # measured once; a no-op for an analytic field
        with self._turn(generation):
            crops = ex.crops(crops_dataset(self.source), layer, channel, model=self.view.model)
        gen = ex.generality(layer)
        share = float(gen.share[channel])
        note = (f"top {len(crops)} of {ex.n_images} images · fires on {share:.0%} of them"
                + (f" · label entropy {float(gen.entropy[channel]):.2f} bits" if gen.entropy is not None else "")
                + " · click to open")
        with self._lock:
            self._crops[neuron] = (crops, note)
            while len(self._crops) > CROPS_KEPT:
                self._crops.pop(next(iter(self._crops)))
        if self.neuron == neuron and not self._closed():
            self._set_crops(neuron)  # else another neuron was selected meanwhile: its own fill shows it

    def _set_crops(self, neuron: tuple[str, int]) -> None:
        crops, note = self._crops[neuron]
        self.panel.set_crops(crops, self.names, note)
        self._shown = neuron

    def open(self, crop: Crop) -> None:
        """Show the crop's whole image in the view's overlay, with the selected neuron's map over it.

        A view without an overlay (the PCACE view) has nowhere to show it: nothing happens.
        """
        if self.neuron is None or getattr(self.view, "overlay", None) is None:
            return
        image, _ = dataset_item(crops_dataset(self.source), crop.image)
        model: nn.Module = self.view.model
        layer, channel = self.neuron
        overlay = self.view.overlay
        overlay.image = resize(display_picture(image.unsqueeze(0)), DISPLAY_SIZE)
        from ..core.capture import ActivationCapture
        from ..core.model_state import preserved_state

        with hold_model(model), preserved_state(model), torch.no_grad():
            model.eval()
            with ActivationCapture(model, [layer], stop_after_last=True) as rec:
                rec.forward(image.unsqueeze(0).to(next(model.parameters()).device))
                amap = rec[layer][0, channel].float().cpu()
        label = "" if crop.label is None else f", label {crop.label}"
        overlay.show(amap if amap.dim() == 2 else None,
                     f"<span style='font-size:11px'>data-set image {crop.image}{label}: activation "
                     f"{crop.value:.3g}; select a neuron to return to the explained image</span>")




def demo_examples(per_photo: int = 8, size: int = 224) -> torch.utils.data.TensorDataset:
    """A data set built from what ships: ``per_photo`` random views (:func:`neuronviz.augment`) of each bundled photo.

    Parameters
    ----------
    per_photo : int
        Views of each photo.
    size : int
        Side of each view.

    Returns
    -------
    torch.utils.data.TensorDataset
        ``(image, label)`` items, the label the photo's index in :func:`neuronviz.sample_image_names`.
    """
    from ..data import augment, sample_image, sample_image_names

    names = sample_image_names()
    views = [augment(sample_image(name), per_photo, size=size, seed=i) for i, name in enumerate(names)]
    labels = torch.arange(len(names)).repeat_interleave(per_photo)
    return torch.utils.data.TensorDataset(torch.cat(views), labels)
