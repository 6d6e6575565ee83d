"""``pionml learning-curve --task joint``: the joint network scored as a classifier on every test
cluster and each energy head as a regressor of its species, beside three bdt references (the
classify bdt, and the regress bdt of each species trained on exactly the clusters of its species
the joint network of the same size saw: the data option ``subset_task``), the baselines per part,
resuming, bad arguments in one line. A fake dataset of 600 clusters, a dnn of one epoch and the
bdt capped at 40 rounds."""

import json

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.data.sources import DataConfig, subset_rows
from pionml.errors import ConfigError
from pionml.studies import learning_curve as lc
from pionml.tasks import make_task
from pionml.testing.fake_dataset import blur_label_moments, make_fake_dataset

ARGS = ["--task", "joint", "--model", "dnn", "--epochs", "1", "--no-progress",
        "--task-options", '{"alpha": 0.5, "weight": "none"}']
PARTS = ("classify", "regress_pi0", "regress_charged")
SIZES = (60, 150)
#: rows whose E_true is set to 0: no energy target (the joint network's classification only)
NO_TARGET = np.arange(0, 600, 23)


pytestmark = pytest.mark.usefixtures("quick_bdt")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Overlapping classes (finite rejections) and a few clusters of each species without an
    energy target in every split, so that a species' rows are not its label's rows."""
    path = blur_label_moments(make_fake_dataset(tmp_path_factory.mktemp("lcj") / "fake.h5",
                                                n_clusters=600, seed=3, separation=0.3))
    with h5py.File(path, "r+") as f:
        e_true = f["clusters/E_true"][:]
        e_true[NO_TARGET] = 0
        f["clusters/E_true"][:] = e_true
    return path


def _species_rows(path, split: int, code: int) -> np.ndarray:
    """The rows of a species with a valid response target, from the file itself."""
    with h5py.File(path) as f:
        c = {k: f[f"clusters/{k}"][:] for k in ("split", "label", "E_true", "E_em")}
    return np.flatnonzero((c["split"] == split) & (c["label"] == code) & (c["E_true"] > 0)
                          & (c["E_em"] > 0))


class Spy:
    """The training rows the trainer selects for every run (by run folder), and the calls of
    train_run."""

    def __init__(self, monkeypatch):
        import pionml.train.trainer as trainer

        self.trainings, self.rows = [], {}
        real_train, real_rows = trainer.train_run, DataConfig.train_rows
        spy = self

        def train_run(data, model, out, **kw):
            self.trainings.append((model, out.name, kw.get("resume", False)))
            return real_train(data, model, out, **kw)

        def train_rows(config, rows, where="", pool=None):
            out = real_rows(config, rows, where, pool)
            spy.rows[spy.trainings[-1][1]] = (config.subset_task, out)
            return out

        monkeypatch.setattr(trainer, "train_run", train_run)
        monkeypatch.setattr(DataConfig, "train_rows", train_rows)


@pytest.fixture(scope="module")
def first(fake, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    spy = Spy(mp)
    out = tmp_path_factory.mktemp("lcj") / "curve"
    try:
        assert main(["learning-curve", *ARGS, "--sizes", *map(str, SIZES), "--data", str(fake),
                     "--out", str(out)]) == 0
    finally:
        mp.undo()
    return out, spy


def _doc(out):
    return json.loads((out / lc.JSON_FILE).read_text())


def _finite(m, keys):
    for key in keys:
        for k in (key, f"{key}_err"):
            if k in m or k == key:
                assert m.get(k) is not None and np.isfinite(float(m[k])), (k, m.get(k))


def test_three_parts_for_the_network_and_three_references_at_each_size(first):
    out, spy = first
    doc = _doc(out)
    assert doc["task"] == "joint"
    assert set(doc["runs"]) == {f"dnn_{n}" for n in SIZES} | {
        f"bdt_{p}_{n}" for p in PARTS for n in SIZES}
    assert [t[1] for t in spy.trainings] == [
        name for n in SIZES for name in (f"dnn_{n}", *(f"bdt_{p}_{n}" for p in PARTS))]
    classify, regress = make_task("classify").score_keys, make_task("regress").score_keys
    for n in SIZES:
        net = doc["runs"][f"dnn_{n}"]
        assert "part" not in net and set(net["metrics"]) == set(PARTS)
        for p in PARTS:
            ref = doc["runs"][f"bdt_{p}_{n}"]
            assert ref["model"] == "bdt" and ref["part"] == p and set(ref["metrics"]) == {p}
            for m in (net["metrics"][p], ref["metrics"][p]):
                _finite(m, classify if p == "classify" else regress)
            # every part's network and reference scored on the same test rows
            assert net["test_rows"][p] == ref["test_rows"][p]
        m = net["metrics"]["classify"]
        assert 0 <= m["auc"] <= 1 and m["rejection_at_eff95"] <= m["rejection_at_eff90"]
        for p in PARTS[1:]:  # per bin of E_true, as the regress curve
            assert net["metrics"][p]["bins_E_true"] and "species" not in net["metrics"][p]
    # the task options reach the joint network; each bdt gets its part's rows and targets
    assert doc["task_options"] == {"alpha": 0.5, "weight": "none"}
    task = json.loads((out / "runs" / "dnn_60" / "task.json").read_text())
    assert task["task"] == "joint" and task["options"]["alpha"] == 0.5
    ref = json.loads((out / "runs" / "bdt_regress_pi0_60" / "task.json").read_text())
    assert ref["task"] == "regress" and ref["options"]["species"] == "pi0"
    assert ref["options"]["weight"] == "none" and "alpha" not in ref["options"]
    assert set(doc["baselines"]) == set(PARTS)
    assert set(doc["baselines"]["classify"]) == {"pem"}
    _finite(doc["baselines"]["classify"]["pem"], classify)
    for p in PARTS[1:]:
        assert set(doc["baselines"][p]) == {"em", "lcw"}
        for m in doc["baselines"][p].values():
            _finite(m, regress)
    # what each part scores, with its test rows
    for code, p in ((1, "regress_pi0"), (0, "regress_charged")):
        test = _species_rows(doc["data"]["path"], 2, code)
        assert doc["parts"][p]["test"] == {"n": len(test), "rows_digest": lc._rows_digest(test)}
        assert doc["parts"][p]["column"] == f"E_pred_{p.split('_')[1]}"
        assert doc["runs"]["dnn_60"]["metrics"][p]["n_clusters"] == len(test)
    for name in ("classify_auc", "classify_rejection_at_eff90", "regress_pi0_iqr_resolution",
                 "regress_charged_iqr_resolution", "regress_charged_median_response",
                 "train_seconds"):
        assert (out / f"learning_curve_{name}.png").stat().st_size > 0
    assert sorted(p.name for p in lc.figure_paths(out, doc)) == sorted(
        p.name for p in out.glob("learning_curve_*.png"))
    text = lc.table(doc)
    assert [line for line in text.splitlines() if line.endswith(":")] == [f"{p}:" for p in PARTS]
    assert text.count("\ndnn ") == 3 * len(SIZES) and text.count("\nbdt ") == 3 * len(SIZES)


def test_each_species_bdt_trains_on_the_joint_networks_clusters_of_its_species(fake, first):
    out, spy = first
    doc = _doc(out)
    with h5py.File(fake) as f:
        all_train = np.flatnonzero(f["clusters/split"][:] == 0)
    species = {"regress_pi0": _species_rows(fake, 0, 1),
               "regress_charged": _species_rows(fake, 0, 0)}
    for n in SIZES:
        task, net = spy.rows[f"dnn_{n}"]
        assert task is None and np.array_equal(net, subset_rows(all_train, n, 0))
        task, cls = spy.rows[f"bdt_classify_{n}"]
        assert task == "joint" and np.array_equal(cls, net)  # the same n clusters
        for p, rows in species.items():
            task, ref = spy.rows[f"bdt_{p}_{n}"]
            expected = np.intersect1d(net, rows)
            assert task == "joint" and np.array_equal(ref, expected) and 0 < len(ref) < n
            entry = doc["runs"][f"bdt_{p}_{n}"]
            assert entry["n_train"] == len(ref) and entry["size"] == n
            assert entry["train_rows"] == lc._rows_digest(ref)
            assert np.array_equal(lc.training_rows(fake, "joint", n, part=p), ref)
            data = json.loads((out / "runs" / f"bdt_{p}_{n}" / "data.json").read_text())
            assert data["subset_task"] == "joint" and data["train_size"] == n
        assert doc["runs"][f"dnn_{n}"]["train_rows"] == lc._rows_digest(net)
        assert doc["runs"][f"bdt_classify_{n}"]["train_rows"] == lc._rows_digest(net)
    # nested: the smaller size's clusters of a species are among the larger's
    for p in species:
        assert np.isin(spy.rows[f"bdt_{p}_60"][1], spy.rows[f"bdt_{p}_150"][1]).all()
    # some training clusters have no energy target: in the network's subset, not the bdt's
    assert np.isin(NO_TARGET, spy.rows["dnn_150"][1]).any()


def test_a_head_is_scored_as_its_species_regressor(fake, first):
    """The dnn's pi0 entry is the regress score of its E_pred_pi0 on the pi0 test clusters."""
    from pionml.runs import Run

    out, _ = first
    table = Run.load(out / "runs" / "dnn_150", device="cpu").predict(fake, split="test")
    keep = np.isin(table["rows"], _species_rows(fake, 2, 1))
    sub = {k: np.asarray(v)[keep] for k, v in table.items() if np.ndim(v) == 1}
    want = make_task("regress", species="pi0").score(sub["E_pred_pi0"], sub)
    got = _doc(out)["runs"]["dnn_150"]["metrics"]["regress_pi0"]
    for k in ("n_clusters", "median_response", "iqr_resolution", "s68_resolution"):
        assert got[k] == pytest.approx(want[k], rel=1e-9), k
    assert [b["n"] for b in got["bins_E_true"]] == [b["n"] for b in want["bins_E_true"]]


