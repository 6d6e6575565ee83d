"""ONNX export of a trained run (``pionml export RUN``), for inference outside pionml (Athena
runs its calibration networks through ONNX Runtime).

The exported graph is the run's model followed by its task's conversion to physical units
(:meth:`~pionml.tasks.base.Task.physical`: ``score`` = P(pi0) for ``classify``, ``E_pred`` in GeV
for ``regress``), so it gives what :meth:`~pionml.runs.folder.Run.predict` gives. It is generic
over :class:`~pionml.models.base.ClusterModel`: the graph inputs follow the model's ``inputs``
and ``cluster_fields``, every one with a dynamic cluster axis:

- ``images``: ``image_<layer>`` (clusters, eta, phi) float32, normalised as the run's
  ``image_mode`` says;
- ``cloud``: ``cell_features`` (cells, F) float32 (the standardised continuous features, then
  the layer one-hot), ``cell_cluster`` (cells,) int64 (the cluster of each cell, 0..B-1, cells
  of a cluster contiguous), ``n_cells`` (clusters,) int64, and, for models that read the kNN
  graph, ``edge_index`` (2, edges) int64: the edges are an input, made by the recipe written in
  the JSON (``pionml.data.batch.knn_edges``), not computed in the graph;
- ``scalars``: ``scalars`` (clusters, 2) float32, standardised (log E_EM, eta);
- each per-cluster field the model reads: ``cluster_<field>`` (clusters,) float32, as in the
  cluster table.

Beside ``FILE.onnx`` goes ``FILE.onnx.json`` (:func:`side_file`; never ``FILE.json``, which for
the default ``RUN/model.onnx`` would be the run's own ``model.json``): the input and output names
in order with shapes and meanings, every constant needed to make the inputs from a cluster
(``normalisation``: image mode and pixel constants, cloud and scalar standardisation, the
moment features in graph order with their arXiv:2412.04370 Table 2 transform and fitted constants),
the kNN recipe and an excerpt of the model card. Both files are written to temporary files and
renamed only when the export and its check succeeded (:mod:`pionml.outputs`): a failed export
leaves a previous pair intact. A run whose weights hold NaN or inf is refused. A family
that needs another module for export (weaver-core's ``for_inference`` pattern) overrides
:meth:`~pionml.models.base.ClusterModel.for_export`; one that cannot be exported sets
``export_note`` and the export stops with that reason. onnx and onnxruntime are an optional extra
(``pip install 'pionml[export]'``), imported only here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import pionml
from pionml.errors import PionmlError

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (18: ScatterElements with a max reduction, for pooling).
OPSET = 18
#: Names of the dynamic axes.
CLUSTERS, CELLS, EDGES = "clusters", "cells", "edges"
#: Batch sizes the export checks itself on; cell counts vary within each batch.
CHECK_BATCHES = (1, 7, 256)
INSTALL_HINT = "pip install 'pionml[export]' (onnx and onnxruntime)"


class ExportError(PionmlError):
    """A run that cannot be exported, or an export that does not reproduce the model."""


def require(module: str):
    """Import ``module`` (onnx, onnxruntime) or raise ExportError with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"ONNX export needs the package '{module}': {INSTALL_HINT}") from None


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, dtype, shape (ints, or the name of a dynamic axis) and meaning."""

    name: str
    dtype: str
    shape: tuple
    what: str

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "what": self.what}


def input_specs(model, knn_k: int, task=None) -> list[InputSpec]:
    """The graph inputs of ``model`` (a ClusterModel) and of ``task``'s conversion to physical
    units (e.g. E_em for a regressor of the response), in order."""
    from pionml.data.normalise import CLOUD_FEATURES, SCALAR_FEATURES

    specs = []
    if "images" in model.inputs:
        for name, (h, w) in model.spec.image_shapes.items():
            specs.append(InputSpec(f"image_{name}", "float32", (CLUSTERS, h, w),
                                   f"layer {name} image (eta x phi), normalised (see "
                                   "'normalisation')"))
    if "cloud" in model.inputs:
        f = model.spec.n_cloud_features
        specs.append(InputSpec("cell_features", "float32", (CELLS, f),
                               f"per cell: standardised {', '.join(CLOUD_FEATURES)}, then the "
                               f"one-hot of the calorimeter layer ({f - len(CLOUD_FEATURES)} "
                               "layers); cells of a cluster contiguous"))
        specs.append(InputSpec("cell_cluster", "int64", (CELLS,),
                               "cluster of each cell, 0 .. clusters-1, non-decreasing"))
        specs.append(InputSpec("n_cells", "int64", (CLUSTERS,), "number of cells of each cluster"))
        if knn_k > 0:
            specs.append(InputSpec("edge_index", "int64", (2, EDGES),
                                   "kNN edges (row 0 = source cell j, row 1 = target cell i), "
                                   "global cell indices; made by the 'knn' recipe"))
    if "moments" in model.inputs:
        specs.append(InputSpec("moments", "float32", (CLUSTERS, model.spec.n_moments),
                               "the cluster moment features in the order of "
                               "normalisation.moments, each transformed as its entry there "
                               "says (arXiv:2412.04370 Table 2)"))
    if "scalars" in model.inputs:
        specs.append(InputSpec("scalars", "float32", (CLUSTERS, model.spec.n_scalars),
                               f"standardised cluster scalars {', '.join(SCALAR_FEATURES)}"))
    fields = tuple(model.cluster_fields) + tuple(getattr(task, "physical_fields", ()))
    for field in dict.fromkeys(fields):
        specs.append(InputSpec(f"cluster_{field}", "float32", (CLUSTERS,),
                               f"cluster table column '{field}', as in the dataset"))
    return specs


class ExportModule(nn.Module):
    """Tensors in graph-input order -> the task's physical outputs, through the run's model."""

    def __init__(self, model, task, specs: list[InputSpec]):
        super().__init__()
        self.net = model.for_export()
        self.model_inputs = model.inputs
        self.task = task
        self.names = [s.name for s in specs]
        self.output_names: list[str] = []

    def forward(self, *tensors):
        from pionml.data.batch import ClusterBatch

        x = dict(zip(self.names, tensors))
        # the cluster axis as a tensor (so that it stays dynamic in the graph)
        first = next(v for k, v in x.items()
                     if k.startswith(("image_", "scalars", "moments", "cluster_"))
                     or k == "n_cells")
        rows = torch.zeros_like(first.reshape(first.shape[0], -1)[:, 0], dtype=torch.long)
        batch = ClusterBatch(rows=rows)
        batch.images = {k[len("image_"):]: v for k, v in x.items() if k.startswith("image_")}
        batch.clusters = {k[len("cluster_"):]: v for k, v in x.items() if k.startswith("cluster_")}
        batch.scalars = x.get("scalars")
        batch.moments = x.get("moments")
        if "cell_features" in x:
            from torch_geometric.data import Batch

            edges = x.get("edge_index", torch.zeros((2, 0), dtype=torch.long))
            batch.cloud = Batch(x=x["cell_features"], edge_index=edges, batch=x["cell_cluster"])
        phys = self.task.physical(self.net(batch), batch)
        self.output_names = list(phys)
        return tuple(phys[k] for k in self.output_names)


def example_inputs(specs: list[InputSpec], n_cells, knn_k: int = 0, seed: int = 0) -> dict:
    """Random inputs of the right shapes: one cluster per entry of ``n_cells`` (cells per
    cluster; also the batch size for image-only models), kNN edges made by the run's recipe."""
    from pionml.data.batch import knn_edges

    rng = np.random.default_rng(seed)
    counts = np.asarray(n_cells, dtype=np.int64)
    b, n = len(counts), int(counts.sum())
    feed = {}
    for s in specs:
        shape = [b if d == CLUSTERS else n if d == CELLS else d for d in s.shape]
        if s.name == "cell_cluster":
            feed[s.name] = np.repeat(np.arange(b), counts)
        elif s.name == "n_cells":
            feed[s.name] = counts.copy()
        elif s.name == "edge_index":
            pos = rng.normal(size=(n, 3)).astype(np.float32)
            feed[s.name] = knn_edges(pos, counts, knn_k).numpy()
        elif s.name.startswith("image_"):
            feed[s.name] = np.abs(rng.normal(0, 0.1, shape)).astype(np.float32)
        elif s.name.startswith("cluster_"):
            feed[s.name] = np.exp(rng.uniform(-1, 4, shape)).astype(np.float32)
        else:
            feed[s.name] = rng.normal(size=shape).astype(np.float32)
        if s.name == "cell_features":  # the layer one-hot block holds ones and zeros
            from pionml.data.normalise import CLOUD_FEATURES

            nf = len(CLOUD_FEATURES)
            onehot = np.zeros((n, shape[1] - nf), np.float32)
            onehot[np.arange(n), rng.integers(0, shape[1] - nf, n)] = 1
            feed[s.name][:, nf:] = onehot
    return feed


