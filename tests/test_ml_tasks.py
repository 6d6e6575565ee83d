"""Tasks as objects: target transforms round-trip, a task saves and reloads its fitted state,
and a task and model that the trainer has never seen (two heads, the model's own loss, two
stages) train through it and predict physical quantities."""

import numpy as np
import pytest
import torch

from pionml.errors import CheckpointError, ConfigError, DataError
from pionml.io.hdf5 import DatasetFile
from pionml.models import MODELS, ClusterModel, register
from pionml.models.base import mlp
from pionml.runs import Run
from pionml.tasks import TASKS, Task, make_task, register_task
from pionml.tasks.transforms import TargetTransform
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=1500, seed=8)


@pytest.mark.parametrize("spec", ["identity", "log", "log10", "standardise", "log+standardise",
                                  "log10+standardise"])
def test_target_transform_round_trips(spec):
    x = np.exp(np.random.default_rng(1).uniform(-1, 6, 500))  # energies 0.4 GeV - 400 GeV
    t = TargetTransform(spec).fit(x[:300])
    back = TargetTransform.from_dict(t.to_dict())  # saved and reloaded with the run
    np.testing.assert_allclose(back.inverse(back.forward(x)), x, rtol=1e-10)
    xt = torch.as_tensor(x, dtype=torch.float64)  # the same on torch tensors (losses, predictions)
    torch.testing.assert_close(back.forward(xt), torch.as_tensor(t.forward(x)))
    if spec.endswith("standardise"):
        y = t.forward(x[:300])
        assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9  # fitted on these rows
    if spec == "log10":
        np.testing.assert_allclose(t.forward(np.array([1.0, 10.0, 1000.0])), [0, 1, 3])


def test_transform_errors():
    with pytest.raises(ConfigError, match="unknown target transform.*sqrt"):
        TargetTransform("log+sqrt")
    with pytest.raises(CheckpointError, match="2 steps"):
        TargetTransform.from_dict({"spec": "log+standardise", "state": [{}]})
    with pytest.raises(ConfigError, match="not finite"):
        TargetTransform("standardise").fit(np.array([1.0, np.nan]))


def test_classify_task_rows_and_state(tmp_path, data):
    task = make_task("classify")
    with DatasetFile(data) as ds:
        rows = task.rows(ds, "train")
        np.testing.assert_array_equal(rows, ds.split_rows("train"))
    back = Task.from_dict(task.to_dict())
    assert back.name == "classify" and back.heads == {"logit": {"kind": "linear"}}
    out = back.physical({"logit": torch.tensor([0.0, 100.0, -100.0])})
    torch.testing.assert_close(out["score"], torch.tensor([0.5, 1.0, 0.0]))
    with pytest.raises(DataError, match="label other than 0.*7"):
        task.select({"label": np.array([0, 1, 7])}, where="here")
    with pytest.raises(ConfigError, match="unknown task 'regres'.*classify"):
        make_task("regres")
    with pytest.raises(ConfigError, match="unknown option"):
        make_task("classify", species="pi0")


# --- a task and a model defined here, outside the library ---------------------------------------
@register_task
class MeanWidthTask(Task):
    """E_true of pi+- clusters, as a Gaussian: heads mean and log_width of the transformed
    target."""

    name = "test_mean_width"
    heads = {"mean": {"kind": "linear"}, "log_width": {"kind": "linear"}}
    scalars = True
    fields = ("E_true",)
    select_fields = ("label",)
    columns = {"E_pred": "%.6g", "E_sigma": "%.6g"}
    defaults = {"transform": "log+standardise"}

    def __init__(self, **options):
        super().__init__(**options)
        self.target = TargetTransform(self.options["transform"])

    def select(self, clusters, where=""):
        return clusters["label"] == 0

    def fit(self, dataset, rows):
        self.target.fit(dataset.read_rows(rows, clusters=("E_true",)).clusters["E_true"])

    def state(self):
        return {"target": self.target.to_dict()}

    def load_state(self, state):
        self.target = TargetTransform.from_dict(state["target"])

    def loss(self, outputs, batch, **options):  # the task's own loss: MSE on the mean
        y = self.target.forward(batch.clusters["E_true"])
        return torch.mean((outputs["mean"].float() - y) ** 2)

    def physical(self, outputs, batch=None):
        mean, width = outputs["mean"].double(), torch.exp(outputs["log_width"].double())
        e = self.target.inverse(mean)
        # width of the standardised log: sigma_E / E = width * std of log E
        return {"E_pred": e, "E_sigma": e * width * self.target.steps[1].std}

    def metrics(self, table):
        return {"median_response": float(np.median(table["E_pred"] / table["E_true"]))}


@register
class GaussianPFN(ClusterModel):
    """Deep Sets body; overrides the task's loss with a Gaussian likelihood (two heads)."""

    name = "test_gaussian_pfn"
    inputs = ("cloud",)
    defaults = {"width": 16}
    calls: list = []

    def build_body(self, spec, width):
        self.phi = mlp((spec.n_cloud_features, width, width))
        return width

    def body_forward(self, batch):
        from torch_geometric.nn import global_add_pool

        return global_add_pool(self.phi(batch.cloud.x), batch.cloud.batch, len(batch))

    def get_loss(self, outputs, batch, task, step=1):
        type(self).calls.append(step)
        y = task.target.forward(batch.clusters["E_true"])
        if step == 1:  # first stage: the task's loss (the mean only)
            return task.loss(outputs, batch)
        log_w = outputs["log_width"].float()
        return torch.mean(0.5 * ((outputs["mean"].float() - y) / torch.exp(log_w)) ** 2 + log_w)