def test_resume_trains_nothing_again(fake, first, monkeypatch):
    out, _ = first
    before = _doc(out)
    spy = Spy(monkeypatch)
    args = ["learning-curve", *ARGS, "--sizes", *map(str, SIZES), "--data", str(fake),
            "--out", str(out)]
    assert main(args) == 0
    assert spy.trainings == []
    assert _doc(out)["runs"] == before["runs"]
    # one part's bdt lost (no card, no entry): only it is trained again, on the same rows
    (out / "runs" / "bdt_regress_charged_150" / "card.json").unlink()
    doc = _doc(out)
    del doc["runs"]["bdt_regress_charged_150"]
    (out / lc.JSON_FILE).write_text(json.dumps(doc))
    assert main(args) == 0
    assert spy.trainings == [("bdt", "bdt_regress_charged_150", False)]
    again = _doc(out)["runs"]["bdt_regress_charged_150"]
    old = before["runs"]["bdt_regress_charged_150"]
    assert again["train_rows"] == old["train_rows"] and again["n_train"] == old["n_train"]


@pytest.mark.parametrize("args, words", [
    (["--model", "resnet", "--sizes", "60"], ["unknown model 'resnet'", "task 'joint'", "dnn"]),
    (["--model", "lcw", "--sizes", "60"], ["lcw", "baseline"]),
    (["--model", "dnn", "--sizes", "60", "--species", "pi0"], ["--species", "regress",
                                                               "'joint'"]),
    (["--model", "dnn", "--sizes", "1"], ["--sizes", "no cluster of part regress_"]),
    (["--model", "dnn", "--sizes", "60", "5000"], ["5000 is larger than the training split"]),
    (["--model", "dnn", "--sizes", "60", "--task-options", '{"alpha": 2}'], ["alpha", "[0, 1]"]),
    (["--model", "dnn", "--sizes", "60", "--task-options", '{"beta": 1}'], ["unknown option",
                                                                           "beta"]),
    (["--model", "dnn", "--sizes", "60", "--task-options", "[1]"], ["--task-options",
                                                                   "JSON object"]),
])
def test_bad_arguments_are_one_line_and_exit_2(fake, tmp_path, capsys, args, words):
    argv = ["learning-curve", "--task", "joint", *args, "--data", str(fake),
            "--out", str(tmp_path / "o")]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "error" in err[0], err
    for w in words:
        assert w in err[0], err[0]
    assert not (tmp_path / "o").exists()


