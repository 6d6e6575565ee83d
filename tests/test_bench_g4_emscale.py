"""The bremsstrahlung stand-in of the Geant4 cross-check (benchmarks/bench_g4_emscale.py,
physics.md 7.7-7.8 (i)): Tsai's cross-section against its complete-screening limit and the
radiation length of lead it implies, and the tables' layout that Geant4's reader expects."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 1 / 137.035999
RE2_MB = 2.8179403262e-13**2 * 1e27  # r_e^2 in mb


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "bench_g4_emscale.py"
    spec = importlib.util.spec_from_file_location("bench_g4_emscale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs neither Geant4 nor xraydb at import
    return module


def _complete_screening(z):
    """4 alpha r_e^2 [(4/3)(L_rad - f) + (4/3) L'_rad / Z + (1/9)(1 + 1/Z)] (Tsai, k -> 0)."""
    a2 = (ALPHA * z) ** 2
    f = a2 * (1 / (1 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2**2 - 0.002 * a2**3)
    l_rad = math.log(184.15 * z ** (-1 / 3))
    l_rad_p = math.log(1194.0 * z ** (-2 / 3))
    return 4 * ALPHA * RE2_MB * (4 / 3 * (l_rad - f) + 4 / 3 * l_rad_p / z + (1 + 1 / z) / 9)


@pytest.mark.parametrize("z", [6, 18, 26, 82])
def test_tsai_matches_complete_screening_at_high_energy(bench, z):
    chi = bench.tsai_chi(z, 1e5, 1e-7)  # 100 GeV electron, soft photon: screening complete
    assert chi == pytest.approx(_complete_screening(z), rel=2e-3)


def test_tsai_gives_the_radiation_length_of_lead(bench):
    # X0 = A / (N_A 4 alpha r_e^2 [Z^2 (L_rad - f) + Z L'_rad]); PDG: 6.37 g/cm2 for Pb
    z, a = 82, 207.2
    chi0 = bench.tsai_chi(z, 1e5, 1e-7) * 1e-27  # cm^2, per Z^2
    bracket = 0.75 * (chi0 / (4 * ALPHA * RE2_MB * 1e-27) - (1 + 1 / z) / 9)
    x0 = a / (6.02214076e23 * 4 * ALPHA * RE2_MB * 1e-27 * z * z * bracket)
    assert x0 == pytest.approx(6.37, rel=0.01)


def test_tsai_spectrum_shape_and_low_energy_suppression(bench):
    """At 100 GeV the spectrum has Tsai's complete-screening shape in y = k/E,
    (4/3 - 4/3 y + y^2) S + (1 - y)(1 + 1/Z)/9, with a minimum between the ends; at 1 keV the
    factor beta^2 suppresses it."""
    z = 82
    norm = _complete_screening(z) / (4 * ALPHA * RE2_MB)  # (4/3) S + (1 + 1/Z)/9
    s_term = 0.75 * (norm - (1 + 1 / z) / 9)
    chi0 = bench.tsai_chi(z, 1e5, 1e-7)
    for y in (0.2, 0.5, 0.7, 0.95):
        shape = ((4 / 3 - 4 / 3 * y + y * y) * s_term + (1 - y) * (1 + 1 / z) / 9) / norm
        assert bench.tsai_chi(z, 1e5, y) / chi0 == pytest.approx(shape, rel=3e-3)
    assert bench.tsai_chi(z, 1e5, 0.6) < min(chi0, bench.tsai_chi(z, 1e5, 0.99))
    beta2 = 1e-3 * (1e-3 + 2 * 0.51099895) / (1e-3 + 0.51099895) ** 2
    assert beta2 < 0.01 and bench.tsai_chi(z, 1e-3, 0.5) < 0.01 * bench.tsai_chi(z, 10.0, 0.5)


def test_brem_table_layout(bench, tmp_path, monkeypatch):
    """brem_SB/brZ as G4Physics2DVector::Retrieve reads it: 'type nx ny', the k/T grid, the
    ln(T/MeV) grid, then ny rows of nx values, for Z = 1-100."""
    calls = []
    monkeypatch.setattr(bench, "tsai_chi", lambda z, t, k: calls.append(z) or 1.0 + k + t)
    bench.write_brem_tables(str(tmp_path))
    tokens = (tmp_path / "brem_SB" / "br82").read_text().split()
    kind, nx, ny = int(tokens[0]), int(tokens[1]), int(tokens[2])
    assert kind == 2 and len(tokens) == 3 + nx + ny + nx * ny
    kappa = [float(x) for x in tokens[3:3 + nx]]
    ln_t = [float(x) for x in tokens[3 + nx:3 + nx + ny]]
    assert kappa[0] == 0.0 and kappa[-1] == 1.0 and kappa == sorted(kappa)
    assert ln_t[0] == pytest.approx(math.log(1e-3), abs=1e-4)
    assert ln_t[-1] == pytest.approx(math.log(1e4), abs=1e-4)
    last_row = [float(x) for x in tokens[3 + nx + ny + (ny - 1) * nx:]]  # T = 10 GeV
    assert last_row == pytest.approx([1.0 + k + 1e4 for k in kappa], rel=1e-5)
    assert sorted(set(calls)) == list(range(1, 101))