def batch_feed(batch, specs: list[InputSpec]) -> dict:
    """The graph inputs (numpy) of a :class:`~pionml.data.batch.ClusterBatch` built by the run's
    :class:`~pionml.data.batch.BatchBuilder` (what pionml's own loaders give the model)."""
    feed = {}
    for s in specs:
        if s.name.startswith("image_"):
            v = batch.images[s.name[len("image_"):]]
        elif s.name.startswith("cluster_"):
            v = batch.clusters[s.name[len("cluster_"):]]
        elif s.name == "scalars":
            v = batch.scalars
        elif s.name == "moments":
            v = batch.moments
        elif s.name == "cell_features":
            v = batch.cloud.x
        elif s.name == "cell_cluster":
            v = batch.cloud.batch
        elif s.name == "n_cells":
            v = torch.bincount(batch.cloud.batch, minlength=len(batch))
        else:
            v = batch.cloud.edge_index
        feed[s.name] = v.numpy().astype(np.int64 if s.dtype == "int64" else np.float32)
    return feed


def torch_outputs(module: ExportModule, feed: dict) -> dict:
    """The module's outputs (numpy) on ``feed``: the reference the ONNX graph must reproduce."""
    with torch.no_grad():
        out = module(*(torch.as_tensor(feed[n]) for n in module.names))
    return {k: v.numpy() for k, v in zip(module.output_names, out)}