def test_the_subset_task_data_option():
    """A run's rows among a nested subset drawn from another task's rows: those of the subset
    in its own rows; refused when its rows are not among the pool's or the pool is missing."""
    pool = np.arange(100, 400)
    rows = pool[pool % 3 == 0]
    config = DataConfig(train_size=90, train_subset_seed=4, subset_task="joint")
    got = config.train_rows(rows, pool=pool)
    assert np.array_equal(got, np.intersect1d(subset_rows(pool, 90, 4), rows))
    assert 0 < len(got) < 90 and np.isin(got, rows).all()
    assert np.array_equal(config.val_rows(rows, pool=pool), rows)  # no val_size: every row
    with pytest.raises(ConfigError, match="rows of that task are needed"):
        config.train_rows(rows)
    with pytest.raises(ConfigError, match="2 training rows of the run's task are not rows"):
        config.train_rows(np.r_[rows, 5, 7], pool=pool)
    with pytest.raises(ConfigError, match="train_size 301 is larger .* of task 'joint'"):
        DataConfig(train_size=301, subset_task="joint").train_rows(rows, pool=pool)
    from pionml.train.trainer import subset_pool

    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        subset_pool(DataConfig(subset_task="nope"), None, "train")
    assert subset_pool(DataConfig(), None, "train") is None
    assert DataConfig.from_dict({"train_size": 5}).subset_task is None  # older runs
