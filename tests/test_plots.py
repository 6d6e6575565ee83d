"""Plot helpers: the ratio panel's axis follows the ratios it shows; the one figure writer."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pionml.figures.plots import plot_rejection_ratio  # noqa: E402
from pionml.metrics.classification import RocCurve  # noqa: E402


def curve(rejection):
    """A straight-line ROC whose pi0 rejection is the given constant over pi+- eff (0, 1)."""
    eff = np.linspace(0.0, 1.0, 101)
    return RocCurve(pipm_eff=eff, pi0_eff=eff / rejection, thresholds=eff)


def test_ratio_panel_linear_then_log():
    fig, ax = plt.subplots()
    line = plot_rejection_ratio(ax, curve(6.0), curve(2.0), "x3")
    np.testing.assert_allclose(line.get_ydata(), 3.0, rtol=1e-9)
    assert ax.get_yscale() == "linear"
    np.testing.assert_allclose(ax.get_ylim(), (0.0, 3.75))
    plot_rejection_ratio(ax, curve(80.0), curve(2.0), "x40")  # a second, much larger ratio
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_ylim(), (0.5, 50.0))
    plt.close(fig)


def test_streamed_pixel_statistics_equal_numpy():
    import numpy as np

    from pionml.metrics.images import PixelStats

    rng = np.random.default_rng(0)
    x = rng.random((301, 4, 2))
    x[:, 0, 0] = 0.5  # a pixel that never varies: correlation 0, not NaN
    y = 2 * x[:, 1, 1] + rng.normal(0, 0.1, 301)
    st = PixelStats()
    for part in np.array_split(np.arange(301), [5, 100, 101]):
        st.update({"L": x[part]}, y[part])
    np.testing.assert_allclose(st.mean("L"), x.reshape(301, -1).mean(axis=0))
    r = st.correlation("L")
    expect = [np.corrcoef(x.reshape(301, -1)[:, j], y)[0, 1] for j in range(1, 8)]
    np.testing.assert_allclose(r[1:], expect, rtol=1e-8)
    assert r[0] == 0.0 and r[3] > 0.95  # pixel (1, 1) drives y


def test_image_statistics_with_a_span_of_one_class():
    """A span of sorted rows holding one class only (the rows of one species' file) adds nothing
    to the other class's sums (it raised 'cannot reshape array of size 0' on the paper sample)."""
    import numpy as np

    from pionml.metrics.images import PixelStats, image_statistics

    rng = np.random.default_rng(1)
    n = 40
    images = {"L": rng.random((n, 2, 2)).astype(np.float32)}
    e_em = rng.uniform(1, 2, n)
    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]  # spans of 8: the first ones all pi0
    outputs = rng.random(n)

    class Block:
        def __init__(self, rows):
            self.clusters = {"E_em": e_em[rows]}
            self.images = {k: v[rows] for k, v in images.items()}

        def __len__(self):
            return len(self.clusters["E_em"])

    class Data:
        image_shapes = {"L": (2, 2)}

        def read_rows(self, rows, clusters, images):
            return Block(rows)

    stats = image_statistics(Data(), np.arange(n), labels, outputs, span_rows=8)
    whole = PixelStats()
    frac = images["L"] / e_em[:, None, None]
    whole.update({"L": frac[~labels]}, 1.0 - outputs[~labels])
    assert stats["pipm"].n == 20 and stats["pi0"].n == 20
    np.testing.assert_allclose(stats["pipm"].mean("L"), whole.mean("L"), rtol=1e-6)


def test_save_figure_writes_at_one_resolution(tmp_path):
    """A 2 x 1 inch figure filled by its axes, trimmed to its content with matplotlib's 0.1 inch
    padding, is 2.2 x 1.2 inches: 264 x 144 pixels at the writer's 120 dpi."""
    import matplotlib.image

    from pionml.figures.writer import DPI, save_figure

    fig = plt.figure(figsize=(2, 1))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(np.ones((4, 8)), aspect="auto")
    ax.set_axis_off()
    out = save_figure(fig, tmp_path / "f.png")
    assert DPI == 120 and out == tmp_path / "f.png"
    assert matplotlib.image.imread(out).shape[:2] == (144, 264)
    assert not plt.fignum_exists(fig.number)  # closed
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left


