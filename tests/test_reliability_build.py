"""Nothing lost, nothing silently wrong in production: merging built datasets with the checks of
the ROOT build path, a full disk during ``build`` / ``simulate``, ClusterTree labels and bad
pixels, ``--min-em``, and one check of configuration values for the command line and the
recipes (:mod:`pionml.values`). Every case goes through the command line on small files the
tests write themselves."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.io.hdf5 import DatasetFile
from pionml.outputs import FORMAT_SIGNATURES

DATA = Path(__file__).parent / "data"
EVENTS = 40  # two clusters each


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder) -> list[str]:
    """Temporary files or folders a writer left behind."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.endswith(".part") or p.name.startswith(".pionml-build-parts"))


def one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if "ERROR" in ln or "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def write_root(path, n_events, seed, edit=None):
    """An MLTree file of ``n_events`` synthetic events (2 clusters each); ``edit(branches)``
    changes branches before writing."""
    from pionml.geometry import barrel_geometry
    from pionml.testing.mltree import synthetic_branches, write_events

    geo = barrel_geometry()
    branches = synthetic_branches(max(n_events, 1), geo, seed=seed)
    if n_events == 0:
        branches = {k: v[:0] for k, v in branches.items()}
    if edit is not None:
        edit(branches)
    write_events(path, branches, geo)
    return path


def set_cluster_values(branches, name, values: dict):
    """Set flat cluster ``index -> value`` of the per-cluster branch ``name``."""
    import awkward as ak

    counts = ak.to_numpy(ak.num(branches[name], axis=1))
    flat = ak.to_numpy(ak.flatten(branches[name])).astype(np.float64).copy()
    for k, v in values.items():
        flat[k] = v
    branches[name] = ak.unflatten(flat, counts)


