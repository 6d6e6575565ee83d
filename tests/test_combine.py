"""Classify, then regress (``pionml combine``): the 1:1:1 mixed sample, thresholds of known score
distributions, routing identities, the dataset check and the command line end to end."""

import json

import numpy as np
import pytest
from scipy import special

from pionml.errors import ConfigError, DataError
from pionml.metrics.routing import (MIX_SPECIES, choose_threshold, draw_mixed, mix_edges, route,
                                   routed_energy, routing_groups, routing_table, soft_energy,
                                   threshold_report)
from pionml.pipelines.combine import check_finite, mixed_sample
from pionml.io.hdf5 import DatasetFile
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("comb") / "fake.h5", n_clusters=900, seed=7)


# --- the mixed sample ------------------------------------------------------------------------
def test_the_mix_has_equal_counts_per_bin_and_species_and_counts_what_it_leaves_out():
    rng = np.random.default_rng(0)
    n = 6000
    pdg = rng.choice([111, 211, -211, 22], n, p=[0.5, 0.2, 0.29, 0.01])
    e_em = np.exp(rng.uniform(np.log(0.3), np.log(300), n))
    e_em[:7] = [0, -1, np.nan, 1, 1, 1, 1]
    e_true = e_em * 1.2
    e_true[3:5] = [0, np.inf]
    edges = mix_edges(e_em, per_decade=5)
    assert np.allclose(np.log10(edges) * 5, np.round(np.log10(edges) * 5))  # decade-aligned
    mix = draw_mixed(pdg, e_em, e_true, edges, seed=3)
    assert len(mix.index) == len(np.unique(mix.index))  # without replacement
    for k in range(len(edges) - 1):
        in_bin = mix.bin == k
        counts = [np.sum(in_bin & (mix.species == s)) for s in range(3)]
        assert counts[0] == counts[1] == counts[2] == mix.counts[k]["drawn_per_species"]
        assert counts[0] == min(mix.counts[k][f"available_{s}"] for s in MIX_SPECIES)
    codes = np.array(list(MIX_SPECIES.values()))
    assert np.array_equal(pdg[mix.index], codes[mix.species])
    left = mix.left_out
    assert left["E_EM <= 0 or not finite"] == 3 and left["E_true <= 0 or not finite"] == 2
    assert left["not pi0, pi+ or pi-"] == np.sum(pdg[5:] == 22)
    assert sum(left.values()) + len(mix.index) == n  # every cluster accounted for
    again = draw_mixed(pdg, e_em, e_true, edges, seed=3)
    assert np.array_equal(again.index, mix.index)  # seeded
    assert not np.array_equal(draw_mixed(pdg, e_em, e_true, edges, seed=4).index, mix.index)
    flat = draw_mixed(pdg, e_em, e_true, edges, seed=3, flat_energy=True)
    drawn = {c["drawn_per_species"] for c in flat.counts} - {0}
    assert len(drawn) == 1 and sum(flat.left_out.values()) + len(flat.index) == n


def test_the_mix_uses_only_test_rows(data):
    with DatasetFile(data) as ds:
        rows, mix = mixed_sample(ds, "test", per_decade=2)
        cl = ds.read_rows(rows, clusters=("split", "pdg")).clusters
        n_test = len(ds.split_rows("test"))
        val_rows, _ = mixed_sample(ds, "val", edges=mix.edges, per_decade=2)
    assert np.all(cl["split"] == 2) and np.all(np.diff(rows) > 0)
    assert len(rows) > 30 and sum(mix.left_out.values()) + len(rows) == n_test
    _, n = np.unique(cl["pdg"], return_counts=True)
    assert len(n) == 3 and n[0] == n[1] == n[2]
    assert not set(rows) & set(val_rows)


# --- the threshold ---------------------------------------------------------------------------
def _gaussian_scores(n0, n1, mu=1.2, sigma=1.0, seed=0):
    """P(pi0) = sigmoid(x), x ~ N(+mu, sigma) for pi0 and N(-mu + 0.5, sigma) for pi+-."""
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(mu, sigma, n0), rng.normal(-mu + 0.5, sigma, n1)]
    return special.expit(x), np.r_[np.ones(n0, bool), np.zeros(n1, bool)]


def test_the_ml_threshold_of_two_gaussians_is_where_they_cross():
    crossing = 0.25  # midpoint of the two means (1.2 and -0.7) in x
    for n0, n1 in ((200_000, 200_000), (100_000, 300_000)):  # independent of the priors
        s, y = _gaussian_scores(n0, n1)
        t = choose_threshold(s, y, "balanced")
        assert special.logit(t) == pytest.approx(crossing, abs=0.05)
        # equal widths: the equal-error point is the same crossing
        assert special.logit(choose_threshold(s, y, "eer")) == pytest.approx(crossing, abs=0.05)
        # the density estimates cross there too (a subsample: the estimates are slow)
        t = choose_threshold(s[::10], y[::10], "ml")
        assert special.logit(t) == pytest.approx(crossing, abs=0.05)
    # map at priors 1:3: p0 f0 = p1 f1 moves the cut by sigma^2 ln(p1/p0) / (mu0 - mu1)
    t_map = choose_threshold(s, y, "map")
    assert special.logit(t_map) == pytest.approx(crossing + np.log(3) / 1.9, abs=0.06)
    assert choose_threshold(s, y, "fixed", 0.615) == 0.615