def test_save_figure_cuts_a_png_to_what_is_drawn(tmp_path):
    """A figure drawn inside its canvas is drawn once and cut to its pixels: a 1 x 0.5 inch
    image in the middle of a 2 x 1 inch figure gives 120 x 60 pixels at 120 dpi, plus matplotlib's
    0.1 inch (12 pixel) margin on each side, as matplotlib's own trimming gives."""
    import matplotlib.image

    from pionml.figures.writer import save_figure

    def figure():
        fig = plt.figure(figsize=(2, 1))
        ax = fig.add_axes([0.25, 0.25, 0.5, 0.5])
        ax.imshow(np.zeros((4, 8)), aspect="auto", cmap="gray")
        ax.set_axis_off()
        return fig

    cut = matplotlib.image.imread(save_figure(figure(), tmp_path / "cut.png"))
    assert cut.shape == (60 + 24, 120 + 24, 4)
    assert (cut[12:-12, 12:-12, :3] == 0).all()  # the black image
    assert (cut[:12, :, :3] == 1).all() and (cut[:, -12:, :3] == 1).all()  # the white margin
    figure().savefig(tmp_path / "tight.png", dpi=120, bbox_inches="tight")
    assert matplotlib.image.imread(tmp_path / "tight.png").shape == cut.shape


def test_save_figure_lets_matplotlib_trim_a_figure_drawn_past_its_edge(tmp_path):
    """A label that starts left of the canvas is not cut: the figure is trimmed by
    matplotlib's measure of its artists, which reaches beyond the canvas."""
    import matplotlib.image

    from pionml.figures.writer import save_figure

    def figure():
        fig = plt.figure(figsize=(2, 1))
        fig.text(-0.3, 0.5, "a label past the edge")
        return fig

    got = matplotlib.image.imread(save_figure(figure(), tmp_path / "f.png"))
    figure().savefig(tmp_path / "tight.png", dpi=120, bbox_inches="tight")
    want = matplotlib.image.imread(tmp_path / "tight.png")
    assert got.shape == want.shape
    assert (got[:, :30, :3] < 0.5).any()  # the start of the label, in the left 30 pixels