def build(*args) -> int:
    return main(["build", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge")
    out = {"dir": d}
    out["a.root"] = write_root(d / "a.root", EVENTS, 0)
    # b has one cluster with a NaN energy (skipped with --skip-bad) and clusters at any eta
    out["b.root"] = write_root(d / "b.root", EVENTS, 1, lambda b: set_cluster_values(
        b, "cluster_E", {5: np.nan}))
    out["empty.root"] = write_root(d / "empty.root", 0, 2)
    for name in ("a", "b", "empty"):
        assert build(out[f"{name}.root"], "--out", d / f"{name}.h5", "--skip-bad",
                     "--eta-max", "0.4") == 0
        out[f"{name}.h5"] = d / f"{name}.h5"
    return out


def counts(path) -> dict:
    with DatasetFile(path) as ds:
        return ds.attrs["counts"]


# ------------------------------------------------------------------ A. merging built datasets
def test_merge_adds_every_count_and_keeps_an_empty_part(files, tmp_path):
    out = tmp_path / "m.h5"
    parts = [files["a.h5"], files["empty.h5"], files["b.h5"]]
    assert build(*parts, "--out", out) == 0
    c, ca, ce, cb = counts(out), *(counts(p) for p in parts)
    assert ce["clusters_read"] == 0 and cb["skipped"]["bad_energy"] == 1
    assert ca["dropped"]["eta"] > 0  # the cuts of the parts are in the sums below
    for key, value in c.items():
        if isinstance(value, int) and not isinstance(value, bool):
            assert value == ca[key] + ce[key] + cb[key], key
        elif isinstance(value, dict):
            for k, v in value.items():
                assert v == ca[key].get(k, 0) + ce[key].get(k, 0) + cb[key].get(k, 0), (key, k)
    assert c["accounting_ok"] and c["events_read"] == 2 * EVENTS
    with DatasetFile(out) as m, DatasetFile(files["a.h5"]) as a, DatasetFile(files["b.h5"]) as b:
        assert len(m) == len(a) + len(b) == c["clusters_kept"]
        np.testing.assert_array_equal(m.read_clusters(["E_em"])["E_em"],
                                      np.r_[a.read_clusters(["E_em"])["E_em"],
                                            b.read_clusters(["E_em"])["E_em"]])
        # file_index points into the merged sources: a, empty, b
        names = [s["name"] for s in m.attrs["sources"]["inputs"]]
        assert names == ["a.root", "empty.root", "b.root"]
        fi = m.read_clusters(["file_index"])["file_index"]
        assert set(fi[:len(a)]) == {0} and set(fi[len(a):]) == {2}


@pytest.mark.parametrize("second", ["same", "dot", "copy", "link"])
def test_merge_refuses_a_dataset_twice(files, tmp_path, caplog, second):
    a = files["a.h5"]
    other = {"same": a, "dot": Path(os.path.relpath(a)), "copy": tmp_path / "copy.h5",
             "link": tmp_path / "link.h5"}[second]
    if second == "copy":
        shutil.copy(a, other)
    if second == "link":
        other.symlink_to(a)
    out = tmp_path / "m.h5"
    assert build(a, other, "--out", out) == 1
    line = one_error_line(caplog.text)
    assert ("same content (sha256)" if second == "copy" else "same file") in line
    assert not out.exists() and not leftovers(tmp_path)


def test_merge_refuses_two_builds_of_one_root_file(files, tmp_path, caplog):
    # another split seed: the clusters of a.root could be in train in one part and test in the other
    other = tmp_path / "a_seed5.h5"
    assert build(files["a.root"], "--out", other, "--seed", "5", "--skip-bad",
                 "--eta-max", "0.4") == 0
    assert build(files["a.h5"], other, "--out", tmp_path / "m.h5") == 1
    line = one_error_line(caplog.text)
    assert "both built from the ROOT file 'a.root'" in line and "a_seed5.h5" in line
    assert not (tmp_path / "m.h5").exists()


def _with_model(src, dst, model):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        f.attrs["simulation_model"] = model
    return dst


def test_merge_simulation_models(files, tmp_path, caplog):
    a1 = _with_model(files["a.h5"], tmp_path / "a1.h5", "1111aaaa")
    b2 = _with_model(files["b.h5"], tmp_path / "b2.h5", "2222bbbb")
    assert build(a1, b2, "--out", tmp_path / "m.h5") == 1
    line = one_error_line(caplog.text)
    assert "1111aaaa" in line and "2222bbbb" in line and "a1.h5" in line and "b2.h5" in line
    # a dataset without a recorded model does not merge with one that has one
    assert build(files["a.h5"], b2, "--out", tmp_path / "m.h5") == 1
    assert "no recorded simulation model" in caplog.text
    b1 = _with_model(files["b.h5"], tmp_path / "b1.h5", "1111aaaa")
    assert build(a1, b1, "--out", tmp_path / "m.h5") == 0
    with h5py.File(tmp_path / "m.h5") as f:
        assert f.attrs["simulation_model"] == "1111aaaa"


@pytest.mark.parametrize("option,what", [("--no-cells", "no point clouds"),
                                         ("--no-images", "no images")])
def test_merge_refuses_parts_of_another_schema(files, tmp_path, caplog, option, what):
    part = tmp_path / "b_other.h5"
    assert build(files["b.root"], "--out", part, option, "--skip-bad", "--eta-max", "0.4") == 0
    for order in ((files["a.h5"], part), (part, files["a.h5"])):
        caplog.clear()
        assert build(*order, "--out", tmp_path / "m.h5") == 1
        line = one_error_line(caplog.text)
        assert f"'{part}' has {what}" in line and "KeyError" not in line
    assert not (tmp_path / "m.h5").exists() and not leftovers(tmp_path)


def test_merge_refuses_another_selection(files, tmp_path, caplog):
    part = tmp_path / "b_wide.h5"
    assert build(files["b.root"], "--out", part, "--skip-bad") == 0  # eta_max 0.7
    assert build(files["a.h5"], part, "--out", tmp_path / "m.h5") == 1
    assert "selection" in one_error_line(caplog.text)


@pytest.mark.parametrize("option", [
    ["--split", "0.7", "0.15", "0.15"], ["--split", "0.8", "0.1", "0.1"], ["--seed", "0"],
    ["--seed", "3"], ["--eta-max", "0.5"], ["--min-calib", "0.1"], ["--min-em", "0"],
    ["--skip-bad"], ["--no-images"], ["--no-cells"], ["--jobs", "2"], ["--step-size", "10"],
    ["--geometry", "cellgeo.root"], ["--cluster-tree-pdg", "*pi0*=111"]])
def test_merge_refuses_options_of_a_root_build(files, tmp_path, capsys, option):
    out = tmp_path / "m.h5"
    assert build(files["a.h5"], files["b.h5"], "--out", out, *option) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option[0] in err and "merging built datasets" in err
    assert not out.exists()


def test_merge_applies_compression(files, tmp_path):
    assert build(files["a.h5"], files["b.h5"], "--out", tmp_path / "m.h5",
                 "--compression", "none") == 0
    with h5py.File(tmp_path / "m.h5") as f:
        assert f["clusters/E_em"].compression is None


# ------------------------------------------------------------------ B. a full disk
def _limited(limit: int):
    """preexec_fn: files of at most ``limit`` bytes (a write beyond fails with EFBIG, as a full
    disk fails with ENOSPC; SIGXFSZ ignored so that the write returns the error)."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run_limited(args, limit, cwd):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "pionml.cli", *map(str, args), "--no-progress"],
                          preexec_fn=_limited(limit), capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_full_disk_build_is_one_line_and_keeps_the_previous_output(files, tmp_path, jobs):
    out = tmp_path / "prev.h5"
    shutil.copy(files["a.h5"], out)
    before = sha(out)
    r = _run_limited(["build", files["a.root"], "--out", out, "--compression", "none",
                      "--step-size", "10", "--jobs", jobs], 60_000, tmp_path)
    assert r.returncode == 1, r.stderr  # was: HDF5 traceback, then a segfault (-11 / 139)
    line = one_error_line(r.stderr)
    assert f"cannot write '{out}'" in line and "File too large" in line
    assert sha(out) == before and not leftovers(tmp_path)


def test_full_disk_merge_is_one_line(files, tmp_path):
    out = tmp_path / "m.h5"
    r = _run_limited(["build", files["a.h5"], files["b.h5"], "--out", out], 30_000, tmp_path)
    assert r.returncode == 1 and "cannot write" in one_error_line(r.stderr)
    assert not out.exists() and not leftovers(tmp_path)


def test_enospc_in_the_hdf5_writer_is_one_line(files, tmp_path, monkeypatch, caplog):
    import errno

    calls = {"n": 0}
    real = h5py.Dataset.__setitem__

    def full_disk(self, key, value):
        calls["n"] += 1
        if calls["n"] > 20:  # midway through the build
            raise OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28)")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_disk)
    out = tmp_path / "d.h5"
    previous = FORMAT_SIGNATURES["HDF5"] + b"previous"  # only a previous output is replaced
    out.write_bytes(previous)
    assert build(files["a.root"], "--out", out, "--step-size", "5") == 1
    line = one_error_line(caplog.text)
    assert "No space left on device (the disk is full)" in line and str(out) in line
    assert out.read_bytes() == previous and not leftovers(tmp_path)


def test_full_disk_simulate_is_one_line(tmp_path):
    out = tmp_path / "s.root"
    previous = FORMAT_SIGNATURES["ROOT"] + b"previous"
    out.write_bytes(previous)
    r = _run_limited(["simulate", "--events", "30", "--out", out], 20_000, tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"cannot write '{out}'" in one_error_line(r.stderr)
    assert out.read_bytes() == previous and not leftovers(tmp_path)


# ------------------------------------------------------------------ C. ClusterTree labels
def test_overlapping_cluster_tree_patterns_are_refused(tmp_path, caplog):
    out = tmp_path / "c.h5"
    pi0 = DATA / "clustertree-pi0.root"
    assert build(pi0, DATA / "clustertree-pipm.root", "--out", out,
                 "--cluster-tree-pdg", "*pi*=211", "--cluster-tree-pdg", "*pi0*=111") == 1
    line = one_error_line(caplog.text)  # was: every pi0 cluster labelled pi+, exit 0
    assert "clustertree-pi0.root" in line and "'*pi*=211'" in line and "'*pi0*=111'" in line
    assert not out.exists()
    # one pattern given with two ids
    caplog.clear()
    assert build(pi0, "--out", out, "--cluster-tree-pdg", "*pi0*=111",
                 "--cluster-tree-pdg", "*pi0*=211") == 1
    assert "'*pi0*' is given as 111 and as 211" in one_error_line(caplog.text)
    # two patterns that agree on the particle are fine; patterns naming each file once too
    assert build(pi0, "--out", out, "--cluster-tree-pdg", "*pi0*=111",
                 "--cluster-tree-pdg", "clustertree-*=111") == 0
    assert build(pi0, DATA / "clustertree-pipm.root", "--out", tmp_path / "c2.h5",
                 "--cluster-tree-pdg", "*pipm*=211", "--cluster-tree-pdg", "*pi0*=111") == 0
    with DatasetFile(tmp_path / "c2.h5") as ds:
        c = ds.read_clusters(["file_index", "label"])
        assert set(c["label"][c["file_index"] == 0]) == {1}
        assert set(c["label"][c["file_index"] == 1]) == {0}


def _cluster_tree_with_bad_pixel(path, value):
    import uproot

    from pionml.io.root import CLUSTER_TREE_IMAGES, write_cluster_tree

    arr = uproot.open(DATA / "clustertree-pi0.root")["ClusterTree"].arrays(library="np")
    image_branches = {atlas for atlas, _ in CLUSTER_TREE_IMAGES.values()}
    images = {img: arr[atlas].copy() for img, (atlas, _) in CLUSTER_TREE_IMAGES.items()}
    images["EMB2"][3, 5, 1] = value
    write_cluster_tree(path, images, {k: v for k, v in arr.items() if k not in image_branches})
    return len(arr["clusterE"])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_bad_pixel_skips_its_cluster_alone(tmp_path, caplog, value):
    src = tmp_path / "ct_pi0.root"
    n = _cluster_tree_with_bad_pixel(src, value)
    pdg = ["--cluster-tree-pdg", "*pi0*=111"]
    assert build(src, "--out", tmp_path / "x.h5", *pdg) == 1
    assert "branch 'EMB2', entry 3" in one_error_line(caplog.text)
    assert build(src, "--out", tmp_path / "c.h5", *pdg, "--skip-bad") == 0
    c = counts(tmp_path / "c.h5")  # was: the whole file skipped, its clusters not counted
    assert c["clusters_read"] == n and c["skipped"]["bad_energy"] == 1
    assert c["clusters_kept"] == n - 1 - sum(c["dropped"].values()) and c["accounting_ok"]
    assert not c["skipped_files"]
    with DatasetFile(tmp_path / "c.h5") as ds:
        assert 3 not in set(ds.read_clusters(["entry"])["entry"])
        assert np.isfinite(ds.read_images()["EMB2"]).all()


# ------------------------------------------------------------------ D. --min-em
def test_min_em_negative_refused_and_no_row_with_e_em_not_positive(files, tmp_path, capsys):
    from pionml.builder.builder import Selection
    from pionml.errors import ConfigError

    for bad in ("-1", "nan", "-inf"):
        with pytest.raises(SystemExit) as exc:
            build(files["a.root"], "--out", tmp_path / "x.h5", "--min-em", bad)
        assert exc.value.code == 2 and "--min-em" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="min_em = -0.5"):
        Selection(min_em=-0.5)
    src = write_root(tmp_path / "em.root", 10, 3, lambda b: set_cluster_values(
        b, "cluster_E", {0: 0.0, 1: -0.3, 2: 1e-9}))
    out = tmp_path / "em.h5"
    assert build(src, "--out", out) == 0
    c = counts(out)
    assert c["dropped"]["em_energy"] == 2  # 0 and -0.3 GeV; 1e-9 GeV is above min_em 0
    with DatasetFile(out) as ds:
        e = ds.read_clusters(["E_em"])["E_em"]
        assert (e > 0).all() and np.isfinite(e).all() and len(e) == 20 - 2 - sum(
            v for k, v in c["dropped"].items() if k != "em_energy")


# ------------------------------------------------------------------ E. one check of values
RECIPE = """
[dataset]
output = "r.h5"
workdir = "r_root"
[simulation]
seed = 7
events = {{ "pi0" = 10 }}
energy_min = 1.0
energy_max = 10.0
[selection]
eta_max = 0.7
min_calib = 0.2
min_em = 0.0
[split]
fractions = [0.7, 0.15, 0.15]
seed = 1
"""


def _recipe(tmp_path, replace: dict) -> Path:
    text = RECIPE.format()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.fixture
def no_simulation(monkeypatch):
    import pionml.builder.recipe as recipe

    def refuse(*a, **k):
        raise AssertionError("the recipe should have been refused before any simulation")

    monkeypatch.setattr(recipe, "_simulate_to_root", refuse)


@pytest.mark.parametrize("old,new,key", [
    ("eta_max = 0.7", 'eta_max = "wide"', '[selection] eta_max = "wide"'),
    ("eta_max = 0.7", "eta_max = nan", "[selection] eta_max = nan"),
    ("eta_max = 0.7", "eta_max = -1", "[selection] eta_max = -1"),
    ("eta_max = 0.7", "eta_max = 0", "[selection] eta_max = 0"),
    ("seed = 7", 'seed = "abc"', '[simulation] seed = "abc"'),
    ("seed = 7", "seed = 1.7", "[simulation] seed = 1.7"),
    ("seed = 7", "seed = -1", "[simulation] seed = -1"),
    ("seed = 7", "seed = 18446744073709551615", "[simulation] seed = 18446744073709551615"),
    ("seed = 7", "seed = 4294967295", "[simulation] seed = 4294967295"),  # + species index
    ("seed = 7", "seed = true", "[simulation] seed = true"),
    ("energy_max = 10.0", "energy_max = 1e30", "[simulation] energy_max = 1e+30"),
    ("energy_max = 10.0", "energy_max = inf", "[simulation] energy_max = inf"),
    ("energy_min = 1.0", "energy_min = -1.0", "[simulation] energy_min = -1.0"),
    ("energy_min = 1.0", "energy_min = 50.0", "energy_min = 50 is above energy_max = 10"),
    ("seed = 1\n", 'seed = "3"\n', '[split] seed = "3"'),
    ("min_em = 0.0", "min_em = -0.1", "[selection] min_em = -0.1"),
    ("min_calib = 0.2", 'min_calib = "0.2"', '[selection] min_calib = "0.2"'),
    ('"pi0" = 10', '"pi0" = 1000000000000', "[simulation] events.pi0 = 1000000000000"),
    ('"pi0" = 10', '"pi0" = 2.5', "[simulation] events.pi0 = 2.5"),
    ("fractions = [0.7, 0.15, 0.15]", 'fractions = ["0.7", 0.15, 0.15]', "[split] fractions"),
    ("fractions = [0.7, 0.15, 0.15]", "fractions = [0.7, 0.15, 0.2]", "sum to 1.05"),
    ('output = "r.h5"', "output = 3", "[dataset] output = 3"),
])
def test_recipe_values_refused_before_any_simulation(tmp_path, caplog, no_simulation, old, new,
                                                     key):
    path = _recipe(tmp_path, {old: new})
    assert main(["make-dataset", "--recipe", str(path), "--no-progress"]) == 1
    line = one_error_line(caplog.text)
    assert str(path) in line and key in line, line
    assert not (tmp_path / "r_root").exists() and not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("content,words", [
    ("[simulation]\nseed = 7\nevents = { \"pi0\" = 10 }\ncolour = 3\n",
     "unknown key(s) ['colour']"),
    ("[simulaton]\nseed = 7\n", "unknown section [simulaton]"),
    ("selection = 3\n[simulation]\nevents = { \"pi0\" = 10 }\n", "must be a table"),
    ("[simulation]\nevents = 10\n", "[simulation] events = 10"),
    ("this is not toml = = \n", "is not valid TOML"),
    (b"\xff\xfe\x00binary", "is not valid TOML"),
])
def test_recipe_files_that_are_not_recipes(tmp_path, caplog, no_simulation, content, words):
    path = tmp_path / "r.toml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    assert main(["make-dataset", "--recipe", str(path), "--no-progress"]) == 1
    assert words in one_error_line(caplog.text)


@pytest.mark.parametrize("argv", [
    ["simulate", "--events", "10", "--out", "x.root", "--seed", "-1"],
    ["simulate", "--events", "10", "--out", "x.root", "--seed", str(2**64)],
    ["simulate", "--events", "10", "--out", "x.root", "--seed", "1.7"],
    ["simulate", "--events", "10", "--out", "x.root", "--energy-max", "1e30"],
    ["simulate", "--events", str(10**12), "--out", "x.root"],
    ["build", "x.root", "--out", "x.h5", "--seed", str(2**32)],
    ["build", "x.root", "--out", "x.h5", "--eta-max", "nan"],
    ["train", "--seed", "-1"],
    ["train", "--seed", str(2**64)],
    ["train", "--seed", "abc"],
    ["lcw-derive", "--seed", "-3"],
    ["lcw-derive", "--events", str(10**11)],
    ["validate-sim", "--events", str(10**11)],
    ["combine", "--classifier", "a", "--pi0", "b", "--charged", "c", "--seed", "-1"],
    ["learning-curve", "--task", "classify", "--model", "cnn", "--sizes", "10", "--data", "x.h5",
     "--seed", str(2**32)],
    ["build", "x.root", "--out", "x.h5", "--image-min-fraction", "1"],
])
def test_bad_values_on_the_command_line_exit_2(tmp_path, capsys, argv):
    from pionml.cli import build_parser

    with pytest.raises(SystemExit) as exc:  # refused at parse time: nothing runs
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_cli_and_recipe_share_the_checks():
    import pionml.cli as cli
    from pionml import values

    # the same function behind the argparse converter and the recipe check
    for conv, check in ((cli.positive_float, values.positive_float), (cli.seed, values.seed),
                        (cli.non_negative_float, values.non_negative_float)):
        assert conv.__doc__ == check.__doc__
    assert values.seed(2**32 - 1) == 2**32 - 1 and cli.seed("4294967295") == 2**32 - 1
    for bad in (1.7, "1", True, -1, 2**32):
        with pytest.raises(ValueError):
            values.seed(bad)
    assert values.positive_float(np.float32(0.5)) == 0.5  # numpy numbers are numbers


# --jobs: never more processes than work
def _pid(_):
    return os.getpid()


def test_ordered_map_never_starts_more_processes_than_items(caplog):
    from pionml.parallel import ordered_map

    caplog.set_level("INFO")
    pids = list(ordered_map(_pid, range(2), jobs=40))
    assert len(set(pids)) <= 2 and os.getpid() not in pids
    assert "--jobs 40: the work is 2 batches, so 2 processes" in caplog.text


def test_build_jobs_capped_to_the_parts_and_same_dataset(files, tmp_path, caplog):
    from pionml.io.digest import hdf5_digest

    caplog.set_level("INFO")
    assert build(files["a.root"], "--out", tmp_path / "j1.h5") == 0
    assert build(files["a.root"], "--out", tmp_path / "j40.h5", "--jobs", "40") == 0
    assert "--jobs 40: the work is 1 parts" in caplog.text
    # more processes than cores (2 here) is allowed: 3 parts of 15 events
    assert build(files["a.root"], "--out", tmp_path / "j3.h5", "--jobs", "3",
                 "--step-size", "15") == 0
    assert hdf5_digest(tmp_path / "j1.h5") == hdf5_digest(tmp_path / "j40.h5") == hdf5_digest(
        tmp_path / "j3.h5")


def test_a_failure_while_planning_the_parts_leaves_no_parts_folder(files, tmp_path, monkeypatch):
    """The parts folder of a --jobs build is removed whatever fails, also before the workers
    start (planning the parts, starting the pool)."""
    import pionml.builder.parallel as parallel

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parallel, "_parts", broken)
    out = tmp_path / "out"
    out.mkdir()
    assert build(files["a.root"], "--out", out / "d.h5", "--jobs", "2") == 1
    assert list(out.iterdir()) == []


def test_simulate_jobs_capped_to_the_batches(tmp_path, caplog):
    from pionml.io.digest import root_digest

    caplog.set_level("INFO")
    args = ["simulate", "--events", "6", "--batch-size", "3", "--seed", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one.root")]) == 0
    assert main([*args, "--out", str(tmp_path / "many.root"), "--jobs", "40"]) == 0
    assert "--jobs 40: the work is 2 batches, so 2 processes" in caplog.text
    assert root_digest(tmp_path / "one.root") == root_digest(tmp_path / "many.root")


# ------------------------------------------------------------------ attacks on the change
def test_three_part_merge_with_one_bad_part(files, tmp_path, caplog):
    bad = tmp_path / "notpionml.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.arange(3)
    out = tmp_path / "m.h5"
    assert build(files["a.h5"], bad, files["b.h5"], "--out", out) == 1
    line = one_error_line(caplog.text)
    assert "notpionml.h5" in line and "not a pionml dataset" in line
    assert not out.exists() and not leftovers(tmp_path)


def test_truncated_part(files, tmp_path, caplog):
    cut = tmp_path / "cut.h5"
    data = files["b.h5"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "m.h5"
    assert build(files["a.h5"], cut, "--out", out) == 1
    assert "cut.h5" in one_error_line(caplog.text)
    assert not out.exists() and not leftovers(tmp_path)


def test_part_with_corrupt_chunks(files, tmp_path, caplog):
    # the header reads, the rows do not: one line naming the part and the rows
    bad = tmp_path / "corrupt.h5"
    shutil.copy(files["b.h5"], bad)
    with h5py.File(bad, "r") as f:
        offset = f["images/EMB2"].id.get_chunk_info(0).byte_offset
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00garbage" * 64)
    out = tmp_path / "m.h5"
    assert build(files["a.h5"], bad, "--out", out) == 1
    line = one_error_line(caplog.text)
    assert "corrupt.h5" in line and "cannot read rows" in line
    assert not out.exists() and not leftovers(tmp_path)


def test_root_file_renamed_h5_is_read_as_root(files, tmp_path, caplog):
    fake = tmp_path / "really_root.h5"
    shutil.copy(files["a.root"], fake)
    assert build(files["a.h5"], fake, "--out", tmp_path / "m.h5") == 1
    assert "not both" in one_error_line(caplog.text)
    # alone it builds as the ROOT file it is
    assert build(fake, "--out", tmp_path / "r.h5") == 0


def test_merge_output_equal_to_a_part(files, tmp_path, caplog):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    shutil.copy(files["a.h5"], a)
    shutil.copy(files["b.h5"], b)
    before = sha(b)
    assert build(a, b, "--out", b) == 1
    assert "input" in one_error_line(caplog.text) and sha(b) == before


def test_merge_of_a_merge_with_one_of_its_parts(files, tmp_path, caplog):
    m = tmp_path / "m.h5"
    assert build(files["a.h5"], files["b.h5"], "--out", m) == 0
    assert build(m, files["b.h5"], "--out", tmp_path / "mm.h5") == 1
    assert "both built from the ROOT file 'b.root'" in one_error_line(caplog.text)


def test_merge_with_empty_parts_first_or_only(files, tmp_path):
    # the schema comes from the first part with rows; empty parts add their counts
    assert build(files["empty.h5"], files["a.h5"], "--out", tmp_path / "m.h5") == 0
    with DatasetFile(tmp_path / "m.h5") as m, DatasetFile(files["a.h5"]) as a:
        assert len(m) == len(a) and m.fields() == a.fields()
    empty2 = tmp_path / "empty2.h5"
    assert build(write_root(tmp_path / "empty2.root", 0, 5), "--out", empty2, "--skip-bad",
                 "--eta-max", "0.4") == 0
    assert build(files["empty.h5"], empty2, "--out", tmp_path / "e.h5") == 0
    assert counts(tmp_path / "e.h5")["clusters_read"] == 0


def test_merge_of_merges_adds_up(files, tmp_path):
    m1, m2 = tmp_path / "m1.h5", tmp_path / "m2.h5"
    assert build(files["a.h5"], files["empty.h5"], "--out", m1) == 0
    assert build(m1, files["b.h5"], "--out", m2) == 0
    c = counts(m2)
    assert c["clusters_read"] == sum(counts(files[k])["clusters_read"]
                                     for k in ("a.h5", "b.h5", "empty.h5"))
    with DatasetFile(m2) as ds:
        assert len(ds.attrs["config"]["merged_from"]) == 2 and c["accounting_ok"]


def test_merge_part_with_counts_that_do_not_add_up(files, tmp_path, caplog):
    import json

    bad = tmp_path / "tampered.h5"
    shutil.copy(files["b.h5"], bad)
    with h5py.File(bad, "a") as f:
        c = json.loads(f.attrs["counts"])
        c["clusters_kept"] += 5
        f.attrs["counts"] = json.dumps(c)
    assert build(files["a.h5"], bad, "--out", tmp_path / "m.h5") == 1
    assert "do not add up" in one_error_line(caplog.text)


def test_recipe_that_is_a_directory(tmp_path, caplog, no_simulation):
    assert main(["make-dataset", "--recipe", str(tmp_path), "--no-progress"]) == 1
    assert "is a directory" in one_error_line(caplog.text)
