"""One look for every kimiplan figure: the `kimiplan` plotly template (white, one colour order, readable fonts),
and how figures show in notebooks (interactive in Jupyter, a static image everywhere else)."""

from __future__ import annotations

import copy

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE_NAME = "kimiplan"
COLORWAY = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6"]
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"


def _template() -> go.layout.Template:
    t = copy.deepcopy(pio.templates["plotly_white"])
    t.layout.colorway = COLORWAY
    t.layout.font = {"family": FONT, "size": 13, "color": "#222"}
    t.layout.title = {"x": 0.0, "xanchor": "left", "y": 0.98, "yanchor": "top", "font": {"size": 16}}
    t.layout.margin = {"l": 60, "r": 30, "t": 90, "b": 50}
    t.layout.legend = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "bgcolor": "rgba(255,255,255,0)"}
    t.layout.hoverlabel = {"font": {"family": FONT}}
    t.layout.separators = ".,"  # 4,075.49
    # Plain numbers on axes (0.0001, not 100µ: a probability is not a micro-anything).
    t.layout.xaxis.exponentformat = "none"
    t.layout.yaxis.exponentformat = "none"
    t.layout.xaxis.separatethousands = True
    t.layout.yaxis.separatethousands = True
    return t


def register() -> str:
    """Register the template (idempotent) and return its name."""
    if TEMPLATE_NAME not in pio.templates:
        pio.templates[TEMPLATE_NAME] = _template()
    return TEMPLATE_NAME


def styled(fig: go.Figure) -> go.Figure:
    """The figure in the kimiplan template (in place; returned for chaining)."""
    fig.update_layout(template=register())
    return fig


def static_images_available() -> bool:
    """Whether kaleido can render a figure to PNG here (it needs a Chromium; see the README)."""
    try:
        import kaleido  # noqa: F401

        go.Figure().to_image(format="png", width=10, height=10)
    except Exception:  # no kaleido, no Chromium, or a browser that does not start: fall back to interactive
        return False
    return True


def setup_notebook(static: bool = True) -> str:
    """Call once at the top of a notebook: the kimiplan template for every figure, and figures that show
    everywhere. With `static`, each figure carries both the interactive plotly output (JupyterLab and VS Code
    render it) and a PNG made by kaleido (nbconvert HTML, GitHub and offline viewers show that). kaleido needs
    a Chromium (README, "Static figures"); without one the figures stay interactive only. Returns what it chose."""
    pio.templates.default = register()
    if static and static_images_available():
        import atexit
        import warnings

        import kaleido

        # One browser for the whole notebook instead of one per figure (seconds each).
        warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        pio.renderers.default = "plotly_mimetype+png"
        png = pio.renderers["png"]
        png.width, png.height, png.scale = 900, None, 1  # height: the figure's own (some are tall)
        return "figures: interactive (plotly) + static PNG (kaleido)"
    pio.renderers.default = "plotly_mimetype+notebook" if static else "plotly_mimetype"
    return "figures: interactive only (plotly.js embedded; install kaleido and a Chromium for static images)"
