"""Shared base of every model: a body, an optional scalar branch, named heads, its loss.

Design (EnergyFlow ``archbase``; PyG ``basic_gnn``; weaver-core's
``get_loss``): a model is built from a :class:`DataSpec` (the input sizes, taken from the data),
the head specs its task asks for (:mod:`pionml.models.heads`), whether it reads the cluster
scalars (E_EM, eta) through the shared scalar branch, and named hyper-parameters; unknown
hyper-parameters are rejected. ``forward(batch)`` returns ``{head name: tensor}``. The loss is
the task's unless a model overrides :meth:`ClusterModel.get_loss`. Families register with
:func:`register`; an unknown name lists the choices.

The task-model contract (design.md section 7): a task declares the body variant it wants
(``Task.model_variant``), the forms of output it takes (``Task.output_forms()``: form name ->
head specs, the output keys) and whether the model reads the cluster scalars. A family
declares the variants it supports in ``supports`` (variant -> :class:`Body`: which methods
build and run that body, its hyper-parameter and data defaults, the form of output it gives,
its alternative architectures) and builds its heads from the task's declaration
(:func:`build_for_task`). No family names a task; a new task that reuses a variant needs no
change to any family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from pionml.errors import ConfigError
from pionml.models.heads import check_head_spec, make_head
from pionml.registry import Registry

#: The heads of a model built without a task's declaration: one logit.
DEFAULT_HEADS = {"logit": {"kind": "linear"}}
#: The form of output a body gives unless its :class:`Body` names another: the task's heads,
#: built on the body's features.
HEADS_FORM = "heads"
#: Width of the shared scalar branch's output.
SCALAR_WIDTH = 16


@dataclass
class DataSpec:
    """Input sizes of a dataset: image shapes (name -> (eta, phi)), cloud and scalar widths."""

    image_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    n_cloud_features: int = 0
    n_scalars: int = 0
    n_moments: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shapes"] = {k: list(v) for k, v in self.image_shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(image_shapes={k: tuple(v) for k, v in d["image_shapes"].items()},
                   n_cloud_features=int(d["n_cloud_features"]), n_scalars=int(d["n_scalars"]),
                   n_moments=int(d.get("n_moments", 0)))


def mlp(sizes, dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """Linear-ReLU(-Dropout) stack through ``sizes`` (in, h1, ..., out)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def check_hyper(model: str, defaults: dict, hyper: dict, zero_ok=()) -> None:
    """One strict check of hyper-parameter values against the types of the defaults (EnergyFlow
    ``archbase`` pattern): sizes (int defaults, tuples of ints) are whole numbers >= 1 (>= 0
    where the default is 0 or the name is in ``zero_ok``, a family's ``zero_ok``), rates
    (``dropout``) in [0, 1), other floats finite, strings strings. ConfigError names the model,
    the parameter and the value."""
    import math

    def bad(key, value, what):
        raise ConfigError(f"model '{model}': hyper-parameter {key}={value!r} must be {what}")

    for key, value in hyper.items():
        default = defaults[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                bad(key, value, "true or false")
        elif isinstance(default, int):
            lowest = 0 if default == 0 or key in zero_ok else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                bad(key, value, f"a whole number >= {lowest}")
        elif isinstance(default, float):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                bad(key, value, "a finite number")
            if key == "dropout" and not 0 <= value < 1:
                bad(key, value, "in [0, 1)")
            if key != "dropout" and value <= 0:
                bad(key, value, "> 0")
        elif (isinstance(default, (tuple, list)) and default
              and all(isinstance(v, str) for v in default)):
            if not isinstance(value, (tuple, list)) or not value or not all(
                    isinstance(v, str) for v in value):
                bad(key, value, "a non-empty list of names")
        elif isinstance(default, (tuple, list)):
            if not isinstance(value, (tuple, list)) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                bad(key, value, "a non-empty list of whole numbers >= 1")
        elif isinstance(default, str) and not isinstance(value, str):
            bad(key, value, "a string")


@dataclass(frozen=True)
class Body:
    """How a family serves one body variant (an entry of ``ClusterModel.supports``).

    ``build`` and ``forward`` name the methods that build the body (returning its output width)
    and run it; ``hyper`` and ``data`` are the variant's hyper-parameter and data-option defaults
    over the family's ``defaults`` and ``data_defaults``; ``form`` names the form of output the
    body gives (a key of the task's ``output_forms()``: :data:`HEADS_FORM` = the task's heads
    built on the features; another name: a form the family gives from its own output layer or
    in physical units, under the head names the task declares for it); ``head_kinds`` maps a
    head kind the task asks for to the spec the family builds instead (e.g. a linear value as a
    scaled tanh); ``alternatives`` are the other architectures the family offers through its
    hyper-parameters for this variant (name -> hyper-parameters; the registry-driven tests
    build, train and export each like the defaults).
    """

    build: str = "build_body"
    forward: str = "body_forward"
    hyper: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    form: str = HEADS_FORM
    head_kinds: dict = field(default_factory=dict)
    alternatives: dict = field(default_factory=dict)

    def __post_init__(self):  # read-only declarations shared by every instance
        for name in ("hyper", "data", "head_kinds", "alternatives"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


#: What most families support: the classifier and the regressor body of ATL-PHYS-PUB-2020-018,
#: the same network under two heads.
CLUSTER_VARIANTS = MappingProxyType({"classify": Body(), "regress": Body()})


MODELS = Registry("model")
#: Class decorator: add a model family to the registry under ``cls.name``.
register = MODELS.register
#: The class registered as ``name``; an unknown name raises ConfigError listing the choices.
model_class = MODELS.lookup


class ClusterModel(nn.Module):
    """Base class: subclasses set ``name``, ``inputs`` (what the body reads: "images",
    "cloud"), ``defaults`` (body hyper-parameters) and implement :meth:`build_body` (returning
    the body's output width) and :meth:`body_forward`, or the methods their ``supports``
    declaration names per variant.

    Class attributes besides: ``cluster_fields`` (per-cluster fields read from the batch),
    ``data_defaults`` (data options the family suggests, e.g. ``knn_k``), ``train_defaults``
    (epochs, batch_size, lr, patience chosen so that it beats ``pem`` on the default dataset
    within CPU minutes; command-line flags override them), ``trainable``.
    """

    name: str = ""
    inputs: tuple[str, ...] = ()
    cluster_fields: tuple[str, ...] = ()
    defaults: dict = {}
    data_defaults: dict = {}
    train_defaults: dict = {}
    #: whole-number hyper-parameters that may be 0 though their default is not (counts of
    #: optional layers)
    zero_ok: tuple = ()
    #: recipe name (pionml.train.trainer.RECIPES) -> training options over ``train_defaults``
    recipes: dict = {}
    #: recipe name -> hyper-parameters over ``defaults`` (e.g. the architecture a paper's recipe
    #: describes where pionml's default differs); the caller's ``--hyper`` comes last
    recipe_hyper: dict = {}
    trainable: bool = True
    #: fitted by its own :meth:`fit_direct` (a boosted decision tree) instead of the
    #: gradient-descent Trainer; its fitted state lives in files of its own (:meth:`save_files`)
    fits_itself: bool = False
    #: whether the family can read the cluster scalars (E_EM, eta) through the scalar branch
    reads_scalars: bool = True
    #: the body variants the family supports (variant -> :class:`Body`); a task names the
    #: variant it wants (``Task.model_variant``): "classify" (ATL-PHYS-PUB-2020-018's
    #: classifiers), "regress" (its regressors, where they differ), "calibrate" (the moment
    #: calibrations)
    supports: dict = CLUSTER_VARIANTS
    #: why the family cannot be exported to ONNX (``pionml export``); empty when it can
    export_note: str = ""
    #: what the family is, said when a task asks for a variant it does not support
    role: str = ""

    def __init__(self, spec: DataSpec, heads: dict | None = None, scalars: bool = False,
                 variant: str | None = None, **hyper):
        super().__init__()
        variant = self.default_variant() if variant is None else variant
        self.body = self.body_for(variant)
        self.variant = variant
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ConfigError(f"model '{self.name}': unknown hyper-parameter(s) {sorted(unknown)} "
                              f"(accepted: {sorted(self.defaults)})")
        check_hyper(self.name, self.defaults, hyper, self.zero_ok)
        heads = self.bare_heads() if heads is None else heads
        if not heads:
            raise ConfigError(f"model '{self.name}': no output head")
        self.spec = spec
        self.hyper = {k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in {**self.defaults, **self.body.hyper, **hyper}.items()}
        self.head_specs = {name: check_head_spec(name, s) for name, s in heads.items()}
        self.use_scalars = bool(scalars) and self.reads_scalars
        self.inputs = self.model_inputs(self.use_scalars)
        width = getattr(self, self.body.build)(spec, **self.hyper)
        if self.use_scalars:
            if spec.n_scalars < 1:
                raise ConfigError(f"model '{self.name}': the data give no cluster scalars")
            self.scalar_branch = mlp((spec.n_scalars, SCALAR_WIDTH, SCALAR_WIDTH))
            width += SCALAR_WIDTH
        self.heads = nn.ModuleDict({n: self.make_head(n, s, width)
                                    for n, s in self.head_specs.items()})

    @classmethod
    def default_variant(cls) -> str:
        """The variant a model built without one gets: the first the family supports."""
        return next(iter(cls.supports))

    @classmethod
    def body_for(cls, variant: str) -> Body:
        """The family's declaration for ``variant``; ConfigError when it does not support it."""
        if variant not in cls.supports:
            raise ConfigError(f"model '{cls.name}' has no {variant} variant (it has: "
                              f"{', '.join(cls.supports)})" + (f": {cls.role}" if cls.role else ""))
        return cls.supports[variant]

    @classmethod
    def model_inputs(cls, scalars: bool) -> tuple:
        """What a model of this family reads: its body's inputs, and the scalars if asked and
        the family has a scalar branch."""
        return tuple(cls.inputs) + (("scalars",) if scalars and cls.reads_scalars else ())

    # hooks ----------------------------------------------------------------------------------
    def build_body(self, spec: DataSpec, **hyper) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def body_forward(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_head(self, name: str, spec: dict, width: int) -> nn.Module:
        """The head ``name`` on ``width`` features: the spec the task declared, or the one the
        body declares for its kind (``Body.head_kinds``); a family that owns its output layer
        overrides this."""
        return make_head(name, self.body.head_kinds.get(spec["kind"], spec), width)

    def get_loss(self, outputs: dict, batch, task, **options) -> torch.Tensor:
        """The training loss; the task's unless a family overrides it (weaver-core pattern).
        ``options`` come from the training stage (e.g. the step of a two-step training)."""
        return task.loss(outputs, batch, **options)

    def for_export(self) -> nn.Module:
        """The module ``pionml export`` traces (called on the loaded run, in eval mode): this
        model by default. A family whose training module does not trace to ONNX returns an
        equivalent one (weaver-core's ``for_inference`` pattern), e.g. an ensemble as one module;
        it must take a :class:`~pionml.data.batch.ClusterBatch` and return the heads as
        ``forward`` does, and take the number of clusters from tensors (``batch.rows``), not
        from ``len(batch)``."""
        return self

    @classmethod
    def hyper_for_data(cls, hyper: dict, dataset, rows) -> tuple[dict, dict]:
        """The hyper-parameters adapted to ``dataset`` (a DatasetFile) and its training
        ``rows`` before the model is built, and notes for the model card (e.g. features whose
        column the file lacks); unchanged by default."""
        return hyper, {}

    def fit_direct(self, train: dict, val: dict, task, config, device,
                   progress: bool = False) -> tuple[dict, int, float]:
        """Fit a ``fits_itself`` model on the cluster columns of the training and validation
        rows (``{field: array}``: the task's fields and the model's ``cluster_fields``); returns
        the history in the Trainer's form (its ``epoch`` = boosting round), the best epoch
        and its validation loss."""  # pragma: no cover
        raise NotImplementedError

    def save_files(self, folder) -> None:
        """Write fitted state that is not in the state_dict (nothing by default)."""

    def load_files(self, folder) -> None:
        """Read what :meth:`save_files` wrote (nothing by default)."""

    # --------------------------------------------------------------------------------------
    def features(self, batch) -> torch.Tensor:
        """(B, width): the body's features, with the scalar branch's when enabled."""
        h = getattr(self, self.body.forward)(batch)
        if self.use_scalars:
            h = torch.cat([h, self.scalar_branch(batch.scalars)], dim=1)
        return h

    def forward(self, batch) -> dict[str, torch.Tensor]:
        h = self.features(batch)
        return {name: head(h) for name, head in self.heads.items()}

    def config(self) -> dict:
        """Everything needed to rebuild the model (saved as model.json in the run folder)."""
        return {"model": self.name, "variant": self.variant, "hyper": dict(self.hyper),
                "heads": self.head_specs, "scalars": self.use_scalars,
                "spec": self.spec.to_dict(), "inputs": list(self.inputs)}

    @classmethod
    def from_config(cls, config: dict) -> "ClusterModel":
        """The model ``config`` describes; with ``ensemble: N``, an ensemble of N members
        (:mod:`pionml.models.ensemble`) each built from the rest of it."""
        from pionml.models.ensemble import ENSEMBLE_KEY, make_ensemble

        if ENSEMBLE_KEY in config:
            one = {k: v for k, v in config.items() if k != ENSEMBLE_KEY}
            return make_ensemble(cls, config[ENSEMBLE_KEY], lambda: cls.from_config(one))
        return cls(DataSpec.from_dict(config["spec"]), heads=cls.saved_heads(config),
                   scalars=bool(config.get("scalars", False)),
                   variant=config.get("variant", cls.default_variant()), **config["hyper"])

    @classmethod
    def bare_heads(cls) -> dict:
        """The heads of a model built without a task's declaration (:data:`DEFAULT_HEADS`)."""
        return DEFAULT_HEADS

    @classmethod
    def saved_heads(cls, config: dict) -> dict:
        """The heads of a saved ``model.json`` (a family whose saved heads changed form maps
        the old ones here)."""
        return config["heads"]

    @classmethod
    def data_options(cls, variant: str, hyper: dict | None = None) -> dict:
        """The family's data options for ``variant`` (and the caller's ``hyper``-parameters,
        which a family may need data for: the transformer's ``local`` needs kNN edges)."""
        return {**cls.data_defaults, **cls.body_for(variant).data}

    @classmethod
    def heads_for(cls, task) -> dict:
        """The head specs the family builds for ``task``: the task's declaration of the form
        of output the family's body gives (ConfigError when the task takes no such form)."""
        body = cls.body_for(task.model_variant)
        forms = task.output_forms()
        if body.form not in forms:
            raise ConfigError(f"model '{cls.name}' gives its output as '{body.form}'; task "
                              f"'{task.name}' takes {', '.join(repr(f) for f in forms)}")
        return forms[body.form]

    @classmethod
    def check_task(cls, task) -> None:
        """ConfigError unless the family can serve ``task`` (its variant and form of output)."""
        from pionml.models.ensemble import check_ensemble

        try:
            cls.heads_for(task)
        except ConfigError as exc:
            raise ConfigError(f"{exc}: not a model for task '{task.name}'") from None
        check_ensemble(cls, ensemble_members(task))


def ensemble_members(task) -> int:
    """The number of networks ``task`` asks to train as one ensemble (its ``ensemble_members``;
    1 = one network, for a task that does not say)."""
    return getattr(task, "ensemble_members", 1)


#: build_model's own keywords: set by the task, never by --hyper
RESERVED_HYPER = frozenset({"spec", "heads", "scalars", "variant", "name"})


def build_for_task(name: str, spec: DataSpec, task, **hyper) -> ClusterModel:
    """Model ``name`` for ``task`` (a :class:`~pionml.tasks.base.Task`): the body variant the
    task names, the heads the task declares for the form of output the body gives, the scalar
    branch when the task asks for it; an ensemble of networks (:mod:`pionml.models.ensemble`)
    when the task asks for more than one (``ensemble_members``)."""
    from pionml.models.ensemble import make_ensemble

    cls = model_class(name)
    cls.check_task(task)
    reserved = sorted(set(hyper) & RESERVED_HYPER)
    if reserved:
        raise ConfigError(f"model '{name}': {', '.join(map(repr, reserved))} cannot be a "
                          "hyper-parameter (the task sets it)")
    return make_ensemble(cls, ensemble_members(task), lambda: build_model(
        name, spec, heads=cls.heads_for(task), scalars=task.scalars,
        variant=task.model_variant, **hyper))


def build_model(name: str, spec: DataSpec, heads: dict | None = None, scalars: bool = False,
                variant: str | None = None, **hyper) -> ClusterModel:
    """Instantiate model ``name`` with input sizes ``spec``, heads and hyper-parameters; values
    the layers reject (a zero width, a string where a number goes) raise ConfigError.
    :func:`build_for_task` takes the heads, scalars and variant from a task's declaration."""
    cls = model_class(name)
    try:
        return cls(spec, heads=heads, scalars=scalars, variant=variant, **hyper)
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, IndexError, KeyError) as exc:
        raise ConfigError(f"model '{name}' cannot be built with hyper-parameters {hyper}: "
                          f"{type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
