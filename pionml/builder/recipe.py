"""Dataset recipes: simulate single pions, then build the dataset (design.md section 2).

A recipe is a small TOML file (``datasets/default.toml``): species mix, number of events,
energy range, seeds, selection and split. :func:`make_dataset` simulates each species into an
MLTree ROOT file with ``simulate_to_root`` (:func:`_simulate_to_root`) and builds them with
:func:`pionml.builder.builder.build_dataset`.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pionml.errors import ConfigError

logger = logging.getLogger(__name__)

SPECIES = ("pi0", "pi+", "pi-")
_KEYS = {
    "dataset": {"output", "workdir"},
    "simulation": {"seed", "events", "energy_min", "energy_max", "mu", "mu_range"},
    "selection": {"eta_max", "min_calib", "min_em"},
    "split": {"fractions", "seed"},
    "build": {"images", "cells", "image_min_fraction"},
}


@dataclass
class Recipe:
    """A parsed recipe; paths are absolute (resolved against the recipe's folder)."""

    path: Path
    output: Path
    workdir: Path
    seed: int
    events: dict[str, int]
    energy_min: float
    energy_max: float
    selection: dict = field(default_factory=dict)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    #: what the build writes besides the cluster table (``[build]``; both by default)
    images: bool = True
    cells: bool = True
    #: the images' cell-energy cut, a fraction of the cluster energy (``[build]
    #: image_min_fraction``; 0.01 by default, ATL-PHYS-PUB-2020-018 section 4.1; 0 = every cell)
    image_min_fraction: float = 0.01
    #: pile-up overlay (``[simulation] mu``: a fixed <mu>, or ``mu_range = [lo, hi]``: <mu>
    #: uniform per event; physics.md 2.7); None: no pile-up
    pileup: object = None


def _mu(value) -> float:
    """A pile-up <mu>: a finite number in [0, MU_MAX]."""
    from pionml import values
    from pionml.sim.pileup import MU_MAX

    v = values.non_negative_float(value)
    if v > MU_MAX:
        raise ValueError(f"must be <= {MU_MAX:g}, got {v:g}")
    return v


#: The check of every recipe value (:mod:`pionml.values`, the checks of the command line):
#: (section, key) -> check. ``[simulation] events`` is a table of species -> positive_int,
#: ``[split] fractions`` three non-negative numbers summing to 1.
def _checks() -> dict:
    from pionml import values

    return {
        ("dataset", "output"): values.text,
        ("dataset", "workdir"): values.text,
        ("simulation", "seed"): values.seed,
        ("simulation", "energy_min"): values.energy,
        ("simulation", "energy_max"): values.energy,
        ("simulation", "mu"): _mu,
        **{("selection", k): check for k, check in values.SELECTION.items()},
        ("split", "seed"): values.seed,
        ("build", "images"): values.boolean,
        ("build", "cells"): values.boolean,
        ("build", "image_min_fraction"): values.cell_fraction,
    }


def _read_toml(path: Path) -> dict:
    """The recipe's TOML, its sections and keys known ones (else one-line ConfigErrors)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"recipe not found: '{path}'") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"recipe '{path}' is a directory, not a TOML file") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe '{path}' is not valid TOML: {exc}") from exc
    for section, value in raw.items():
        if section not in _KEYS:
            raise ConfigError(f"recipe '{path}': unknown section [{section}]; "
                              f"valid: {sorted(_KEYS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"recipe '{path}': '{section}' must be a table [{section}], got "
                              f"{value!r}")
        unknown = set(value) - _KEYS[section]
        if unknown:
            raise ConfigError(f"recipe '{path}': unknown key(s) {sorted(unknown)} in [{section}]; "
                              f"valid: {sorted(_KEYS[section])}")
    return raw


def _check_events(path: Path, events, bad) -> dict:
    """``[simulation] events``: a non-empty table of known species -> number of events."""
    from pionml import values

    if not isinstance(events, dict):
        raise bad("simulation", "events", events, "must be a table of species = number of "
                  "events, e.g. { \"pi0\" = 1000 }")
    if not events:
        raise ConfigError(f"recipe '{path}': [simulation] events is empty")
    for sp, n in events.items():
        if sp not in SPECIES:
            raise ConfigError(f"recipe '{path}': unknown species '{sp}' in [simulation] events; "
                              f"valid: {list(SPECIES)}")
        try:
            values.event_count(n)
        except ValueError as exc:
            raise bad("simulation", f"events.{sp}", n, exc) from None
    return events


def load_recipe(path) -> Recipe:
    """Read and check a recipe TOML file, before anything is simulated: unknown sections/keys
    and bad values are a :class:`ConfigError` of one line naming the recipe, the key and the
    value (the checks of :mod:`pionml.values`, shared with the command line)."""
    from pionml import values

    path = Path(path)
    raw = _read_toml(path)

    def bad(section, key, value, reason):
        return ConfigError(f"recipe '{path}': [{section}] {key} = {_toml(value)}: {reason}")

    checked: dict = {}
    for (section, key), check in _checks().items():
        if key in raw.get(section, {}):
            value = raw[section][key]
            try:
                checked[section, key] = check(value)
            except ValueError as exc:
                raise bad(section, key, value, exc) from None
    ds, sim = raw.get("dataset", {}), raw.get("simulation", {})
    split = raw.get("split", {})
    events = _check_events(path, sim.get("events", {}), bad)
    e_min = checked.get(("simulation", "energy_min"), 0.5)
    e_max = checked.get(("simulation", "energy_max"), 500.0)
    if e_min > e_max:
        raise ConfigError(f"recipe '{path}': [simulation] energy_min = {e_min:g} is above "
                          f"energy_max = {e_max:g}")
    seed = checked.get(("simulation", "seed"), 0)
    n_species = len(SPECIES)
    if seed + n_species - 1 > values.SEED_MAX:  # species i is simulated with seed + i
        raise bad("simulation", "seed", seed, f"species are simulated with seed + 0.."
                  f"{n_species - 1}, so it must be at most 2**32 - {n_species}")
    pileup = _recipe_pileup(path, sim, checked.get(("simulation", "mu"), 0.0), bad)
    fractions = split.get("fractions", [0.7, 0.15, 0.15])
    if (not isinstance(fractions, list) or len(fractions) != 3
            or any(isinstance(x, (bool, str)) for x in fractions)):
        raise bad("split", "fractions", fractions, "needs three numbers (train, val, test)")
    from pionml.builder.builder import check_split
    from pionml.builder.images import MIN_CELL_FRACTION

    fractions = check_split(fractions, what=f"recipe '{path}': [split] fractions")
    selection = {key: checked[section, key] for (section, key) in checked
                 if section == "selection"}
    base = path.resolve().parent
    stem = path.stem
    return Recipe(
        path=path.resolve(),
        output=base / ds.get("output", f"{stem}.h5"),
        workdir=base / ds.get("workdir", f"{stem}_root"),
        seed=seed,
        events=dict(events),
        energy_min=e_min,
        energy_max=e_max,
        selection=selection,
        split=fractions,
        split_seed=checked.get(("split", "seed"), 0),
        images=checked.get(("build", "images"), True),
        cells=checked.get(("build", "cells"), True),
        image_min_fraction=checked.get(("build", "image_min_fraction"), MIN_CELL_FRACTION),
        pileup=pileup,
    )


def _recipe_pileup(path, sim: dict, mu: float, bad):
    """The recipe's :class:`pionml.sim.PileupConfig`, or None without pile-up."""
    from pionml.sim.pileup import PileupConfig

    mu_range = sim.get("mu_range")
    if mu_range is not None:
        if (not isinstance(mu_range, list) or len(mu_range) != 2
                or any(isinstance(x, (bool, str)) for x in mu_range)):
            raise bad("simulation", "mu_range", mu_range, "needs two numbers [lo, hi]")
        try:
            mu_range = tuple(_mu(x) for x in mu_range)
        except ValueError as exc:
            raise bad("simulation", "mu_range", list(mu_range), exc) from None
        if "mu" in sim:
            raise ConfigError(f"recipe '{path}': [simulation] give mu or mu_range, not both")
    try:
        cfg = PileupConfig(mu=mu, mu_range=mu_range)
    except ConfigError as exc:
        raise ConfigError(f"recipe '{path}': [simulation] {exc}") from None
    return cfg if cfg.enabled else None


def pileup_tag(cfg) -> str:
    """How a workdir's model marker names the pile-up of its ROOT files ('' without): the
    <mu> and a digest of the overlay's parameters (a change of either re-simulates)."""
    if cfg is None:
        return ""
    import hashlib
    import json
    from dataclasses import asdict

    what = (f"mu_range {cfg.mu_range[0]:g} {cfg.mu_range[1]:g}" if cfg.mu_range is not None
            else f"mu {cfg.mu:g}")
    digest = hashlib.sha256(json.dumps(asdict(cfg.params), sort_keys=True).encode()).hexdigest()
    return f" pileup {what} {digest[:12]}"


def _toml(value) -> str:
    """A value as the recipe writes it (strings quoted, inf and nan as TOML spells them)."""
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value)


