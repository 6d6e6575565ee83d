"""``pionml learning-curve``: nested training subsets, the same validation and test rows at every
size, a JSON with every (model, size), resuming without training done pairs again, and one
line with exit 2 for bad arguments. A fake dataset of 600 clusters, a dnn of one epoch and the
bdt."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.errors import ConfigError
from pionml.studies import learning_curve as lc
from pionml.testing.fake_dataset import blur_label_moments, make_fake_dataset
from pionml.tasks import make_task

ARGS = ["--model", "dnn", "--epochs", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("quick_bdt")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake dataset whose classes overlap, for the moments too (its two label-tied moments
    blurred), so that no model is perfect on the 114 test clusters: every rejection is finite."""
    return blur_label_moments(make_fake_dataset(tmp_path_factory.mktemp("lc") / "fake.h5",
                                                n_clusters=600, seed=3, separation=0.3))


class Spy:
    """Records the rows of every source a training builds, and the calls of train_run."""

    def __init__(self, monkeypatch):
        import pionml.data.sources as sources
        import pionml.train.trainer as trainer

        self.sources, self.trainings = [], []
        real_source, real_train = sources.make_source, trainer.train_run

        def make_source(path, rows, builder, config, what="", **kw):
            self.sources.append((what, config.train_size, np.asarray(rows).copy()))
            return real_source(path, rows, builder, config, what=what, **kw)

        def train_run(data, model, out, **kw):
            self.trainings.append((model, out.name, kw.get("resume", False)))
            return real_train(data, model, out, **kw)

        monkeypatch.setattr(sources, "make_source", make_source)
        monkeypatch.setattr(trainer, "train_run", train_run)

    def rows(self, what):
        return {size: rows for w, size, rows in self.sources if w == what}


@pytest.fixture(scope="module")
def first(fake, tmp_path_factory):
    """A learning curve at 60 and 150 clusters, with what its trainings read."""
    mp = pytest.MonkeyPatch()
    spy = Spy(mp)
    out = tmp_path_factory.mktemp("lc") / "curve"
    try:
        assert main(["learning-curve", *ARGS, "--sizes", "60", "150", "--data", str(fake),
                     "--out", str(out)]) == 0
    finally:
        mp.undo()
    return out, spy


def _doc(out):
    return json.loads((out / lc.JSON_FILE).read_text())


def test_subsets_are_nested_and_the_evaluation_rows_the_same(fake, first):
    out, spy = first
    with h5py.File(fake) as f:
        split = f["clusters/split"][:]
    all_train = np.flatnonzero(split == 0)
    train, val = spy.rows("train"), spy.rows("validation")
    assert sorted(train) == [60, 150]
    r60, r150 = train[60], train[150]
    assert len(r60) == 60 and len(r150) == 150 and len(np.unique(r150)) == 150
    assert np.isin(r60, r150).all()  # the smaller subset inside the larger
    assert np.isin(r150, all_train).all()  # training rows only
    # the validation rows: the whole validation split, the same for every size
    assert np.array_equal(val[60], val[150]) and np.array_equal(val[60], np.flatnonzero(split == 1))
    # the subsets are the library's, and the bdt trained on the same rows as the dnn
    assert np.array_equal(lc.training_rows(fake, "classify", 150), r150)
    doc = _doc(out)
    for size in (60, 150):
        assert doc["runs"][f"dnn_{size}"]["train_rows"] == doc["runs"][f"bdt_{size}"]["train_rows"]
        assert doc["runs"][f"dnn_{size}"]["train_rows"] == lc._rows_digest(train[size])
    # one set of test rows for every entry: the whole test split
    assert {e["test_rows"] for e in doc["runs"].values()} == {
        lc._rows_digest(np.flatnonzero(split == 2))}
    # each run folder records its subset
    data_json = json.loads((out / "runs" / "dnn_60" / "data.json").read_text())
    assert data_json["train_size"] == 60 and data_json["train_subset_seed"] == 0