def session(path: Path):
    """An ONNX Runtime session on ``path`` (CPU)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no shape-inference warnings on the console
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-5) -> float:
    """Largest of |a - b| / max(|b|, atol / rtol) over every output: <= rtol means agreement to
    ``rtol`` relative (absolute ``atol`` on outputs near zero)."""
    worst = 0.0
    for k in b:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        if x.shape != y.shape:
            raise ExportError(f"output '{k}': ONNX shape {x.shape}, torch {y.shape}")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), atol / rtol))))
    return worst


def _card_excerpt(run) -> dict:
    card = run.card
    keep = ("model", "task", "task_options", "variant", "hyper", "inputs", "n_parameters",
            "seed", "best_epoch", "best_val_loss", "created", "package_version", "test_metrics")
    out = {k: card.get(k) for k in keep if k in card}
    data = card.get("data") or {}
    out["data"] = {k: data.get(k) for k in ("path", "sha256", "n_train", "n_val") if k in data}
    return out


def preprocessing(run, specs: list[InputSpec]) -> dict:
    """What a user must do to the cluster before feeding the graph (written to the JSON)."""
    from pionml.data.batch import KNN_SCALES
    from pionml.data.normalise import E_EM_FLOOR_GEV, LOG_FLOOR_GEV
    from pionml.geometry import LAYERS

    norm = run.normalisation.to_dict()
    names = {s.name for s in specs}
    out = {}
    if any(n.startswith("image_") for n in names):
        modes = {"fraction": f"cell energy / max(cluster E_EM, {E_EM_FLOOR_GEV:g} GeV) (GeV/GeV)",
                 "log": f"log(max(E, 0) + {LOG_FLOOR_GEV}) with E in GeV",
                 "standardise": "(E - mean) / std per pixel, constants in 'pixels'",
                 "none": "cell energy in GeV"}
        out["images"] = {"mode": norm["image_mode"], "what": modes[norm["image_mode"]],
                         "E_em_floor_gev": E_EM_FLOOR_GEV, "log_floor_gev": LOG_FLOOR_GEV}
        if norm.get("pixels"):
            out["images"]["pixels"] = norm["pixels"]
    if "cell_features" in names:
        out["cloud"] = {**norm["cloud"], "E_em_floor_gev": E_EM_FLOOR_GEV,
                        "log_floor_gev": LOG_FLOOR_GEV, "what": (
            "continuous features (x - mean) / std, in this order: E_frac = E / max(cluster "
            f"E_EM, {E_EM_FLOOR_GEV:g} GeV), "
            f"log_E = log(max(E / GeV, {LOG_FLOOR_GEV})), deta and dphi of the cell centre "
            "relative "
            "to the cluster (eta, phi) (dphi wrapped to [-pi, pi)), rperp (mm), cell_deta and "
            "cell_dphi (cell sizes); then the one-hot of the layer index in 'layers'"),
            "layers": [layer.name for layer in LAYERS]}
    if "edge_index" in names:
        out["knn"] = {"k": int(run.data_config.knn_k), "scales": list(KNN_SCALES),
                      "coordinates": ["deta", "dphi", "rperp"], "what": (
                          "for each cell i, the min(k, m-1) nearest other cells j of its cluster "
                          "(m cells) by the distance^2 = sum((d coordinate / scale)^2) on the raw "
                          "(unstandardised) deta, dphi and rperp, ties to the lower index; edge "
                          "j -> i, indices over the whole batch (pionml.data.batch.knn_edges)")}
    if "scalars" in names:
        out["scalars"] = {**norm["scalars"], "log_floor_gev": LOG_FLOOR_GEV, "what": (
            f"(x - mean) / std of (log(max(E_EM / GeV, {LOG_FLOOR_GEV:g})), eta)")}
    if "moments" in names:
        out["moments"] = moment_preprocessing(run.normalisation.moments)
    return out




#: The per-feature transforms of the ``moments`` input (arXiv:2412.04370 Table 2, Eqs 7-9;
#: ATL-PHYS-PUB-2023-019 sec 4.2 for cbrt_std), as
#: :meth:`pionml.data.features.MomentTransform.transform` applies them.
MOMENT_TRANSFORMS = {
    "log10_std": "(log10(max(x, floor)) - shift) / scale",
    "std": "(x - shift) / scale",
    "maxabs": "(x - shift) / scale (shift = 0, scale = max |x| on the training rows)",
    "cbrt_std": "(cbrt(x) - shift) / scale (cbrt: the signed cube root)",
}


def moment_preprocessing(transform) -> dict:
    """The ``moments`` input recipe: the features in graph (column) order, each with its
    ``/clusters`` column, transform and fitted constants (pionml.data.features.MomentTransform)."""
    if transform is None:
        raise ExportError("the run reads cluster moments but its normalisation has no moment "
                          "transform")
    features = [{"index": j, "name": f.name, "column": f.column, "transform": kind,
                 "shift": float(transform.shift[j]), "scale": float(transform.scale[j]),
                 "floor": float(transform.floor[j]), "formula": MOMENT_TRANSFORMS[kind]}
                for j, (f, kind) in enumerate(zip(transform.features, transform.kinds))]
    return {"features": features, "order": [f.name for f in transform.features],
            "dropped": dict(transform.dropped),
            "what": ("moments[:, index] = formula applied to the raw cluster-table column "
                     "(float64, then float32), in this order; x as in the dataset (GeV, mm, "
                     "ns)")}


def side_file(onnx_path) -> Path:
    """The JSON written beside an exported graph: ``FILE.onnx.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def check_finite_weights(run, folder) -> None:
    """ExportError when a parameter or buffer of the run's model holds NaN or inf (a diverged
    or damaged training): its graph would give NaN for every cluster."""
    for name, value in run.model.state_dict().items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ExportError(f"run '{folder}': weight '{name}' holds {bad} NaN or inf "
                                  f"value(s) of {value.numel()}: not exported (retrain the run)")


