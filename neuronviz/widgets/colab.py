"""Google Colab shows third-party widgets (bqplot) only after its custom widget manager is enabled."""

from __future__ import annotations

import sys

__all__ = ["enable_colab_widgets"]

_done = False


def enable_colab_widgets() -> bool:
    """Enable Colab's custom widget manager once, when running in Google Colab.

    Does nothing elsewhere, and never raises: a failure only means the widgets may not render.

    Returns
    -------
    bool
        Whether it was enabled by this call.
    """
    global _done
    if _done or "google.colab" not in sys.modules:
        return False
    _done = True
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except Exception:  # noqa: BLE001 - an old Colab without the call still shows the core widgets
        return False
    return True