def test_the_json_holds_every_pair_with_finite_metrics(first):
    out, _ = first
    doc = _doc(out)
    assert doc["task"] == "classify" and set(doc["runs"]) == {"dnn_60", "dnn_150", "bdt_60",
                                                              "bdt_150"}
    for entry in [*doc["runs"].values(), doc["baselines"]["pem"]]:
        m = entry.get("metrics", entry)
        for key in make_task("classify").score_keys:
            for k in (key, f"{key}_err"):
                assert m[k] is not None and np.isfinite(float(m[k])), (entry, k)
        assert 0 <= m["auc"] <= 1 and m["rejection_at_eff95"] <= m["rejection_at_eff90"]
    for e in doc["runs"].values():
        assert e["n_train"] == e["size"] and e["train_seconds"] > 0
    assert doc["runs"]["dnn_60"]["epochs"] == 1
    for metric in (*make_task("classify").score_keys, "train_seconds"):
        assert (out / f"learning_curve_{metric}.png").stat().st_size > 0
    assert not list(out.glob("*.tmp*"))


def test_the_size_axis_keeps_the_largest_size_inside_the_frame(first, monkeypatch):
    """Under the ATLAS style (limits rounded to decades) a largest size of 100,000 sat on the
    frame's edge; every figure's size axis now reaches a factor SIZE_MARGIN beyond the sizes."""
    import matplotlib
    import matplotlib.pyplot as plt
    import mplhep

    from pionml.figures import writer

    with matplotlib.rc_context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        ax.plot([30000, 100000], [1, 2], "o")
        ax.set_xscale("log")
        assert ax.get_xlim()[1] == pytest.approx(1e5)  # the style's own limit: on the edge
        lc.size_axis(ax, [30000, 100000])
        assert ax.get_xlim() == pytest.approx((30000 / lc.SIZE_MARGIN, 1e5 * lc.SIZE_MARGIN))
        # ticked at the sizes, no minor tick labels (they overlapped under a decade)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["30k", "100k"]
        assert ax.xaxis.get_minorticklocs().size == 0
        plt.close(fig)
        fig, ax = plt.subplots()
        lc.size_axis(ax, [2000, 459281, 1500000, 500])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["500", "2k", "459k", "1.5M"]
        plt.close(fig)
        limits = []  # every axis the study's figures draw, as they are saved
        real = writer.save_figure

        def spy(fig, path, *a, **k):
            limits.extend(ax.get_xlim() for ax in fig.axes if ax.get_visible())
            return real(fig, path, *a, **k)

        monkeypatch.setattr(writer, "save_figure", spy)
        out, _ = first
        lc.draw(out, _doc(out))
    assert limits and all(lim == pytest.approx((60 / lc.SIZE_MARGIN, 150 * lc.SIZE_MARGIN))
                          for lim in limits)


def test_resume_trains_only_what_is_not_done(fake, first, monkeypatch):
    out, _ = first
    before = _doc(out)
    spy = Spy(monkeypatch)
    args = ["learning-curve", *ARGS, "--data", str(fake), "--out", str(out)]
    # a larger size: only its two runs are trained
    assert main([*args, "--sizes", "60", "150", "all"]) == 0
    assert spy.trainings == [("dnn", "dnn_372", False), ("bdt", "bdt_372", False)]
    doc = _doc(out)
    assert len(doc["runs"]) == 6 and doc["runs"]["dnn_60"] == before["runs"]["dnn_60"]
    # the same command again: nothing trained
    spy.trainings.clear()
    assert main([*args, "--sizes", "60", "150", "all"]) == 0
    assert spy.trainings == []
    # a run killed after its checkpoint (no card, no entry) is continued; one killed before
    # any checkpoint is started again; a run with a card but no entry is only evaluated
    (out / "runs" / "dnn_150" / "card.json").unlink()
    (out / "runs" / "bdt_150" / "card.json").unlink()
    for key in ("dnn_150", "bdt_150", "dnn_60"):
        del doc["runs"][key]
    (out / lc.JSON_FILE).write_text(json.dumps(doc))
    assert main([*args, "--sizes", "60", "150", "all"]) == 0
    assert spy.trainings == [("dnn", "dnn_150", True), ("bdt", "bdt_150", False)]
    again = _doc(out)
    assert set(again["runs"]) == set(before["runs"]) | {"dnn_372", "bdt_372"}
    for key in ("dnn_150", "dnn_60"):  # the same weights, the same numbers
        assert again["runs"][key]["metrics"] == before["runs"][key]["metrics"]
    assert again["runs"]["dnn_150"]["resumed"] is True