def test_two_heads_own_loss_two_stages_through_the_trainer(tmp_path, data):
    GaussianPFN.calls.clear()
    stages = [{"name": "mean", "epochs": 6, "lr": 3e-3, "patience": 5, "options": {"step": 1}},
              {"name": "likelihood", "epochs": 3, "lr": 1e-3, "patience": 5,
               "options": {"step": 2}}]
    cfg = TrainConfig(batch_size=32, seed=2, stages=stages, scheduler="cosine", clip_grad=5.0)
    run_dir = train_run(data, "test_gaussian_pfn", tmp_path / "run", task="test_mean_width",
                        config=cfg, progress=False)
    assert set(GaussianPFN.calls) == {1, 2}  # the model's loss ran, with each stage's options
    run = Run.load(run_dir)
    hist = run.card["history"]
    assert hist["stage"] == ["mean"] * 6 + ["likelihood"] * 3
    assert hist["train_loss"][2] < hist["train_loss"][0]
    assert run.task.target.spec == "log+standardise"  # fitted state reloaded from task.json
    table = run.predict(data, split="test")
    with DatasetFile(data) as ds:
        label = ds.read_rows(ds.split_rows("test"), clusters=("label",)).clusters["label"]
    assert len(table["rows"]) == int(np.sum(label == 0))  # the task's selection: pi+- only
    # physical units: GeV, close to the truth after a few epochs (E_true = 1.5 E_em here)
    r = table["E_pred"] / table["E_true"]
    assert 0.7 < np.median(r) < 1.4
    assert np.all(table["E_sigma"] > 0)
    assert np.corrcoef(np.log(table["E_pred"]), np.log(table["E_true"]))[0, 1] > 0.9


@pytest.fixture(autouse=True, scope="module")
def _unregister():
    yield
    TASKS.pop("test_mean_width", None)
    MODELS.pop("test_gaussian_pfn", None)


def test_a_task_owns_its_command_line_options():
    """Every task's options are on the parser once; the runs a command line asks for come from
    the task (``--species both``: two runs, tagged); another task's option is refused."""
    import argparse

    from pionml.tasks import add_task_arguments, task_runs

    p = argparse.ArgumentParser()
    add_task_arguments(p)
    runs = task_runs("regress", p.parse_args(["--species", "both", "--target", "energy"]))
    assert [(r.tag, r.options) for r in runs] == [
        ("pi0", {"species": "pi0", "target": "energy"}),
        ("charged", {"species": "charged", "target": "energy"})]
    assert runs[0].argv == ("--species", "pi0", "--target", "energy")
    # the species names the run even when the task's default is taken
    assert [(r.tag, r.options) for r in task_runs("regress", p.parse_args([]))] == [
        ("charged", {"species": "charged"})]
    assert [(r.tag, r.options) for r in task_runs("classify", p.parse_args([]))] == [(None, {})]
    with pytest.raises(ConfigError, match="--weight is an option of --task regress, not of "
                                          "'calibrate'"):
        task_runs("calibrate", p.parse_args(["--weight", "flat"]))
    one = argparse.ArgumentParser()
    add_task_arguments(one, several=False)  # a command of one run per task: no 'both'
    with pytest.raises(SystemExit):
        one.parse_args(["--species", "both"])


def test_a_task_scores_answers_for_the_studies(data):
    """The study score of a task: classify scores P(pi0) (a perfect score has AUC 1), regress
    E_pred (the truth itself has response 1 and resolution 0); calibrate has none."""
    label = np.array([0, 1] * 50)
    m = make_task("classify").score(label * 0.8 + 0.1, {"label": label})
    assert m["auc"] == 1.0 and set(make_task("classify").score_keys) <= set(m)
    e = np.linspace(1, 100, 200)
    r = make_task("regress").score(e, {"E_true": e})
    assert r["median_response"] == 1.0 and r["iqr_resolution"] == 0.0 and r["bins_E_true"]
    assert "median response 1" in make_task("regress").score_summary(r)
    assert make_task("regress").baselines == {"em": "E_em", "lcw": "E_lcw"}
    with pytest.raises(ConfigError, match="task 'calibrate' has no study score"):
        make_task("calibrate").score(e, {"E_true": e})


def test_format_metric_keeps_its_significant_digits():
    """A summary prints an AUC of exactly 0.98 as 0.9800 (not 0.98), whole numbers without a
    trailing point, and n/a for a missing metric."""
    from pionml.tasks.base import format_metric

    m = {"auc": 0.98, "auc_err": 0.0015, "rejection": 100.0, "small": 1.5e-5}
    assert format_metric(m, "auc", 4) == "0.9800 +- 0.0015"
    assert format_metric(m, "rejection") == "100"
    assert format_metric(m, "small") == "1.50e-05"
    assert format_metric(m, "absent") == "n/a"