def export_run(folder, out: Path | None = None, check: bool = True) -> Path:
    """Export the run in ``folder`` to ``out`` (default ``<folder>/model.onnx``) and write the
    JSON :func:`side_file` beside it; with ``check``, ONNX Runtime must reproduce the model on
    random inputs at several batch sizes and cell counts (ExportError otherwise). Both files
    go through :func:`pionml.outputs.atomic_outputs`: never an input or a run's own file, never
    through a symbolic link, the previous pair intact on failure. Returns the ONNX path."""
    from pionml.outputs import atomic_outputs, check_output, json_text
    from pionml.runs.folder import Run

    if not Path(folder).is_dir():  # before the output checks, which read the folder
        from pionml.errors import CheckpointError

        raise CheckpointError(f"run folder '{folder}' " + (
            "is a file, not a folder" if Path(folder).exists() else "does not exist"))
    out = Path(out) if out is not None else Path(folder) / "model.onnx"
    if out.suffix != ".onnx":
        raise ExportError(f"--out '{out}': the file name must end in .onnx")
    meta_path = side_file(out)
    inputs = [folder, *(Path(folder) / name for name in ("model.json", "weights.pt", "card.json"))]
    for path in (out, meta_path):  # before any work
        check_output(path, inputs, what="export --out")
    require("onnx")
    run = Run.load(folder)
    model = run.model
    if model.export_note:
        raise ExportError(f"model '{model.name}' cannot be exported to ONNX: {model.export_note}")
    if not model.trainable:
        raise ExportError(f"model '{model.name}' of run '{folder}' is a baseline without a "
                          "network: "
                          "nothing to export (it is a formula of the cluster table)")
    check_finite_weights(run, folder)
    knn_k = int(run.data_config.knn_k) if "cloud" in model.inputs else 0
    specs = input_specs(model, knn_k, run.task)
    module = ExportModule(model, run.task, specs).eval()
    example = example_inputs(specs, [5, 9, 14], knn_k)
    torch_outputs(module, example)  # names the outputs
    axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in specs}
    axes.update({name: {0: CLUSTERS} for name in module.output_names})
    import warnings

    with atomic_outputs([out, meta_path], inputs, what="export --out",
                        make_parent=True) as (tmp_onnx, tmp_meta):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch._C._jit_set_onnx_log_enabled(False)  # no graph dump on the console on failure
                torch.onnx.export(module, tuple(torch.as_tensor(example[s.name]) for s in specs),
                                  str(tmp_onnx), input_names=[s.name for s in specs],
                                  output_names=module.output_names, dynamic_axes=axes,
                                  opset_version=OPSET, dynamo=False)
        except OSError:
            raise  # a full disk, an unwritable folder: one line naming the output
        except Exception as exc:  # an operation ONNX or the tracer cannot carry
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"model '{model.name}' cannot be exported to ONNX: {first}") from exc
        graph_inputs = [i.name for i in require("onnx").load(str(tmp_onnx)).graph.input]
        unused = [s.name for s in specs if s.name not in graph_inputs]
        specs = [s for s in specs if s.name in graph_inputs]
        if unused:
            logger.info("inputs %s are not read by model '%s' and are not graph inputs", unused,
                        model.name)
        checked = None
        if check:
            checked = check_export(tmp_onnx, module, specs, knn_k, name=out)
            logger.info("ONNX Runtime reproduces the model: largest relative difference %.2g",
                        checked)
        meta = {
            "format": "pionml-onnx/1", "onnx": out.name, "opset": OPSET,
            "pionml_version": pionml.__version__, "torch_version": torch.__version__,
            "run": str(Path(folder).resolve()), "model": model.name, "task": run.task.name,
            "task_options": run.task.options,
            "inputs": [s.to_dict() for s in specs],
            "outputs": [{"name": k, "dtype": "float32", "shape": [CLUSTERS],
                         "what": run.task.output_meaning(k)} for k in module.output_names],
            "normalisation": preprocessing(run, specs),
            "check": None if checked is None else {"max_relative_difference": checked,
                                                   "batch_sizes": list(CHECK_BATCHES)},
            "card": _card_excerpt(run),
        }
        tmp_meta.write_text(json_text(meta))
    logger.info("exported %s (%s) to %s and %s", model.name, run.task.name, out, meta_path)
    return out


def check_export(path: Path, module: ExportModule, specs: list[InputSpec], knn_k: int,
                 rtol: float = 1e-5, name=None) -> float:
    """ONNX Runtime against torch on random inputs (batch sizes ``CHECK_BATCHES``, 1 to 300
    cells per cluster); ExportError when they differ by more than ``rtol``."""
    sess = session(path)
    rng = np.random.default_rng(1)
    worst = 0.0
    for b in CHECK_BATCHES:
        feed = example_inputs(specs, rng.integers(1, 300, b), knn_k, seed=b)
        got = dict(zip(module.output_names, sess.run(module.output_names, feed)))
        worst = max(worst, compare(got, torch_outputs(module, feed), rtol=rtol))
    if worst > rtol:
        raise ExportError(f"'{name or path}': ONNX Runtime differs from the model by "
                          f"{worst:.2g} (relative), more than {rtol:g}")
    return worst
