"""The one figure writer: the style, the resolution, the experiment label and the axis labels
every pionml figure shares, and the save that every figure goes through.

- :func:`use_atlas_style`: the entry point (a command) sets mplhep's ATLAS style once; library
  functions never change the style.
- :func:`experiment_label`: the label that names who made a plot (pionml, simulation).
- :data:`AXIS_LABELS`: the axis labels of the quantities drawn by several figures.
- :func:`save_figure`: a PNG at :data:`DPI`, trimmed to its content, written to a temporary file
  in the target's folder and renamed onto it (``os.replace``) only when complete, so that an
  interrupted or failed save never leaves a truncated figure; the figure is closed.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Resolution of every figure (dots per inch).
DPI = 120

#: Axis labels of the quantities several figures draw.
AXIS_LABELS = {
    "E_true": r"$E_{true}$ = ENG_CALIB_TOT [GeV]",
    "E_dep": r"$E_{dep}$ = ENG_CALIB_TOT [GeV]",
    "E_em": r"$E_{EM}$ [GeV]",
    "E_em_cluster": r"cluster energy at EM scale $E^{EM}_{clus}$ [GeV]",
    "eta": r"$\eta$",
    "response": r"response $E/E_{true}$",
    "pipm_eff": r"$\pi^{\pm}$ efficiency",
    "pi0_rejection": r"$\pi^{0}$ rejection",
}


def file_backend() -> None:
    """Figures are written to files: the Agg backend, unless a backend is chosen already (the
    ``MPLBACKEND`` of a Jupyter kernel, which shows figures inline, or pyplot imported by the
    caller): a notebook that calls pionml keeps its own backend and ``plt.show()``."""
    import os
    import sys

    if os.environ.get("MPLBACKEND") or "matplotlib.pyplot" in sys.modules:
        return
    import matplotlib

    matplotlib.use("Agg")


def use_atlas_style() -> None:
    """The entry point sets the plot style once (mplhep's ATLAS style), on the Agg backend
    (:func:`file_backend`)."""
    file_backend()
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ATLAS)


def experiment_label(ax, text: str = "") -> None:
    """ATLAS plot style, but the label names who made the plot: pionml, not the ATLAS
    collaboration (an "ATLAS Internal" label would claim an approval these plots never had);
    ``text``: the sample description under it."""
    try:
        import mplhep

        mplhep.label.exp_text("pionml", "Simulation", ax=ax, loc=1)
    except Exception:  # a label is decoration: never fail a plot for it
        pass
    if text:
        ax.text(0.04, 0.88, text, transform=ax.transAxes, fontsize="x-small", va="top")


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix, PNG by default) at :data:`DPI`,
    trimmed to its content, through a temporary file renamed onto ``path`` on success; the
    figure is closed in every case. A failed write (full disk, ...) is one
    :class:`~pionml.errors.OutputError` naming ``path``, whose previous content is kept.
    Returns ``path``.

    A PNG is drawn once and cut to its artists' box (:func:`_trimmed_png`); matplotlib's own
    trimming (``bbox_inches="tight"``: other formats, and a figure drawn past its edges)
    draws the figure twice, the first time to measure it."""
    import matplotlib.pyplot as plt

    from pionml.io import remove_quietly, temp_path, write_error

    path = Path(path)
    tmp = temp_path(path)
    fmt = path.suffix.lstrip(".") or "png"
    try:
        if fmt.lower() != "png" or not _trimmed_png(fig, tmp):
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=fmt)
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise write_error(path, exc) from exc
    except BaseException:
        remove_quietly(tmp)
        raise
    finally:
        plt.close(fig)
    return path


def _trimmed_png(fig, path) -> bool:
    """Draw ``fig`` once at :data:`DPI` and write, as a PNG at ``path``, the part of the drawing
    that ``bbox_inches="tight"`` keeps: the box of the figure's artists as matplotlib measures
    it (``Figure.get_tightbbox``, cheap once drawn), with matplotlib's margin
    (``savefig.pad_inches``, drawn in the background colour where it passes the canvas). False,
    with nothing written, when the artists reach beyond the canvas (only a second drawing on a
    larger canvas shows them) or there are none."""
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.image import imsave

    fig.set_dpi(DPI)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    box = fig.get_tightbbox(canvas.get_renderer())  # inches
    width, height = fig.get_size_inches()
    if box is None or box.width <= 0 or box.height <= 0:
        return False
    edge = 0.5 / DPI  # half a pixel
    if box.x0 < -edge or box.y0 < -edge or box.x1 > width + edge or box.y1 > height + edge:
        return False
    pad = float(matplotlib.rcParams["savefig.pad_inches"])
    rgba = np.asarray(canvas.buffer_rgba())
    n_rows, n_cols = rgba.shape[:2]
    # pixel edges of the padded box; rows count from the top
    c0, c1 = round((box.x0 - pad) * DPI), round((box.x1 + pad) * DPI)
    r0, r1 = round((height - box.y1 - pad) * DPI), round((height - box.y0 + pad) * DPI)
    cut = rgba[max(r0, 0):min(r1, n_rows), max(c0, 0):min(c1, n_cols)]
    background = np.round(np.asarray(to_rgba(fig.get_facecolor())) * 255).astype(np.uint8)
    margins = ((max(-r0, 0), max(r1 - n_rows, 0)), (max(-c0, 0), max(c1 - n_cols, 0)))
    if any(any(m) for m in margins):
        out = np.empty((r1 - r0, c1 - c0, 4), dtype=np.uint8)
        out[...] = background
        out[margins[0][0]:margins[0][0] + cut.shape[0],
            margins[1][0]:margins[1][0] + cut.shape[1]] = cut
        cut = out
    imsave(path, cut, format="png", dpi=DPI)
    return True
