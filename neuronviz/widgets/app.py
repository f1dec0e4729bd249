"""App: the neuron explorer, PCACE and guided feature inversion of one model as tabs, and ``app()``."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.errors import NeuronvizError
from .colab import enable_colab_widgets
from .explorer import NeuronExplorer, _check_int
from .inversion_view import InversionView
from .legacy_panels import BackgroundView
from .pcace_view import PCACEView

__all__ = ["App", "app", "TABS"]

#: The tabs of an :class:`App`, in order.
TABS = ("explorer", "pcace", "inversion")
_TITLES = {"explorer": NeuronExplorer.title, "pcace": PCACEView.title, "inversion": InversionView.title}


class App(W.Tab):
    """The neuron explorer, PCACE and guided feature inversion of one model and image, as tabs.

    Tab "Neurons" is a :class:`NeuronExplorer` of the image, "PCACE" a :class:`PCACEView` of a
    set of images of its class, "Inversion" an :class:`InversionView` of the image. With
    ``lazy=True`` a tab's view is built (and its first run started) when the tab is first
    shown, so the explorer appears at once. Runs of the three views take turns on the model
    (one thread at a time runs it), so the model is never run by two of them at once.

    Python interface
    ----------------
    explorer, pcace, inversion
        The views (accessing one builds it if its tab was not shown yet).
    views : dict of str to BackgroundView
        The views built so far, by tab name (:data:`TABS`).
    tab : str
        The tab shown; settable (``app.tab = "pcace"``).
    wait(timeout=None)
        Block until every built view's run ended.
    close()
        Stop every view's worker and close the widgets.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores; left exactly as it was.
    image : torch.Tensor or PIL.Image.Image or numpy.ndarray
        The image, normalised as the model expects ((1, C, H, W) or (C, H, W)); or a photo (a
        PIL image or a uint8 (H, W, 3) array), which is then prepared with
        :func:`neuronviz.preprocess` (the default model's normalisation).
    images : torch.Tensor, optional
        (N, C, H, W) images of the image's class for PCACE (at least 20). Default, for a photo:
        ``nv.augment(photo, n_images, seed=seed)``, random views of it; for a tensor image the
        PCACE tab asks for them.
    n_images : int
        Views of the photo made for PCACE when ``images`` is not given.
    seed : int
        Seed of those views.
    target : int, optional
        The class all three views explain at first; default each view's own (the prediction).
    lazy : bool
        Build a tab's view when the tab is first shown (True), or all at once.
    explorer, pcace, inversion : dict, optional
        Keyword arguments of :class:`NeuronExplorer`, :class:`PCACEView` and
        :class:`InversionView` (e.g. ``explorer={"n_samples": 32}``,
        ``inversion={"stage2_steps": 30}``).

    Raises
    ------
    NeuronvizError
        A bad image, ``n_images``, ``seed`` or options; errors of a lazily built view are shown
        in its tab when it is opened (and raised by the property that builds it).
    """

    def __init__(
        self,
        model: nn.Module,
        image: Any,
        images: torch.Tensor | None = None,
        *,
        n_images: int = 40,
        seed: int = 0,
        target: int | None = None,
        lazy: bool = True,
        explorer: dict | None = None,
        pcace: dict | None = None,
        inversion: dict | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        n_images = _check_int("n_images", n_images, 1)
        seed = _check_int("seed", seed, 0, 2**31 - 1)
        options = {"explorer": explorer, "pcace": pcace, "inversion": inversion}
        for name, value in options.items():
            if value is not None and not isinstance(value, dict):
                raise NeuronvizError(f"{name}= must be a dict of keyword arguments of its view, got {value!r}")
        self._photo = None
        if isinstance(image, (Image.Image, np.ndarray)):
            from ..data import preprocess

            self._photo = image
            x = preprocess(image)
        elif isinstance(image, torch.Tensor):
            x = image
        else:
            raise NeuronvizError(
                f"image must be a tensor as the model takes it, or a photo (PIL image or uint8 array), "
                f"got {type(image).__name__}"
            )
        super().__init__()
        enable_colab_widgets()
        self.add_class("nv-app")
        self.model, self.x, self._images = model, x, images
        self._n_images, self._seed, self._target = n_images, seed, target
        self._options = {name: dict(value or {}) for name, value in options.items()}
        self._views: dict[str, BackgroundView] = {}
        self._errors: dict[str, BaseException] = {}
        self._slots = {name: W.VBox([W.HTML(f"<i>{_TITLES[name]}: opens when this tab is shown</i>")])
                       for name in TABS}
        for name, slot in self._slots.items():
            slot.add_class(f"nv-tab-{name}")
        self.children = [self._slots[name] for name in TABS]
        self.titles = [_TITLES[name] for name in TABS]
        self.selected_index = 0
        self.observe(self._tab_changed, names="selected_index")
        self._build("explorer", raise_errors=True)  # the first tab: a bad argument fails here, at once
        if not lazy:
            for name in TABS[1:]:
                self._build(name)

    # ------------------------------------------------------------------ views

    @property
    def explorer(self) -> NeuronExplorer:
        """The neuron explorer (tab "Neurons")."""
        return self._build("explorer", raise_errors=True)

    @property
    def pcace(self) -> PCACEView:
        """The PCACE view (tab "PCACE"); built now if its tab was not shown yet."""
        return self._build("pcace", raise_errors=True)

    @property
    def inversion(self) -> InversionView:
        """The inversion view (tab "Inversion"); built now if its tab was not shown yet."""
        return self._build("inversion", raise_errors=True)

    @property
    def views(self) -> dict[str, BackgroundView]:
        """The views built so far, by tab name."""
        return dict(self._views)

    @property
    def tab(self) -> str:
        """The name of the tab shown (one of :data:`TABS`); settable."""
        return TABS[self.selected_index or 0]

    @tab.setter
    def tab(self, name: str) -> None:
        if name not in TABS:
            raise NeuronvizError(f"tab must be one of {TABS}, got {name!r}")
        self.selected_index = TABS.index(name)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run of every view built so far ended (``TimeoutError`` after ``timeout`` s each)."""
        for view in list(self._views.values()):
            view.wait(timeout)

    def close(self) -> None:
        """Stop the views' workers and close the widgets."""
        for view in list(getattr(self, "_views", {}).values()):
            view.close()
        super().close()

    # ------------------------------------------------------------------ internals

    def _tab_changed(self, change: dict) -> None:
        index = change["new"]
        if index is not None and 0 <= index < len(TABS):
            self._build(TABS[index])

    def _build(self, name: str, raise_errors: bool = False) -> Any:
        view = self._views.get(name)
        if view is not None:
            return view
        if name in self._errors:
            if raise_errors:
                raise self._errors[name]
            return None
        slot = self._slots[name]
        slot.children = [W.HTML(f"<i>{_TITLES[name]}: preparing…</i>")]
        try:
            view = self._make(name)
        except Exception as err:  # noqa: BLE001 - shown in the tab; raised by the property that asked
            self._errors[name] = err
            slot.children = [_error_box(f"{_TITLES[name]} could not start: {type(err).__name__}: {err}")]
            if raise_errors:
                raise
            return None
        self._views[name] = view
        slot.children = [view]
        return view

    def _make(self, name: str) -> BackgroundView:
        kwargs = dict(self._options[name])
        if self._target is not None:
            kwargs.setdefault("target", self._target)
        model, x = self.model, self.x
        if name == "explorer":
            return NeuronExplorer(model, x, **kwargs)
        if name == "inversion":
            return InversionView(model, x, **kwargs)
        images = self._images
        if images is None:
            if self._photo is None:
                raise NeuronvizError(
                    "PCACE ranks channels over a set of images: pass images= (N, C, H, W), e.g. "
                    "nv.augment(photo, 48) for views of one photo, or give the App the photo itself"
                )
            from ..data import augment

            images = self._images = augment(self._photo, self._n_images, seed=self._seed)
        return PCACEView(model, images, **kwargs)

    def __repr__(self) -> str:
        built = {name: view.status for name, view in self._views.items()}
        return f"App(tab={self.tab!r}, views={built})"


def _error_box(message: str) -> W.HTML:
    box = W.HTML(
        '<div style="color:#a40000;background:#fff0f0;border:1px solid #e0b4b4;padding:4px 8px;'
        f'white-space:pre-wrap;font-family:monospace;font-size:12px">{html.escape(message)}</div>'
    )
    box.add_class("nv-error")
    return box


def app(image: str = "cat", *, n_images: int = 40, **kwargs: Any) -> App:
    """An :class:`App` on the default model (EfficientNet-Lite0) and a bundled photo: the demo of all three views.

    Parameters
    ----------
    image : str
        A bundled photo (``nv.sample_image_names()``); the cat by default.
    n_images : int
        Random views of the photo that PCACE ranks the channels over (``nv.augment``).
    **kwargs
        Passed to :class:`App` (``lazy``, ``target``, ``explorer={...}``, ``pcace={...}``,
        ``inversion={...}``).

    Returns
    -------
    App
        Displays itself; the explorer's first run starts at once, the other tabs' when shown.
    """
    from ..data import sample_image
    from ..models import default_model

    return App(default_model(), sample_image(image), n_images=n_images, **kwargs)