def _simulate_to_root(path, n_events, particle, energy_min, energy_max, seed, progress, jobs=1,
                      pileup=None):
    """The one call into the simulated production (:func:`pionml.reco.chain.simulate_to_root`);
    with ``pileup`` the thresholds are the total noise at its <mu> (physics.md 2.7)."""
    from pionml.reco.chain import simulate_to_root

    geometry = None
    if pileup is not None:
        from pionml.geometry import barrel_geometry
        from pionml.sim.pileup import threshold_geometry

        geometry = threshold_geometry(barrel_geometry(), pileup.thresholds_at, pileup.params)
    return simulate_to_root(path, n_events=n_events, particle=particle, energy_min=energy_min,
                            energy_max=energy_max, seed=seed, progress=progress, jobs=jobs,
                            geometry=geometry, pileup=pileup)


def root_file_name(particle: str) -> str:
    return {"pi0": "pi0.root", "pi+": "piplus.root", "pi-": "piminus.root"}[particle]


def make_dataset(recipe_path="datasets/default.toml", out=None, force: bool = False,
                 progress: bool = True, jobs: int = 1) -> Path:
    """Simulate the recipe's species into ROOT files (reused when present, unless ``force``)
    and build them into the HDF5 dataset, with ``jobs`` processes (the same files for any
    number). Returns the dataset path; an existing dataset is returned as is unless ``force``."""
    from pionml.builder.builder import Selection, build_dataset
    from pionml.errors import OutputError
    from pionml.outputs import check_output, has_signature
    from pionml.reco.chain import simulation_model

    r = load_recipe(recipe_path)
    out = Path(out) if out is not None else r.output
    model = simulation_model()
    marker_model = model + pileup_tag(r.pileup)  # the ROOT files' model and pile-up
    if out.exists() and not out.is_dir() and not force:
        if out.stat().st_size > 0 and not has_signature(out, "HDF5"):
            raise OutputError(f"make-dataset: the recipe's output '{out}' exists and is not an "
                              "HDF5 file, so not a dataset to reuse; remove it or give the "
                              "recipe another output")
        if not warn_if_stale(out, r.path, model):
            logger.info("dataset %s exists; not rebuilt (force=True to rebuild)", out)
        return out
    # before the (long) simulation
    check_output(out, [r.path], what="make-dataset --out", kind="HDF5")
    r.workdir.mkdir(parents=True, exist_ok=True)
    marker = r.workdir / MODEL_FILE
    kept = marker.read_text().strip() if marker.is_file() else None
    stale = not force and kept != marker_model
    records = read_settings(r.workdir)
    files = []
    for i, sp in enumerate(SPECIES):
        if sp not in r.events:
            continue
        path = r.workdir / root_file_name(sp)
        want = {"particle": sp, "events": r.events[sp], "energy_min": r.energy_min,
                "energy_max": r.energy_max, "seed": r.seed + i}
        made = records.get(path.name)
        again = False
        if stale and path.exists():
            logger.info("%s was simulated by %s, this pionml simulates model %s: simulating "
                        "it again", path, f"simulation model {kept}" if kept else
                        "an earlier pionml", model)
        elif not force and path.exists() and made is not None and made != want:
            logger.info("%s was simulated with %s, the recipe asks %s: simulating it again",
                        path, settings_text(made), settings_text(want))
            again = True
        elif not force and path.exists() and made is None:
            logger.warning("%s: the settings it was simulated with are not recorded (an earlier "
                           "pionml); reused as it is for %s ('--force' simulates it again)",
                           path, settings_text(want))
        if force or stale or again or not path.exists():
            logger.info("simulating %d %s events into %s", r.events[sp], sp, path)
            records.pop(path.name, None)
            write_settings(r.workdir, records)  # no record of a file being replaced
            # simulate_to_root writes a unique temporary file and renames it only on success
            _simulate_to_root(path, r.events[sp], sp, r.energy_min, r.energy_max, r.seed + i,
                              progress, jobs, **({"pileup": r.pileup} if r.pileup else {}))
            records[path.name] = want
            write_settings(r.workdir, records)
        files.append(path)
    marker.write_text(marker_model + "\n")
    # the model is written with the other attributes, before the rename: an output that is
    # there is complete
    build_dataset(files, out, geometry=None, selection=Selection(**r.selection), split=r.split,
                  seed=r.split_seed, progress=progress, jobs=jobs, images=r.images, cells=r.cells,
                  image_min_fraction=r.image_min_fraction, attributes={MODEL_ATTR: model})
    return out