def test_thresholds_of_separated_classes_and_bad_input():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    y = np.array([0, 0, 0, 1, 1], bool)
    assert choose_threshold(s, y, "balanced") == pytest.approx(0.5)  # middle of the gap
    assert 0.3 < choose_threshold(s, y, "ml") < 0.7  # where the two density estimates cross
    rep = threshold_report(s, y, "ml", n_boot=5)
    assert rep["rules"]["ml"]["eff_pi0"] == 1 and rep["rules"]["ml"]["eff_pipm"] == 1
    assert "fixed" not in rep["rules"]
    with pytest.raises(ConfigError, match="unknown"):
        choose_threshold(s, y, "best")
    with pytest.raises(ConfigError, match="needs a finite value"):
        choose_threshold(s, y, "fixed")
    with pytest.raises(DataError, match="both classes"):
        choose_threshold(s, np.ones(5, bool), "ml")
    with pytest.raises(DataError, match="NaN"):
        choose_threshold(np.r_[s[:4], np.nan], y, "ml")


# --- routing ---------------------------------------------------------------------------------
def test_a_perfect_classifier_gives_the_oracle_and_soft_routing_with_hard_p_is_hard_routing():
    rng = np.random.default_rng(2)
    n = 500
    is_pi0 = rng.random(n) < 0.4
    e0, e1 = rng.uniform(1, 10, n), rng.uniform(1, 10, n)
    perfect = is_pi0.astype(float)
    t = choose_threshold(perfect, is_pi0, "ml")
    combined = routed_energy(route(perfect, t), e0, e1)
    assert np.array_equal(combined, routed_energy(is_pi0, e0, e1))
    p = rng.integers(0, 2, n).astype(float)
    assert np.array_equal(soft_energy(p, e0, e1), routed_energy(route(p, 0.5), e0, e1))
    assert np.allclose(soft_energy(np.full(n, 0.25), e0, e1), 0.25 * e0 + 0.75 * e1)
    guess = rng.random(n) < 0.5
    groups = routing_groups(is_pi0, guess)
    assert np.array_equal(groups["correct_pi0"], is_pi0 & guess)
    assert np.array_equal(groups["misrouted_pi0_to_charged"], is_pi0 & ~guess)
    assert np.array_equal(groups["correct_charged"], ~is_pi0 & ~guess)
    assert np.array_equal(groups["misrouted_charged_to_pi0"], ~is_pi0 & guess)
    rows = routing_table(is_pi0, route(perfect, t), rng.uniform(0.1, 100, n), bins=(0, 1, 1000))
    assert all(r["eff_pi0"] == 1 and r["eff_pipm"] == 1 for r in rows if r["n_pi0"])
    assert sum(r["n_pi0"] + r["n_pipm"] for r in rows) == n


def test_a_nan_energy_or_score_is_an_error_not_a_dropped_cluster():
    assert np.array_equal(check_finite([1.0, 2.0], "x"), [1.0, 2.0])
    with pytest.raises(DataError, match=r"run 'r': E_pred: 2 of 4 values .* NaN or inf "
                                        r"\(first at position 1\)"):
        check_finite([1.0, np.nan, 3.0, np.inf], "run 'r': E_pred")


# --- from run folders, and the command line --------------------------------------------------
@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("comb_runs")
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    return {
        "classifier": train_run(data, "pem", base / "pem", task="classify", config=cfg,
                                progress=False),
        "pi0": train_run(data, "em", base / "em_pi0", task="regress", config=cfg, progress=False,
                         task_options={"species": "pi0"}),
        "charged": train_run(data, "dnn", base / "dnn_charged", task="regress", config=cfg,
                             progress=False, task_options={"species": "charged"}),
        "lcw": train_run(data, "lcw", base / "lcw_charged", task="regress", config=cfg,
                         progress=False, task_options={"species": "charged"}),
    }