def test_other_settings_in_the_same_folder_are_refused(fake, first):
    out, _ = first
    with pytest.raises(ConfigError, match="other seed"):
        lc.LearningCurve(fake, out, lc.CurveSettings(models=["dnn"], seed=7)).run([60])


@pytest.mark.parametrize("args, words", [
    (["--model", "resnet", "--sizes", "60"], ["unknown model 'resnet'", "choices:", "cnn", "pfn"]),
    (["--model", "pem", "--sizes", "60"], ["pem", "baseline"]),
    (["--model", "dnn", "--sizes", "150", "60"], ["--sizes must increase", "60 after 150"]),
    (["--model", "dnn", "--sizes", "60", "60"], ["--sizes", "60 is given twice"]),
    (["--model", "dnn", "--sizes", "60", "5000"], ["5000 is larger than the training split",
                                                     "372"]),
    (["--model", "dnn", "--sizes", "all", "60"], ["'all'", "last"]),
    (["--model", "dnn", "--sizes", "-3"], ["--sizes", ">= 1"]),
    (["--model", "dnn", "--sizes", "60", "--data", "missing.h5"], ["--data", "missing.h5",
                                                                     "does not exist"]),
    (["--task", "calibrate", "--model", "dnn", "--sizes", "60"], ["--task",
                                                                  "classify, joint or regress"]),
    (["--model", "dnn", "--sizes", "60", "--val-size", "0"], ["--val-size", ">= 1"]),
    (["--model", "dnn", "--sizes", "60", "--val-size", "5000"], ["--val-size", "5000",
                                                                   "validation split"]),
])
def test_bad_arguments_are_one_line_and_exit_2(fake, tmp_path, capsys, args, words):
    argv = ["learning-curve", *args, "--out", str(tmp_path / "o")]
    if "--data" not in args:
        argv += ["--data", str(fake)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "error" in err[0], err
    for w in words:
        assert w in err[0], err[0]
    assert not (tmp_path / "o").exists()  # nothing written


def test_the_command_line_exit_code(fake, tmp_path):
    """The real process: no --data is one line, exit 2, no traceback."""
    res = subprocess.run([sys.executable, "-m", "pionml.cli", "learning-curve", "--model", "dnn",
                          "--sizes", "10", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "--data" in res.stderr


def test_subset_rows_and_the_data_option():
    from pionml.data.sources import DataConfig, subset_rows

    rows = np.arange(1000, 1300) * 3
    for seed in (0, 5):
        a, b = subset_rows(rows, 40, seed), subset_rows(rows, 120, seed)
        assert len(np.unique(a)) == 40 and np.isin(a, b).all() and np.isin(b, rows).all()
        assert np.array_equal(a, np.sort(a))
    assert not np.array_equal(subset_rows(rows, 40, 0), subset_rows(rows, 40, 5))
    assert np.array_equal(subset_rows(rows, 300, 1), rows)
    assert np.array_equal(DataConfig().train_rows(rows), rows)  # no option: every row
    assert np.array_equal(DataConfig(train_size=40, train_subset_seed=5).train_rows(rows),
                          subset_rows(rows, 40, 5))
    with pytest.raises(ConfigError, match="train_size 301 is larger than the training split"):
        DataConfig(train_size=301).train_rows(rows, "dataset 'x.h5'")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="train_size must be an integer"):
            DataConfig(train_size=bad)
    # an older run's data.json, without the option, still loads
    assert DataConfig.from_dict({"knn_k": 3}).train_size is None


def test_regressors_with_a_sigma_get_its_curve(fake, tmp_path):
    """A mixture-head regressor's entries carry the median relative sigmas and the pull
    coverage, overall and per E_true bin, and the study draws them against the size."""
    out = tmp_path / "sigma"
    assert main(["learning-curve", "--task", "regress", "--head", "mixture", "--target",
                 "energy", *ARGS, "--sizes", "60", "120", "--data", str(fake), "--out",
                 str(out)]) == 0
    doc = _doc(out)
    for key in ("dnn_60", "dnn_120"):
        u = doc["runs"][key]["metrics"]["uncertainty"]
        assert 0 < u["median_sigma_syst_rel"] < np.inf
        assert u["median_sigma_stat_rel"] == 0  # one network: no spread of members
        assert 0 <= u["coverage_1"] <= u["coverage_2"] <= 1
        n = doc["runs"][key]["metrics"]["n_clusters"]
        assert sum(b["n"] for b in u["bins_E_true"]) <= n
        # a mixture head has a predictive distribution: its PIT pulls' coverage is kept too
        assert 0 <= u["coverage_1_pit"] <= u["coverage_2_pit"] <= 1
        assert all("coverage_1_pit" in b for b in u["bins_E_true"])
    assert "uncertainty" not in doc["runs"]["bdt_60"]["metrics"]  # the bdt has no sigma
    assert (out / "learning_curve_uncertainty.png").is_file()
    assert not (out / "learning_curve_sigma_stat_bins.png").exists()  # one network: no spread
    assert lc.uncertainty_summary({"E_pred": np.ones(3), "E_true": np.ones(3)}) is None


def test_uncertainty_summary_known_pulls():
    """Hand-made pulls: the linearised t and the PIT pulls' coverages come out exactly, over
    all clusters and in the one E_true bin they fill; without t_pit there is no PIT entry."""
    t_lin = np.r_[np.full(50, 0.5), np.full(40, -1.5), np.full(10, 3.0)]   # 0.5 / 0.9
    t_pit = np.r_[np.full(60, -0.2), np.full(30, 1.5), np.full(10, -2.5)]  # 0.6 / 0.9
    e_true = np.full(100, 20.0)  # all in the 10-30 GeV bin
    table = {"E_true": e_true, "E_pred": e_true + 2.0 * t_lin, "sigma": np.full(100, 2.0),
             "sigma_stat": np.full(100, 0.2), "sigma_syst": np.full(100, 1.99),
             "t_pit": t_pit}
    u = lc.uncertainty_summary(table)
    assert u["coverage_1"] == pytest.approx(0.5) and u["coverage_2"] == pytest.approx(0.9)
    assert u["coverage_1_pit"] == pytest.approx(0.6) and u["coverage_2_pit"] == pytest.approx(0.9)
    (full,) = [b for b in u["bins_E_true"] if b["n"]]
    assert (full["lo"], full["hi"], full["n"]) == (10.0, 30.0, 100)
    assert full["coverage_1"] == pytest.approx(0.5)
    assert full["coverage_1_pit"] == pytest.approx(0.6)
    assert u["median_sigma_stat_rel"] == pytest.approx(0.2 / 21.0)  # E_pred 17, 21 (median), 26
    del table["t_pit"]
    u = lc.uncertainty_summary(table)
    assert "coverage_1_pit" not in u and "fit_pit" not in u
    assert all("coverage_1_pit" not in b for b in u["bins_E_true"])


def test_sigma_stat_by_bin_known_series():
    """Per E_true bin, the members' spread against the size: bins with a positive median in
    order of the entries; empty bins, missing or zero values (one network) left out."""
    def entry(size, values, ns=(5, 5, 0)):
        bins = [{"lo": lo, "hi": hi, "n": n, "median_sigma_stat_rel": v}
                for (lo, hi), n, v in zip(((1.0, 3.0), (3.0, 10.0), (10.0, 30.0)), ns, values)]
        return size, {"uncertainty": {"bins_E_true": bins}}

    series = lc.sigma_stat_by_bin([entry(10, [0.02, 0.0, 0.5]), entry(30, [0.01, 0.004, None]),
                                   entry(100, [0.005, float("nan"), 0.1], ns=(5, 5, 7))])
    assert series == {"1-3": ([10, 30, 100], [0.02, 0.01, 0.005]), "3-10": ([30], [0.004]),
                      "10-30": ([100], [0.1])}
    assert lc.sigma_stat_by_bin([entry(10, [0.0, 0.0, 0.0])]) == {}


def test_an_ensemble_gets_its_spread_per_bin(fake, tmp_path):
    """An ensemble of two: its members disagree (sigma_stat > 0), and the study draws that
    spread per E_true bin against the size beside the uncertainty figure."""
    out = tmp_path / "ens"
    assert main(["learning-curve", "--task", "regress", "--ensemble", "2", "--target", "energy",
                 *ARGS, "--sizes", "60", "120", "--data", str(fake), "--out", str(out)]) == 0
    doc = _doc(out)
    for key in ("dnn_60", "dnn_120"):
        u = doc["runs"][key]["metrics"]["uncertainty"]
        assert u["median_sigma_stat_rel"] > 0
        assert lc.sigma_stat_by_bin([(60, doc["runs"][key]["metrics"])])
    assert (out / "learning_curve_uncertainty.png").is_file()
    assert (out / "learning_curve_sigma_stat_bins.png").is_file()


def test_a_validation_subset_is_the_same_for_every_training(fake, tmp_path, monkeypatch):
    """--val-size: every training validates on the same seeded subset of that many validation
    clusters; the test rows stay the whole split; another --val-size in the folder is refused."""
    spy = Spy(monkeypatch)
    out = tmp_path / "val"
    assert main(["learning-curve", *ARGS, "--sizes", "60", "120", "--val-size", "40",
                 "--data", str(fake), "--out", str(out)]) == 0
    val = [rows for what, _, rows in spy.sources if what == "validation"]
    assert len(val) == 2 and all(np.array_equal(v, val[0]) for v in val)  # the dnn at 2 sizes
    whole = lc.split_rows(fake, "classify")
    assert len(val[0]) == 40 and np.isin(val[0], whole["val"]).all()
    doc = _doc(out)
    assert all(e["n_val"] == 40 for e in doc["runs"].values())
    assert doc["val_size"] == 40 and doc["splits"]["val"]["n"] == 40
    assert {e["metrics"]["n_clusters"] for e in doc["runs"].values()} == {len(whole["test"])}
    settings = lc.CurveSettings(models=["dnn"], val_size=50)
    with pytest.raises(ConfigError, match="val_size"):
        lc.LearningCurve(fake, out, settings).run([60])


def test_a_scheduler_reaches_the_networks_and_is_recorded(fake, tmp_path):
    """--scheduler: the networks train with it (their run's config), the bdt keeps its own
    defaults, and the study records it, so resuming with another schedule is refused."""
    out = tmp_path / "cos"
    assert main(["learning-curve", *ARGS, "--sizes", "60", "--scheduler", "cosine",
                 "--data", str(fake), "--out", str(out)]) == 0
    doc = _doc(out)
    assert doc["train_options"]["scheduler"] == "cosine"
    configs = {m: (out / "runs" / f"{m}_60" / "config.toml").read_text() for m in ("dnn", "bdt")}
    assert 'scheduler = "cosine"' in configs["dnn"]
    assert 'scheduler = "cosine"' not in configs["bdt"]
    with pytest.raises(ConfigError, match="train_options"):
        lc.LearningCurve(fake, out, lc.CurveSettings(
            models=["dnn"], train_options={"epochs": 1, "scheduler": "plateau"})).run([60])


def test_augmentation_reaches_the_image_networks_and_is_recorded(fake, tmp_path):
    """--augment phi_reflect: the image network trains with it (its run's config), the bdt
    keeps its own defaults, the study records it (resuming without it is refused); a model
    without images is refused before any training."""
    out = tmp_path / "aug"
    args = ["learning-curve", "--task", "classify", "--epochs", "1", "--batch-size", "32",
            "--no-progress", "--sizes", "60", "--data", str(fake)]
    assert main([*args, "--model", "cnn", "--augment", "phi_reflect", "--out", str(out)]) == 0
    assert _doc(out)["train_options"]["augment"] == "phi_reflect"
    configs = {m: (out / "runs" / f"{m}_60" / "config.toml").read_text() for m in ("cnn", "bdt")}
    assert 'augment = "phi_reflect"' in configs["cnn"]
    assert 'augment = "phi_reflect"' not in configs["bdt"]
    with pytest.raises(ConfigError, match="train_options"):
        lc.LearningCurve(fake, out, lc.CurveSettings(
            models=["cnn"], train_options={"epochs": 1, "batch_size": 32})).run([60])
    refused = tmp_path / "refused"
    assert main([*args, "--model", "cnn", "pfn", "--augment", "phi_reflect",
                 "--out", str(refused)]) == 2
    assert not (refused / "runs").exists()