SETTINGS_FILE = "simulated.json"  # in a recipe's workdir: the settings of each ROOT file


def read_settings(workdir) -> dict:
    """The settings each ROOT file of a recipe's workdir was simulated with (file name ->
    particle, events, energy_min, energy_max, seed); empty when not recorded or unreadable."""
    import json

    path = Path(workdir) / SETTINGS_FILE
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def write_settings(workdir, records: dict) -> None:
    """Write :data:`SETTINGS_FILE` through a temporary file (renamed when complete)."""
    import json
    import os

    from pionml.io import temp_path

    path = Path(workdir) / SETTINGS_FILE
    tmp = temp_path(path)
    try:
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def settings_text(s) -> str:
    """A file's simulation settings in words ("20 events, E 2-50 GeV, seed 5")."""
    if not isinstance(s, dict):
        return f"unreadable settings {s!r}"
    return (f"{s.get('events')} events, E {s.get('energy_min')}-{s.get('energy_max')} GeV, "
            f"seed {s.get('seed')}")


MODEL_FILE = "simulation_model.txt"  # in a recipe's workdir: the model its ROOT files come from
MODEL_ATTR = "simulation_model"  # attribute of a recipe's dataset (pionml.reco.chain)


def warn_if_stale(dataset, recipe_path, model: str | None = None) -> bool:
    """Warn in one line (and return True) when a recipe's ``dataset`` was made by another
    simulation model than this pionml's (:func:`pionml.reco.chain.simulation_model`)."""
    if model is None:
        from pionml.reco.chain import simulation_model

        model = simulation_model()
    made = recorded_simulation_model(dataset)
    if made == model:
        return False
    logger.warning("dataset %s was made by %s, this pionml simulates model %s: "
                   "'pionml make-dataset --recipe %s --force' remakes it", dataset,
                   f"simulation model {made}" if made else "an earlier pionml", model,
                   recipe_path)
    return True


def recorded_simulation_model(dataset) -> str | None:
    """The simulation model a recipe's dataset was made by (None: not recorded, e.g. a dataset
    of an earlier pionml or one built from other files)."""
    import h5py

    try:
        with h5py.File(dataset, "r") as f:
            value = f.attrs.get(MODEL_ATTR)
    except OSError:
        return None
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