def test_pionml_combine_end_to_end(runs, data, tmp_path, capsys):
    from pionml.cli import main

    out = tmp_path / "comb"
    args = ["combine", "--classifier", str(runs["classifier"]), "--pi0", str(runs["pi0"]),
            "--charged", str(runs["charged"]), "--also", str(runs["lcw"]), str(runs["pi0"]),
            "--out", str(out), "--bins-per-decade", "2", "--bootstrap", "5", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "median_response in bins of E_true" in printed and "combined" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["methods"] == ["em", "lcw", "combined", "oracle", "soft", "lcw_regress_charged",
                            "em_regress_pi0"]
    assert m["threshold"]["chosen_on"] == "val"
    assert set(m["threshold"]["rules"]) == {"ml", "balanced", "eer", "map"}
    test = m["mix"]["test"]
    assert len(set(test["n_per_species"].values())) == 1
    assert sum(test["left_out"].values()) + test["n_drawn"] == test["n_input"]
    r = m["routing"]
    assert m["n_correct_pi0"] + m["n_misrouted_pi0_to_charged"] == test["n_per_species"]["pi0"]
    n_pi0 = test["n_per_species"]["pi0"]
    assert m["n_misrouted_pi0_to_charged"] == round((1 - r["eff_pi0"]) * n_pi0)
    assert 0 <= r["eff_pi0"] <= 1 and 0 <= r["eff_pipm"] <= 1 and len(r["bins_E_em"]) == 8
    lines = (out / "predictions.csv").read_text().splitlines()
    head = lines[0].split(",")
    assert {"pdg", "score", "to_pi0", "routed_correctly", "E_pi0", "E_charged", "E_combined",
            "E_oracle", "E_soft", "E_lcw_regress_charged"} <= set(head)
    assert len(lines) - 1 == m["n_clusters"] == test["n_drawn"]
    pred = np.genfromtxt(out / "predictions.csv", delimiter=",", names=True)
    to_pi0 = pred["score"] >= m["threshold"]["threshold"]
    assert np.array_equal(pred["to_pi0"] == 1, to_pi0)
    assert np.allclose(pred["E_combined"], np.where(to_pi0, pred["E_pi0"], pred["E_charged"]),
                       rtol=1e-5)
    assert np.allclose(pred["E_oracle"],
                       np.where(pred["label"] == 1, pred["E_pi0"], pred["E_charged"]),
                       rtol=1e-5)
    # the pi0 'regressor' is the EM scale: its extra row equals EM, and so does E_pi0
    assert np.allclose(pred["E_em_regress_pi0"], pred["E_em"], rtol=1e-5)
    # every row joins back to its dataset row (the fake dataset records no input files: -1)
    assert head[:2] == ["row", "file_index"] and np.all(pred["file_index"] == -1)
    with DatasetFile(data) as ds:
        cl = ds.read_rows(pred["row"].astype(np.int64), clusters=("event", "pdg", "split")).clusters
    assert np.array_equal(cl["event"], pred["event"]) and np.array_equal(cl["pdg"], pred["pdg"])
    assert np.all(cl["split"] == 2)
    mix_csv = (out / "mixed_sample.csv").read_text().splitlines()
    assert mix_csv[0].startswith("split,E_lo,E_hi") and any(x.startswith("val,") for x in mix_csv)
    plots = {p.name for p in (out / "plots").iterdir()}
    assert {"response_2d.png", "median_response.png", "iqr_resolution.png", "s68_resolution.png",
            "routing_accuracy.png", "misrouted_response.png", "threshold.png"} <= plots
    # a fixed threshold routes by that value; train.py forwards 'combine'
    from pionml.train.cli import main as train_py_main

    assert train_py_main(args[:7] + ["--out", str(tmp_path / "fixed"), "--threshold-method",
                                     "fixed",
                            "--threshold", "0.615", "--no-plots", "--bootstrap", "0"]) == 0
    m = json.loads((tmp_path / "fixed" / "metrics.json").read_text())
    assert m["threshold"]["threshold"] == 0.615 and "fixed" in m["threshold"]["rules"]


def test_mismatched_runs_and_arguments_fail_with_one_line(runs, data, tmp_path, caplog):
    from pionml.cli import main

    other = make_fake_dataset(tmp_path / "other.h5", n_clusters=300, seed=99)
    stranger = train_run(other, "em", tmp_path / "em_other", task="regress",
                         config=TrainConfig(epochs=1), progress=False,
                         task_options={"species": "pi0"})
    import shutil

    unknown = shutil.copytree(runs["pi0"], tmp_path / "no_hash")
    card = json.loads((unknown / "card.json").read_text())
    del card["data"]["sha256"]
    (unknown / "card.json").write_text(json.dumps(card))
    base = ["combine", "--classifier", str(runs["classifier"]), "--charged", str(runs["charged"]),
            "--out", str(tmp_path / "x"), "--no-progress", "--no-plots"]
    cases = [
        (["--pi0", str(stranger)], "runs from different datasets"),
        (["--pi0", str(runs["pi0"]), "--data", str(other)],
         "is not the file the runs were trained on"),
        (["--pi0", str(runs["charged"])], "a regressor of charged clusters, not of pi0"),
        (["--pi0", str(runs["classifier"])], "not an energy E_pred"),
        (["--pi0", str(runs["pi0"]), "--threshold-method", "fixed"], "needs --threshold"),
        (["--pi0", str(runs["pi0"]), "--threshold", "0.5"],
         "is the value of --threshold-method fixed"),
        (["--pi0", str(tmp_path / "nothing")], "does not exist"),
        (["--pi0", str(unknown)], "its card records no dataset hash"),
    ]
    for extra, message in cases:
        caplog.clear()
        assert main(base + extra) == 1, extra
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], (extra, errors)
    assert not (tmp_path / "x").exists()