@pytest.mark.parametrize("inside", [True, False], ids=["cut by pionml", "trimmed by matplotlib"])
def test_save_figure_failure_keeps_the_previous_file(tmp_path, monkeypatch, inside):
    import errno

    import matplotlib.image

    from pionml.errors import OutputError
    from pionml.figures.writer import save_figure

    out = tmp_path / "f.png"
    out.write_bytes(b"previous")
    fig = plt.figure(figsize=(2, 1))
    if inside:
        fig.add_axes([0.25, 0.25, 0.5, 0.5])
    else:  # drawn to the edge of its canvas
        fig.add_axes([0, 0, 1, 1]).imshow(np.ones((4, 8)), aspect="auto")

    def half_then_full_disk(path, *a, **kw):
        open(path, "wb").write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if inside:
        monkeypatch.setattr(matplotlib.image, "imsave", half_then_full_disk)
    else:
        monkeypatch.setattr(fig, "savefig", half_then_full_disk)
    with pytest.raises(OutputError, match="f.png.*disk is full"):
        save_figure(fig, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert not plt.fignum_exists(fig.number)


def test_binned_rows_keep_resolutions_above_zero_and_mark_thin_bins():
    """One rule for every binned figure: a resolution's error bar stops at zero, a bin with
    fewer than MIN_BIN_CLUSTERS clusters is an open marker with no error bar, an empty bin is
    skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pionml.figures.plots import MIN_BIN_CLUSTERS, plot_binned_rows

    rows = [{"n": 500, "iqr_resolution": 0.10, "iqr_resolution_err": 0.02},
            {"n": 400, "iqr_resolution": 0.05, "iqr_resolution_err": 1.5},   # a wild error
            {"n": MIN_BIN_CLUSTERS - 1, "iqr_resolution": 0.30, "iqr_resolution_err": 0.9},
            {"n": 0, "iqr_resolution": None, "iqr_resolution_err": None}]
    fig, ax = plt.subplots()
    artist = plot_binned_rows(ax, [1.0, 2.0, 3.0, 4.0], rows, "iqr_resolution", "m", "C0")
    line, _, (bars,) = artist.lines
    assert list(line.get_xdata()) == [1.0, 2.0]  # the thin bin and the empty one are not joined
    segments = bars.get_segments()
    lows = [min(seg[:, 1]) for seg in segments]
    highs = [max(seg[:, 1]) for seg in segments]
    assert lows == pytest.approx([0.08, 0.0]) and highs == pytest.approx([0.12, 1.55])
    thin = [ln for ln in ax.lines if ln is not line and len(ln.get_xdata()) == 1]
    assert len(thin) == 1 and list(thin[0].get_xdata()) == [3.0]
    assert thin[0].get_markerfacecolor() == "none"
    # a median response (not a resolution) keeps its error bar as it is
    ax2 = plt.subplots()[1]
    rows2 = [{"n": 100, "median_response": 0.5, "median_response_err": 0.7}]
    _, _, (bars2,) = plot_binned_rows(ax2, [1.0], rows2, "median_response", "m", "C1").lines
    assert min(bars2.get_segments()[0][:, 1]) == pytest.approx(-0.2)
    plt.close("all")


@pytest.mark.parametrize("env,imported,want", [
    (None, False, "agg"),  # a script or the command line: files only
    ("svg", False, "svg"),  # a Jupyter kernel sets MPLBACKEND (its inline backend)
    (None, True, "pdf"),  # the caller chose a backend before pyplot: kept
])
def test_file_backend_keeps_a_backend_the_caller_chose(env, imported, want):
    import os
    import subprocess
    import sys

    code = ("import matplotlib\n"
            + ("matplotlib.use('pdf'); import matplotlib.pyplot\n" if imported else "")
            + "from pionml.figures.writer import file_backend\nfile_backend()\n"
            "print(matplotlib.get_backend().lower())")
    environ = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if env:
        environ["MPLBACKEND"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[-1] == want


def test_the_ratio_panel_shows_the_networks_and_names_the_em_scale_off_it(tmp_path, monkeypatch):
    """Resolution ratios to LCW of 0.85 (a network) and 2.0 (the EM scale): the panel spans
    the network's ratio and 1, not 0.85-2.0, and says the EM scale lies off it."""
    import pionml.figures.regression as reg

    def rows(value):
        return [{"lo": lo, "hi": 2 * lo, "n": 100, "iqr_resolution": value,
                 "iqr_resolution_err": 0.001} for lo in (1.0, 2.0, 4.0)]

    seen = {}

    def keep(fig, path):
        seen[path.name] = fig.axes[1]
        return path

    monkeypatch.setattr(reg, "save_figure", keep)
    curves = [("net", rows(0.085), "C0", "o"), ("EM scale", rows(0.2), "k", "s"),
              ("LCW", rows(0.1), "grey", "D")]
    reg.draw_method_curves(tmp_path, curves, rows(0.1), "t", keys=["iqr_resolution"])
    rax = seen["iqr_resolution.png"]
    lo, hi = rax.get_ylim()
    assert 0.8 < lo < 0.85 and 1.0 < hi < 1.05
    assert any("EM scale off the panel (2.00-2.00)" in t.get_text() for t in rax.texts)
    plt.close("all")


def test_a_pull_panel_spans_its_histogram():
    """The pull histogram covers |t| < 6 (the tails in its end bins): the axis shows that
    range, not one a style rounds outwards."""
    import matplotlib.pyplot as plt
    import mplhep

    from pionml.figures.calibration import plot_pulls

    t = np.random.default_rng(1).normal(0, 1, 500)
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots(figsize=(3, 2.5))  # a panel of the per-bin grids: few ticks
        plot_pulls(ax, t, {"fit": {}}, "m", "t")
        fig.canvas.draw()
        assert ax.get_xlim() == (-6.0, 6.0)
    plt.close(fig)
