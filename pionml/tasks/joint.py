"""``joint``: one network that classifies (pi0 vs pi+-) and gives the energy of the cluster under
both hypotheses (docs/models.md, "The joint task"; the joint training of the public ATLAS graph
network for pions, atlas-calo-ml/gn4pions_eastbay).

One body, its features shared by three outputs: the ``classify`` logit and one energy value per
species (``value_pi0``, ``value_charged``), built as one linear head of width 3
(:data:`OUTPUTS` names its columns; a linear layer of three outputs is three linear heads on the
same features). The loss is ``alpha x classification + (1 - alpha) x regression`` (``alpha`` a
task option, default 0.75 as gn4pions): the classification loss is the ``classify`` task's on
every cluster; the regression loss applies each species' head to the clusters of its own species
only, with the ``regress`` task's target, transform and weights of that species (two
:class:`~pionml.tasks.regress.RegressTask` objects, fitted on the species' training rows), the
two species' losses averaged by their numbers of clusters in the batch.

Rows: every pi0 and pi+- cluster of the split (as ``classify``). A cluster with no valid energy
target (E_true <= 0, or E_EM <= 0 for the ``response`` target) is kept for the classification
and left out of the regression loss and the regression report; the numbers are logged when the
task is fitted, saved with the run and reported per species (``n_no_energy_target``).

Outputs: ``score`` = P(pi0), ``E_pred_pi0`` and ``E_pred_charged`` (GeV) for every cluster;
``pionml combine --joint RUN`` routes by the score and picks the head (or mixes both). Metrics:
the ``classify`` report on every cluster, and the ``regress`` report of each species' head on
the clusters of that species (``regress_pi0``, ``regress_charged``).
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np

from pionml.errors import CheckpointError, ConfigError, DataError
from pionml.tasks.base import StudyPart, Task, register_task
from pionml.tasks.classify import ClassifyTask
from pionml.tasks.regress import SPECIES, RegressTask

logger = logging.getLogger(__name__)

#: The columns of the joint head, in order: the classification logit, then one standardised
#: energy value per species (the ``regress`` task's head of that species).
OUTPUTS = ("logit",) + tuple(f"value_{sp}" for sp in SPECIES)
#: The one head a model builds for the joint task.
HEAD = "joint"
#: Default weight of the classification loss (gn4pions_eastbay's ``alpha: .75``).
DEFAULT_ALPHA = 0.75


def check_alpha(alpha) -> float:
    """``alpha`` as a float in [0, 1]; ConfigError otherwise."""
    if (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0):
        raise ConfigError(f"task 'joint': option alpha must be a number in [0, 1] (the weight of "
                          f"the classification loss), got {alpha!r}")
    return float(alpha)


def weighted_loss(alpha: float, classification, regression):
    """``alpha x classification + (1 - alpha) x regression``."""
    return alpha * classification + (1.0 - alpha) * regression


@register_task
class JointTask(Task):
    name = "joint"
    heads = {HEAD: {"kind": "linear", "n": len(OUTPUTS)}}
    scalars = True
    model_variant = "joint"
    select_fields = ("label",)
    metric_fields = ("p_em", "E_lcw")
    columns = {"score": "%.9g", **{f"E_pred_{sp}": "%.6g" for sp in SPECIES}}
    column_doc = {"score": ClassifyTask.column_doc["score"],
                  **{f"E_pred_{sp}": f"predicted true cluster energy (ENG_CALIB_TOT) in GeV if the "
                                     f"cluster is a {sp} (the {sp} energy head)" for sp in SPECIES}}
    #: ``alpha``: the weight of the classification loss; ``target``, ``weight``, ``transform``:
    #: the regression of each species, as the ``regress`` task's options
    defaults = {"alpha": DEFAULT_ALPHA,
                **{k: v for k, v in RegressTask.defaults.items() if k != "species"}}
    # no study score of its own (score_column): a study scores its parts (study_parts), the
    # classifier and each species' energy head, each beside the bdt of that part
    comparison_keys = ("run", "model", "n_clusters", "auc", "auc_err", "rejection_at_eff90",
                       "rejection_at_eff90_err",
                       *(f"{sp}_{k}" for sp in SPECIES for k in ("median_response",
                                                                 "iqr_resolution")))

    def __init__(self, **options):
        super().__init__(**options)
        self.alpha = check_alpha(self.options["alpha"])
        reg = {k: v for k, v in self.options.items() if k != "alpha"}
        self.classify = ClassifyTask(scalars=True)
        self.regress = {sp: RegressTask(species=sp, **reg) for sp in SPECIES}
        # the regress task's model options are its own heads' (the joint task has one head of
        # three values): accepted at their defaults only, as runs record every option
        first = self.regress[next(iter(SPECIES))]
        for key in RegressTask.model_options:
            if first.options[key] != RegressTask.defaults[key]:
                raise ConfigError(f"task 'joint': option {key} is the regress task's (its own "
                                  f"head); the joint task takes it only at its default "
                                  f"{RegressTask.defaults[key]!r}, got {self.options[key]!r}")
        self.fields = tuple(dict.fromkeys(("label",) + tuple(first.fields)))
        self.physical_fields = tuple(first.physical_fields)
        self.energy_fields = tuple(f for f in first.select_fields if f != "label")
        self.loss_name = (f"{self.alpha:g} x binary cross-entropy + {1 - self.alpha:g} x "
                          f"{first.loss_name} (each species' head on its clusters)")
        #: training clusters per species without a valid energy target (set by :meth:`fit`)
        self.n_no_energy_target: dict = {}

    # rows -----------------------------------------------------------------------------------
    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        """Every pi0 and pi+- cluster (a label other than 0 or 1 is an error, as classify)."""
        return self.classify.select(clusters, where)

    def check_rows(self, dataset, rows, split: str) -> None:
        self.classify.check_rows(dataset, rows, split)

    def energy_mask(self, clusters: dict, species: str) -> np.ndarray:
        """The clusters of ``species`` with a valid energy target (the ``regress`` selection)."""
        return self.regress[species].select(clusters)

    def no_target_counts(self, clusters: dict) -> dict:
        """Clusters per species without a valid energy target."""
        label = np.asarray(clusters["label"])
        return {sp: int(np.sum(label == code) - np.sum(self.energy_mask(clusters, sp)))
                for sp, code in SPECIES.items()}

    # targets --------------------------------------------------------------------------------
    def fit(self, dataset, rows) -> None:
        """Fit each species' target transform and weights on its training clusters with a valid
        target; log how many clusters have none (they train the classification only)."""
        cl = dataset.read_rows(rows, clusters=("label",) + self.energy_fields).clusters
        for sp, reg in self.regress.items():
            keep = self.energy_mask(cl, sp)
            if not keep.any():
                raise DataError(f"file '{dataset.path}': no {sp} training cluster with a valid "
                                  f"energy target ({reg.selection_text()}): the joint task "
                                  "needs both species")
            reg.fit(dataset, rows[keep])
        self.n_no_energy_target = self.no_target_counts(cl)
        if any(self.n_no_energy_target.values()):
            logger.info("task joint: training clusters without a valid energy target (in the "
                        "classification loss only): %s", ", ".join(
                            f"{sp} {n}" for sp, n in self.n_no_energy_target.items()))

    def state(self) -> dict:
        return {**{f"regress_{sp}": reg.state() for sp, reg in self.regress.items()},
                "n_train_no_energy_target": dict(self.n_no_energy_target)}

    def load_state(self, state: dict) -> None:
        known = {f"regress_{sp}" for sp in SPECIES} | {"n_train_no_energy_target"}
        unknown = set(state) - known
        if unknown:
            raise CheckpointError(f"task 'joint': unexpected saved state {sorted(unknown)}")
        for sp, reg in self.regress.items():
            reg.load_state(state.get(f"regress_{sp}", {}))
        self.n_no_energy_target = dict(state.get("n_train_no_energy_target", {}))

    # learning -------------------------------------------------------------------------------
    @staticmethod
    def split(outputs: dict) -> dict:
        """The joint head's (B, 3) output -> {output name: (B,)} (:data:`OUTPUTS`)."""
        out = outputs[HEAD]
        return {name: out[:, i] for i, name in enumerate(OUTPUTS)}

    def regression_loss(self, parts: dict, batch):
        """Each species' regression loss (the ``regress`` task's) on its own clusters with a
        valid target, averaged by their numbers; zero (with a gradient path) when the batch has
        none."""
        import torch

        c = batch.clusters
        label = c["label"]
        valid = torch.ones_like(label, dtype=torch.bool)
        for f in self.energy_fields:
            valid &= torch.isfinite(c[f]) & (c[f] > 0)
        total, n = None, 0
        for sp, code in SPECIES.items():
            mask = valid & (label == code)
            k = int(mask.sum())
            if k == 0:
                continue
            sub = SimpleNamespace(clusters={f: v[mask] for f, v in c.items()})
            loss = self.regress[sp].loss({"value": parts[f"value_{sp}"][mask]}, sub)
            total = k * loss if total is None else total + k * loss
            n += k
        if total is None:
            return 0.0 * sum(p.sum() for name, p in parts.items() if name != "logit")
        return total / n

    def loss(self, outputs: dict, batch, **options):
        parts = self.split(outputs)
        return weighted_loss(self.alpha, self.classify.loss(parts, batch),
                             self.regression_loss(parts, batch))

    def physical(self, outputs: dict, batch=None) -> dict:
        parts = self.split(outputs)
        out = self.classify.physical(parts, batch)
        for sp, reg in self.regress.items():
            out[f"E_pred_{sp}"] = reg.physical({"value": parts[f"value_{sp}"]}, batch)["E_pred"]
        return out

    # evaluation -----------------------------------------------------------------------------
    def species_table(self, table: dict, species: str) -> dict:
        """The clusters of ``species`` with a valid energy target, ``E_pred`` = that species'
        head: the table the ``regress`` report reads."""
        keep = self.energy_mask(table, species)
        sub = {k: np.asarray(v)[keep] for k, v in table.items()
               if np.ndim(v) == 1 and len(v) == len(keep)}
        sub["E_pred"] = sub[f"E_pred_{species}"]
        return sub

    def metrics(self, table: dict) -> dict:
        """The classify report on every cluster, and each species' regress report of its own
        head on its own clusters (with the count of clusters it leaves out)."""
        m = self.classify.metrics(table)
        missing = self.no_target_counts(table)
        for sp, reg in self.regress.items():
            sub = reg.metrics(self.species_table(table, sp))
            m[f"regress_{sp}"] = {**sub, "n_no_energy_target": missing[sp]}
            for key in ("median_response", "iqr_resolution", "s68_resolution"):
                m[f"{sp}_{key}"] = sub[key]
        return m

    def study_parts(self) -> tuple:
        """A study scores the classification (``score`` on every cluster, as ``classify``) and
        each species' head (``E_pred_<species>`` on the clusters of that species with a valid
        target, as ``regress --species <species>``): three parts, each with the reference and
        the baselines of its task (pem; em and lcw)."""
        return (StudyPart("classify", self.classify, "score"),
                *(StudyPart(f"regress_{sp}", reg, f"E_pred_{sp}")
                  for sp, reg in self.regress.items()))

    def summary(self, m: dict) -> str:
        return (self.classify.summary(m) + "; "
                + "; ".join(self.regress[sp].summary(m[f"regress_{sp}"]) for sp in SPECIES))

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False,
              metrics: dict | None = None) -> list:
        """The classify figures in ``folder``, each species' regress figures in
        ``folder/regress_<species>``."""
        from pathlib import Path

        written = self.classify.plots(folder, name, table, dataset, progress, metrics)
        for sp, reg in self.regress.items():
            sub = Path(folder) / f"regress_{sp}"
            sub.mkdir(parents=True, exist_ok=True)
            written += reg.plots(sub, name, self.species_table(table, sp), dataset, progress,
                                 (metrics or {}).get(f"regress_{sp}"))
        return written

    @classmethod
    def compare(cls, folder, results: list, plots: bool = True) -> None:
        """The classify comparison (ROC, rejection), and the regress comparison of each
        species' head."""
        ClassifyTask.compare(folder, results, plots)
        for sp in SPECIES:
            RegressTask.compare(folder, [{**r, "metrics": r["metrics"][f"regress_{sp}"]}
                                         for r in results], plots)

