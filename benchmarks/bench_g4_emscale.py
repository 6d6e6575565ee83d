"""Geant4 cross-check of the EM-scale response of soft photon and pi0 showers (physics.md 3.6 and
7.7-7.8, item (i); issue 29 item 2).

A flat stack of ATLAS EMB accordion periods at normal incidence (one period perpendicular to the
plates: steel 0.2, Pb 1.53, steel 0.2, glue 0.27, LAr 2.1, kapton 0.275, LAr 2.1 mm; EMB1 13,
EMB2 51, EMB3 5 periods, the depths of pionml's geometry at eta 0: 4.3, 16.9, 1.5 X0), behind
the material of pionml's geometry (physics.md 1.4: the inner detector's 0.45 X0 as Si, the rest
of the 2.0 X0 in front as Al, an 11 mm LAr presampler, 0.45 X0 of Al). The EM scale is ATLAS's: the
sampling fraction f = LAr energy / energy deposited in EMB1-3 (all materials) of 50 GeV
electrons starting at the accordion face (Athena ``LarEMSamplingFraction``: 0.18489 for
0.1 < |eta| < 0.75 with Geant4 10.6); a cell's EM-scale energy is its LAr energy / f, its
calibration-hit energy everything deposited in its volume. EM physics:
``G4EmStandardPhysics_option1`` with the multiple-scattering step limit ``UseSafety`` (that of
ATLAS's ``G4EmStandardPhysics``), range cuts 0.1 mm in the accordion and 0.7 mm elsewhere (as
Athena's EMB region). Geant4 itself is not a dependency of pionml; in pionml's environment:

    pip install geant4_pybind xraydb                 # xraydb only for ``emlow``
    python benchmarks/bench_g4_emscale.py emlow /tmp/g4data
    python benchmarks/bench_g4_emscale.py stack --data /tmp/g4data
    python benchmarks/bench_g4_emscale.py cells --data /tmp/g4data --electron 50 --events 200 \
        --seed 7 --out e50.npz
    python benchmarks/bench_g4_emscale.py cells --data /tmp/g4data --events 4000 --seed 101 \
        --out pi0_101.npz
    PYTHONPATH=. python benchmarks/bench_g4_emscale.py cluster e50.npz pi0_101.npz --reference

``emlow DIR`` writes a stand-in for the part of the G4EMLOW data set that this physics list reads
(for machines that cannot download it): ``brem_SB/brZ`` from Tsai's screened Bethe-Heitler
cross-section with the Coulomb correction (the formula of Geant4's G4eBremsstrahlungRelModel
without LPM; Rev. Mod. Phys. 46 (1974) 815) in the Seltzer-Berger table format, and
``epics2017/phot`` photo-absorption from the Elam tables (xraydb; one shell, binding energy
1 keV; above 0.8 MeV a c1/E + c3/E^3 extrapolation matching value and slope), plus an empty
``ENSDFSTATE.dat``. With the real data sets, give ``--data`` the folder that holds them
(G4EMLOW8.8, ...) and, if wished, ``--physics opt0`` (ATLAS's list; it needs the full G4EMLOW).

``stack`` prints, for electrons at the face (1, 5, 50 GeV) and photons from the vertex (0.25-10
GeV), the response (LAr / f over deposit) of EMB1-3 and of each layer, and within radii of the
shower axis; then the share of the photons' energy deposited in the material in front, the PS,
EMB1 and EMB2, beside pionml's (physics.md 3.6, "The material in front"; ``stack-table FOLDER``
prints both again from the saved runs).
``cells`` writes per-cell LAr and deposited energy (PS, EMB1-3 cells of the ATLAS eta-phi
granularity, mapped to mm at r = 1650 mm) for pi0 decayed by pionml's kinematics (log-uniform
0.2-50 GeV, from eta 0) or for electrons at the face. ``cluster`` adds pionml's electronic noise,
4-2-0 clustering and moments (cells placed at eta 0.4) and prints the medians of E^EM /
ENG_CALIB_TOT in bins of ENG_CALIB_TOT, and the clusters per pi0; ``--reference`` adds pionml's own
simulation of the same pi0 energies (default, with the transition effect of physics.md 3.6, and
without the solenoid field), and, without field and in Geant4's cell window, pionml's showers
against those before 2026-12-06 (the spot law and the front deposits of physics.md 3.3, one at a
time and both; physics.md 7.7-7.8 (i), "Clusters per pi0"). ``--noise total|none`` changes the
noise added to the Geant4 cells.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np

R_REF = 1650.0  # mm: the eta-phi granularity of every layer is mapped to mm at this radius
X0_SI, X0_AL = 93.7, 88.97  # mm, Geant4's G4_Si and G4_Al
PS_MM = 11.0  # the presampler's active LAr (physics.md 1.1)
PERIOD = [("Fe", "G4_Fe", 0.2), ("Pb", "G4_Pb", 1.53), ("Fe", "G4_Fe", 0.2),
          ("glue", "G4_KAPTON", 0.27), ("LAr", "G4_lAr", 2.1), ("kap", "G4_KAPTON", 0.275),
          ("LAr", "G4_lAr", 2.1)]  # one accordion period perpendicular to the plates (1.3)
WINDOW = (0.35, 0.39)  # half-widths in eta and phi of the cells scored


def _layout():
    """The stack from pionml's geometry at eta = 0 (physics.md 1.1-1.4): the material in front
    (the inner detector as Si, the rest of DM_front and DM_PS_EMB1 as Al), the accordion
    periods of EMB1-3, and the cells (name, d eta, d phi, n_eta, n_phi) of PS and EMB1-3."""
    from pionml.geometry import DEAD_MATERIAL, layer_by_name, material_segments
    from pionml.sim.params import DEFAULT_PARAMS

    id_x0 = DEFAULT_PARAMS.id_x0
    front = [("Si", "G4_Si", id_x0 * X0_SI), ("gap1", "G4_Galactic", 300.0),
             ("Al1", "G4_Al", (DEAD_MATERIAL["DM_front"][2] - id_x0) * X0_AL),
             ("gap2", "G4_Galactic", 50.0)]
    behind_ps = [("Al2", "G4_Al", DEAD_MATERIAL["DM_PS_EMB1"][2] * X0_AL),
                 ("gap3", "G4_Galactic", 5.0)]
    period_mm = sum(t for _, _, t in PERIOD)
    segments = {seg.name: seg for seg in material_segments(np.array(0.0))}
    layers = tuple((name, int(round(float(segments[name].x0) * layer_by_name(name).x0_mm
                                    / period_mm))) for name in ("EMB1", "EMB2", "EMB3"))
    groups = []
    for name, layer in (("PS", "PreSamplerB"), ("EMB1", "EMB1"), ("EMB2", "EMB2"),
                        ("EMB3", "EMB3")):
        lay = layer_by_name(layer)
        groups.append((name, lay.deta, lay.dphi, int(round(2 * WINDOW[0] / lay.deta)),
                       int(round(2 * WINDOW[1] / lay.dphi))))
    return front, behind_ps, layers, tuple(groups)


FRONT, BEHIND_PS, LAYERS, GROUPS = _layout()
RINGS = (0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 1900.0)  # mm, around the shower axis
STACK_RUNS = (("e-", 50.0, 200, False), ("e-", 1.0, 1500, False), ("e-", 5.0, 600, False),
              ("gamma", 0.25, 4000, True), ("gamma", 0.5, 3000, True),
              ("gamma", 1.0, 2000, True), ("gamma", 2.0, 1500, True), ("gamma", 5.0, 800, True),
              ("gamma", 10.0, 400, True))
BINS = ((0.2, 0.3), (0.3, 0.5), (0.5, 1.0), (0.2, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 30.0))
DATA_SETS = (("G4NEUTRONHPDATA", "G4NDL4.7.1"), ("G4LEDATA", "G4EMLOW8.8"),
             ("G4LEVELGAMMADATA", "PhotonEvaporation6.1.2"),
             ("G4RADIOACTIVEDATA", "RadioactiveDecay6.1.2"),
             ("G4PARTICLEXSDATA", "G4PARTICLEXS4.2"),
             ("G4PIIDATA", "G4PII1.3"), ("G4REALSURFACEDATA", "RealSurface2.2"),
             ("G4SAIDXSDATA", "G4SAIDDATA2.0"), ("G4ABLADATA", "G4ABLA3.3"),
             ("G4INCLDATA", "G4INCL1.3"), ("G4ENSDFSTATEDATA", "G4ENSDFSTATE3.0"),
             ("G4CHANNELINGDATA", "G4CHANNELING2.0"))
ELEMENTS = (1, 6, 7, 8, 13, 14, 18, 26, 29, 82)  # H C N O (kapton, vacuum), Al, Si, Ar, Fe, Cu, Pb


# --------------------------------------------------------------------------- stand-in data

def tsai_chi(z: int, t_mev: float, kappa: float) -> float:
    """beta^2/Z^2 k dsigma/dk (mb) of electron bremsstrahlung, Tsai's complete formula with the
    Thomas-Fermi screening functions and the Coulomb correction (no LPM, no dielectric
    suppression), at kinetic energy ``t_mev`` and photon fraction ``kappa`` = k/T."""
    me, alpha = 0.51099895, 1 / 137.035999
    re2_mb = 2.8179403262e-13**2 * 1e27
    e = t_mev + me
    k = max(kappa, 1e-12) * t_mev
    ep = max(e - k, me * 1.0000001)
    y = k / e
    a2 = (alpha * z) ** 2
    fc = a2 * (1 / (1 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2 * a2 - 0.002 * a2**3)
    z13 = z ** (-1 / 3)
    gam = 100 * me * k / (e * ep) * z13
    eps = gam * z13
    phi1 = (20.863 - 2 * math.log(1 + (0.55846 * gam) ** 2)
            - 4 * (1 - 0.6 * math.exp(-0.9 * gam) - 0.4 * math.exp(-1.5 * gam)))
    phi12 = 2 / (3 * (1 + 6.5 * gam + 6 * gam * gam))
    psi1 = (28.340 - 2 * math.log(1 + (3.621 * eps) ** 2)
            - 4 * (1 - 0.7 * math.exp(-8 * eps) - 0.3 * math.exp(-29.2 * eps)))
    psi12 = 2 / (3 * (1 + 40 * eps + 400 * eps * eps))
    lnz = math.log(z)
    br = ((1 - y + 0.75 * y * y) * ((0.25 * phi1 - lnz / 3 - fc) + (0.25 * psi1 - 2 * lnz / 3) / z)
          + 0.125 * (1 - y) * (phi12 + psi12 / z))
    beta2 = t_mev * (t_mev + 2 * me) / (e * e)
    return beta2 * 16 / 3 * alpha * re2_mb * max(br, 0.0)


def write_brem_tables(emlow: str) -> None:
    """``emlow``/brem_SB/br1..br100 in the layout of Geant4's G4Physics2DVector::Retrieve: 'type
    nx ny', the k/T grid, the ln(T/MeV) grid (1 keV - 10 GeV), then ny rows of nx chi values."""
    os.makedirs(os.path.join(emlow, "brem_SB"), exist_ok=True)
    kappas = [0.0] + [0.05 * i for i in range(1, 20)] + [0.97, 0.99, 0.995, 0.999, 0.9995,
                                                         0.9999, 0.99995, 1.0]
    ln_t = np.linspace(math.log(1e-3), math.log(1e4), 57)
    for z in range(1, 101):
        rows = [" ".join(f"{tsai_chi(z, math.exp(y), k):.6g}" for k in kappas) for y in ln_t]
        with open(os.path.join(emlow, "brem_SB", f"br{z}"), "w") as f:
            f.write(f"2 {len(kappas)} {len(ln_t)}\n" + " ".join(f"{k:.6g}" for k in kappas) + "\n"
                    + " ".join(f"{y:.6g}" for y in ln_t) + "\n" + "\n".join(rows) + "\n")


def photo_cross_section(z: int, e_mev: float) -> float:
    """Photo-absorption cross-section (barn per atom) from the Elam tables (xraydb)."""
    import xraydb

    return (float(xraydb.mu_elam(xraydb.atomic_symbol(z), e_mev * 1e6, kind="photo"))
            * xraydb.atomic_mass(z) / 0.602214076)


def write_photo_tables(emlow: str) -> None:
    """``emlow``/epics2017/phot/pe-cs-Z, pe-high-Z, pe-low-Z for ``ELEMENTS``, one shell (binding
    1 keV): sigma E^3 tabulated up to 0.8 MeV, above it c1/E + c3/E^3 (value and slope matched)."""
    import xraydb

    phot = os.path.join(emlow, "epics2017", "phot")
    os.makedirs(phot, exist_ok=True)
    e_join = 0.8  # MeV: the Elam tables end here
    for z in ELEMENTS:
        grid = set(np.geomspace(1e-3, e_join, 400))
        for edge in xraydb.xray_edges(xraydb.atomic_symbol(z)).values():
            if 1e-3 < edge.energy * 1e-6 < e_join:
                grid.update([edge.energy * 1e-6 * (1 - 1e-5), edge.energy * 1e-6 * (1 + 1e-5)])
        grid = sorted(grid)
        with open(os.path.join(phot, f"pe-cs-{z}.dat"), "w") as f:  # sigma E^3, barn MeV^3
            f.write(f"{grid[0]:.8g} {grid[-1]:.8g} {len(grid)}\n{len(grid)}\n")
            f.writelines(f"{e:.8g} {photo_cross_section(z, e) * e**3:.8g}\n" for e in grid)
        s0 = photo_cross_section(z, e_join)
        slope = math.log(s0 / photo_cross_section(z, 0.95 * e_join)) / math.log(1 / 0.95)
        r = min(max((-slope - 1) / 2, 0.0), 1.0)  # c3/E^3 share at 0.8 MeV
        fit = f"0.001 {s0 * (1 - r) * e_join:.8g} 0 {s0 * r * e_join**3:.8g} 0 0 0\n"
        for kind in ("high", "low"):
            with open(os.path.join(phot, f"pe-{kind}-{z}.dat"), "w") as f:
                f.write(f"1 1 {e_join}\n{fit}")


def write_emlow(folder: str) -> None:
    """The G4EMLOW stand-in (module docstring) under ``folder``."""
    emlow = os.path.join(folder, "G4EMLOW8.8")
    write_brem_tables(emlow)
    write_photo_tables(emlow)
    os.makedirs(os.path.join(folder, "G4ENSDFSTATE3.0"), exist_ok=True)
    open(os.path.join(folder, "G4ENSDFSTATE3.0", "ENSDFSTATE.dat"), "w").close()
    print(f"wrote {emlow} (brem_SB Z=1-100, epics2017/phot Z={','.join(map(str, ELEMENTS))}); "
          f"chi(Pb, 1 GeV, k/T=0.01) = {tsai_chi(82, 1000.0, 0.01):.2f} mb, "
          f"sigma_photo(Pb, 100 keV) = {photo_cross_section(82, 0.1):.0f} b")


def set_data_env(folder: str) -> None:
    """Point Geant4 at ``folder`` (data sets missing there point at an empty name: the EM-only
    physics list does not read them); variables already set are kept."""
    os.environ.setdefault("GEANT4_DATA_DIR", folder)
    for var, name in DATA_SETS:
        os.environ.setdefault(var, os.path.join(folder, name))


# --------------------------------------------------------------------------- Geant4 runs

def _geant4():
    try:
        import geant4_pybind
    except ImportError:
        sys.exit("bench_g4_emscale: needs geant4_pybind (pip install geant4_pybind)")
    return geant4_pybind


def run_geant4(kind: str, particle: str, energy, n: int, front: bool, seed: int, physics: str,
               cut_mm: float, out: str, pi0=None) -> None:
    """One Geant4 run in this process: ``kind`` 'stack' (rings) or 'cells'. ``energy`` is one
    energy (GeV) for a single particle, or ``pi0`` = per-event (e1, x1, y1, e2, x2, y2)."""
    g4 = _geant4()
    mm, gev = g4.mm, g4.GeV

    class Det(g4.G4VUserDetectorConstruction):
        def __init__(self):
            super().__init__()
            self.keep, self.sensitive, self.dets = [], [], {}

        def Construct(self):
            nist = g4.G4NistManager.Instance()
            wl = g4.G4LogicalVolume(g4.G4Box("W", 2 * g4.m, 2 * g4.m, 3 * g4.m),
                                    nist.FindOrBuildMaterial("G4_Galactic"), "W")
            wp = g4.G4PVPlacement(None, g4.G4ThreeVector(), wl, "W", None, False, 0)
            self.keep.append(wl)
            z = -2900.0
            made = {}

            def place(lv, name, t, copy):
                nonlocal z
                self.keep.append(g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, (z + t / 2) * mm),
                                                  lv, name, wl, False, copy))
                z += t

            def slab(key, name, material, t, n_x=1, n_y=1, dx=3800.0, dy=3800.0, rings=False):
                if key in made:
                    return made[key]
                mat = nist.FindOrBuildMaterial(material)
                if rings:  # one tube per ring around the axis
                    lvs = [g4.G4LogicalVolume(g4.G4Tubs(name, RINGS[i] * mm, RINGS[i + 1] * mm,
                                                        t / 2 * mm, 0, 2 * math.pi), mat, name)
                           for i in range(len(RINGS) - 1)]
                    self.keep += lvs
                    made[key] = lvs
                    return lvs
                box = g4.G4LogicalVolume(g4.G4Box(name, n_x * dx / 2 * mm, n_y * dy / 2 * mm,
                                                  t / 2 * mm), mat, name)
                self.keep.append(box)
                leaf = box
                if n_x * n_y > 1:  # eta strips, then phi cells (replicas)
                    strip = g4.G4LogicalVolume(g4.G4Box(name + "x", dx / 2 * mm, n_y * dy / 2 * mm,
                                                        t / 2 * mm), mat, name + "x")
                    leaf = g4.G4LogicalVolume(g4.G4Box(name + "c", dx / 2 * mm, dy / 2 * mm,
                                                       t / 2 * mm), mat, name + "c")
                    self.keep += [strip, leaf,
                                  g4.G4PVReplica(name + "x", strip, box, g4.EAxis.kXAxis, n_x,
                                                 dx * mm),
                                  g4.G4PVReplica(name + "c", leaf, strip, g4.EAxis.kYAxis, n_y,
                                                 dy * mm)]
                made[key] = (box, leaf)
                return made[key]

            def sensitive(lv, det_name, n_i, n_x, n_y):
                self.sensitive.append((lv, det_name, n_i, n_x, n_y))

            cells = kind == "cells"
            group = {g[0]: g for g in GROUPS}
            self.region = g4.G4Region("EMB")  # the accordion: Athena's EMB region and its cut
            if front:
                for name, material, t in FRONT:
                    box, _ = slab(name, name, material, t)
                    place(box, name, t, 0)
                    if not name.startswith("gap"):
                        sensitive(box, name, 1, 1, 1)
                if cells:
                    _, deta, dphi, n_x, n_y = group["PS"]
                    box, leaf = slab("PS", "PS", "G4_lAr", PS_MM, n_x, n_y, deta * R_REF,
                                     dphi * R_REF)
                    sensitive(leaf, "PS_LAr", 1, n_x, n_y)
                else:
                    box, _ = slab("PS", "PS", "G4_lAr", PS_MM)
                    sensitive(box, "PS", 1, 1, 1)
                place(box, "PS", PS_MM, 0)
                for name, material, t in BEHIND_PS:
                    box, _ = slab(name, name, material, t)
                    place(box, name, t, 0)
                    if not name.startswith("gap"):
                        sensitive(box, name, 1, 1, 1)
            n_rings = len(RINGS) - 1
            for layer, n_periods in LAYERS:
                for period in range(n_periods):
                    for name, material, t in PERIOD:
                        det = f"{layer}_{name}"
                        if cells:
                            _, deta, dphi, n_x, n_y = group[layer]
                            box, leaf = slab(det, det, material, t, n_x, n_y, deta * R_REF,
                                             dphi * R_REF)
                            if det not in self.dets:
                                self.dets[det] = True
                                sensitive(leaf, det, n_periods, n_x, n_y)
                                self.region.AddRootLogicalVolume(box)
                            place(box, det, t, period)
                        else:
                            lvs = slab(det, det, material, t, rings=True)
                            if det not in self.dets:
                                self.dets[det] = True
                                for lv in lvs:
                                    sensitive(lv, det, n_periods, n_rings, 1)
                                    self.region.AddRootLogicalVolume(lv)
                            for i, lv in enumerate(lvs):
                                self.keep.append(g4.G4PVPlacement(
                                    None, g4.G4ThreeVector(0, 0, (z + t / 2) * mm), lv, det, wl,
                                    False, period * n_rings + i))
                            z += t
            return wp

        def ConstructSDandField(self):
            sdm = g4.G4SDManager.GetSDMpointer()
            made = self.detectors = {}  # held: Geant4 does not own Python objects
            for lv, name, n_i, n_x, n_y in self.sensitive:
                if name not in made:
                    det = g4.G4MultiFunctionalDetector(name)
                    if kind == "cells" and n_x * n_y > 1:
                        scorer = g4.G4PSEnergyDeposit3D("edep", n_i, n_x, n_y, 2, 1, 0)
                    else:
                        scorer = g4.G4PSEnergyDeposit("edep")
                    det.RegisterPrimitive(scorer)
                    sdm.AddNewDetector(det)
                    made[name] = (det, scorer)
                self.SetSensitiveDetector(lv, made[name][0])
            self.names = list(made)

    z_gun = -2950.0

    class Gun(g4.G4VUserPrimaryGeneratorAction):
        def __init__(self):
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.i = 0

        def GeneratePrimaries(self, event):
            if pi0 is None:
                shots = [(particle, energy, 0.0, 0.0)]
            else:
                e1, x1, y1, e2, x2, y2 = pi0[self.i]
                shots = [("gamma", e1, x1, y1), ("gamma", e2, x2, y2)]
            for name, e, x, y in shots:  # from z = -2950 mm, in vacuum up to the first layer
                self.gun.SetParticleDefinition(g4.G4Gamma.Definition() if name == "gamma"
                                               else g4.G4Electron.Definition())
                self.gun.SetParticleEnergy(e * gev)
                self.gun.SetParticlePosition(g4.G4ThreeVector(x * mm, y * mm, z_gun * mm))
                self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
                self.gun.GeneratePrimaryVertex(event)
            self.i += 1

    rows = []

    class Events(g4.G4UserEventAction):
        ids = None

        def EndOfEventAction(self, event):
            hce = event.GetHCofThisEvent()
            sdm = g4.G4SDManager.GetSDMpointer()
            if self.ids is None:
                self.ids = {n: sdm.GetCollectionID(n + "/edep") for n in det.names}
            rows.append({n: list(hce.GetHC(i)) for n, i in self.ids.items()})

    g4.G4Random.setTheSeed(seed)
    rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
    det = Det()
    rm.SetUserInitialization(det)
    physics_list = g4.G4VModularPhysicsList()
    physics_list.RegisterPhysics(g4.G4EmStandardPhysics() if physics == "opt0"
                                 else g4.G4EmStandardPhysics_option1())
    rm.SetUserInitialization(physics_list)

    gun, events = Gun(), Events()  # held here: Geant4 does not own Python objects

    class Actions(g4.G4VUserActionInitialization):
        def Build(self):
            self.SetUserAction(gun)
            self.SetUserAction(events)

    actions = Actions()
    rm.SetUserInitialization(actions)
    ui = g4.G4UImanager.GetUIpointer()
    ui.ApplyCommand("/process/msc/StepLimit UseSafety")
    ui.ApplyCommand("/run/verbose 0")
    rm.Initialize()
    # range cuts as Athena's: 0.7 mm (Geant4's default) outside the accordion, 0.1 mm in it
    # (G4AtlasTools EMBPhysicsRegionTool); SetDefaultCutValue is not honoured through the
    # Python bindings, the commands are
    ui.ApplyCommand("/run/setCut 0.7 mm")
    ui.ApplyCommand(f"/run/setCutForRegion EMB {cut_mm} mm")
    t0 = time.time()
    rm.BeamOn(n)
    seconds = time.time() - t0
    _save(kind, rows, out, seconds, dict(particle=particle, energy=energy, n=n, front=front,
                                         seed=seed, physics=physics, cut_mm=cut_mm),
          pi0)
    print(f"{particle} {'pi0 photons' if pi0 is not None else energy} x{n}: {seconds:.1f} s "
          f"-> {out}")


def _save(kind, rows, out, seconds, meta, pi0) -> None:
    """Per-event sums: 'stack' -> (n, period x ring) arrays of LAr and of all deposits per layer;
    'cells' -> sparse (event, group, cell) LAr and deposited energy, periods summed."""
    n = len(rows)
    n_rings = len(RINGS) - 1
    if kind == "stack":
        arrays = {}
        for layer, n_periods in LAYERS:
            vis = np.zeros((n, n_periods * n_rings))
            dep = np.zeros((n, n_periods * n_rings))
            for k, row in enumerate(rows):
                for name in dict.fromkeys(p[0] for p in PERIOD):  # each slab kind once
                    for idx, v in row.get(f"{layer}_{name}", []):
                        dep[k, idx] += v
                        if name == "LAr":
                            vis[k, idx] += v
            arrays[f"{layer}_vis"] = vis
            arrays[f"{layer}_dep"] = dep
        for name in ("Si", "Al1", "PS", "Al2"):
            arrays[f"{name}_dep"] = np.array([sum(v for _, v in row.get(name, [])) for row in rows])
        np.savez_compressed(out, meta=json.dumps({**meta, "seconds": seconds}), **arrays)
        return
    names = [g[0] for g in GROUPS]
    ev, grp, cell, vis, dep = [], [], [], [], []
    for k, row in enumerate(rows):
        acc = {}
        for det_name, hits in row.items():
            if "_" not in det_name:
                continue
            layer, slab_name = det_name.split("_")
            g = names.index(layer)
            n_cells = GROUPS[g][3] * GROUPS[g][4]
            for idx, v in hits:
                a = acc.setdefault((g, idx % n_cells), [0.0, 0.0])
                a[1] += v
                if slab_name == "LAr":
                    a[0] += v
        for (g, c), (v, d) in acc.items():
            ev.append(k)
            grp.append(g)
            cell.append(c)
            vis.append(v)
            dep.append(d)
    np.savez_compressed(out, meta=json.dumps({**meta, "seconds": seconds}),
                        ev=np.array(ev, np.int32), group=np.array(grp, np.int8),
                        cell=np.array(cell, np.int32), vis=np.array(vis), dep=np.array(dep),
                        pi0=np.zeros((0, 6)) if pi0 is None else np.asarray(pi0))


def pi0_events(n: int, seed: int, e_min: float = 0.2, e_max: float = 50.0):
    """(energy, per-event photons (e1, x1, y1, e2, x2, y2) in GeV and mm): pi0 log-uniform in
    energy from the vertex at eta = phi = 0, decayed by pionml (physics.md 3.1)."""
    from pionml.sim.kinematics import decay_pi0

    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(math.log(e_min), math.log(e_max), n))
    e1, eta1, phi1, e2, eta2, phi2 = decay_pi0(rng, e, np.zeros(n), np.zeros(n))
    return e, np.stack([e1, eta1 * R_REF, phi1 * R_REF, e2, eta2 * R_REF, phi2 * R_REF], 1)


# --------------------------------------------------------------------------- analysis

def stack_table(folder: str) -> None:
    def load(path):
        d = np.load(path)
        return json.loads(str(d["meta"])), {k: d[k] for k in d.files if k != "meta"}

    n_rings = len(RINGS) - 1
    meta, a = load(os.path.join(folder, "stack_e-_50.npz"))
    f = (sum(a[f"{lay}_vis"].sum() for lay, _ in LAYERS)
         / sum(a[f"{lay}_dep"].sum() for lay, _ in LAYERS))
    print(f"sampling fraction f (50 GeV e- at the accordion face, EMB1-3) = {f:.5f} "
          f"(ATLAS, Geant4 10.6: 0.18489); physics {meta['physics']}, cut {meta['cut_mm']} mm")
    print("particle  E (GeV)  start   | R(EMB1-3)  EMB1   EMB2   EMB3  | R(r<20)  R(r<40)  "
          "R(r<80) mm | EMB1 share | front share")
    for particle, energy, _, front in STACK_RUNS:
        path = os.path.join(folder, f"stack_{particle}_{energy:g}.npz")
        if not os.path.exists(path):
            continue
        meta, a = load(path)
        vis = {lay: a[f"{lay}_vis"].sum(0).reshape(-1, n_rings) for lay, _ in LAYERS}
        dep = {lay: a[f"{lay}_dep"].sum(0).reshape(-1, n_rings) for lay, _ in LAYERS}
        v_all = sum(v.sum(0) for v in vis.values())
        d_all = sum(d.sum(0) for d in dep.values())
        per = [vis[lay].sum() / f / dep[lay].sum() for lay, _ in LAYERS]
        radial = [np.cumsum(v_all)[i] / f / np.cumsum(d_all)[i]  # inside 20, 40, 80 mm
                  for i in (RINGS.index(r) - 1 for r in (20.0, 40.0, 80.0))]
        front_dep = sum(a[f"{k}_dep"].sum() for k in ("Si", "Al1", "PS", "Al2"))
        print(f"{particle:8s} {energy:7.2f}  {'vertex' if front else 'face  '}  | "
              f"{v_all.sum() / f / d_all.sum():.4f}   {per[0]:.3f}  {per[1]:.3f}  {per[2]:.3f} | "
              f"{radial[0]:.3f}    {radial[1]:.3f}    {radial[2]:.3f}     | "
              f"{dep['EMB1'].sum() / d_all.sum():.3f}      | "
              f"{front_dep / (front_dep + d_all.sum()):.3f}")
    front_table(folder)


def front_table(folder: str, n: int = 3000) -> None:
    """physics.md 3.6, "The material in front": the share of a photon's energy (from the vertex)
    deposited in front of the PS, in the PS, between PS and EMB1, in EMB1 and in EMB2; Geant4's
    stack beside pionml's photons at eta 0.02 without field, with the front deposits of 3.3 and
    with the EMB medium's deposit in front (``em_front_dep`` = 1)."""
    from pionml.geometry import barrel_geometry, layer_by_name
    from pionml.sim.params import DEFAULT_PARAMS
    from pionml.sim.simulate import simulate_particles

    geo = barrel_geometry()
    print("photons from the vertex, share of E deposited: front / PS / PS-EMB1 / EMB1 / EMB2")
    print("E (GeV) | " + " | ".join(f"{h:37s}" for h in ("Geant4", "pionml",
                                                         "pionml, EMB medium in front")))
    for particle, energy, _, from_vertex in STACK_RUNS:
        path = os.path.join(folder, f"stack_{particle}_{energy:g}.npz")
        if particle != "gamma" or not from_vertex or not os.path.exists(path):
            continue
        a = np.load(path)
        mev = energy * 1000.0
        shares = [[(a["Si_dep"] + a["Al1_dep"]).mean() / mev, a["PS_dep"].mean() / mev,
                   a["Al2_dep"].mean() / mev, a["EMB1_dep"].sum(1).mean() / mev,
                   a["EMB2_dep"].sum(1).mean() / mev]]
        for params in (DEFAULT_PARAMS, DEFAULT_PARAMS.with_(em_front_dep=(1.0, 1.0, 1.0))):
            ev = simulate_particles(np.full(n, 22), np.full(n, energy), np.full(n, 0.02),
                                    np.zeros(n), seed=3, params=params.with_(b_field_t=1e-9))
            deposit = ev.E_em + ev.E_nonem
            layer = geo.layer[ev.cell]

            def in_layer(name):
                return deposit[layer == layer_by_name(name).index].sum() / (n * energy)

            shares.append([ev.dm_front.mean() / energy, in_layer("PreSamplerB"),
                           ev.dm_ps_emb1.mean() / energy, in_layer("EMB1"), in_layer("EMB2")])
        print(f"{energy:7.2f} | " + " | ".join(" / ".join(f"{v:.3f}" for v in row)
                                               for row in shares))


def cluster_table(e_path: str, pi0_paths: list[str], eta0: float, seed: int,
                  reference: bool, noise: str = "electronic") -> None:
    from pionml.geometry import barrel_geometry, layer_by_name
    from pionml.reco.chain import reconstruct
    from pionml.sim.params import DEFAULT_PARAMS
    from pionml.sim.simulate import simulate_particles

    geo = barrel_geometry()
    e = np.load(e_path)
    emb = e["group"] > 0
    f = e["vis"][emb].sum() / e["dep"][emb].sum()
    rng = np.random.default_rng(seed)
    layer_of = {"PS": layer_by_name("PreSamplerB").index,
                **{n: layer_by_name(n).index for n in ("EMB1", "EMB2", "EMB3")}}
    maps = []
    for name, deta, dphi, n_x, n_y in GROUPS:
        c = np.arange(n_x * n_y)
        eta = eta0 + (c // n_y - n_x / 2 + 0.5) * deta
        phi = (c % n_y - n_y / 2 + 0.5) * dphi
        maps.append(geo.find_cells(layer_of[name], eta, phi))
    window = np.unique(np.concatenate(maps))
    rows, energies = [], []
    for path in pi0_paths:
        d = np.load(path)
        n = len(d["pi0"])
        glob = np.concatenate([maps[g][d["cell"][d["group"] == g]] for g in range(len(GROUPS))])
        order = np.concatenate([np.flatnonzero(d["group"] == g) for g in range(len(GROUPS))])
        col = np.searchsorted(window, glob)
        em_scale = np.where(d["group"][order] == 0, 1.0, 1.0 / f)  # the PS cell is all LAr
        signal = np.zeros((n, len(window)))
        calib = np.zeros((n, len(window)))
        np.add.at(signal, (d["ev"][order], col), d["vis"][order] * em_scale / 1000.0)
        np.add.at(calib, (d["ev"][order], col), d["dep"][order] / 1000.0)
        cells = np.tile(window, n)
        sigma_noise = {"electronic": geo.sigma_el, "total": geo.sigma,
                       "none": np.zeros(geo.n_cells)}[noise][cells]
        energy = signal.ravel() + rng.standard_normal(cells.size) * sigma_noise
        zero = np.zeros(cells.size)
        events = SimpleNamespace(  # what pionml's reconstruction reads of simulated events
            event_offsets=np.arange(n + 1, dtype=np.int64) * len(window), cell=cells,
            E=energy, sigma=geo.sigma[cells], E_em=calib.ravel(), E_nonem=zero, E_invis=zero,
            E_escaped=zero, truth_eta=np.full(n, eta0), truth_phi=np.zeros(n),
            pdg=np.full(n, 111), **{k: np.zeros(n) for k in ("dm_front", "dm_ps_emb1",
                                                              "dm_gap", "dm_leak")})
        reco = reconstruct(events, geo, None)
        rows.append((reco.moments["E"], reco.moments["ENG_CALIB_TOT"], n,
                     np.diff(reco.batch.event_offsets)))
        energies.append(d["pi0"][:, 0] + d["pi0"][:, 3])
    e_pi0 = np.concatenate(energies)
    samples = [("Geant4 cells, pionml clustering", np.concatenate([r[0] for r in rows]),
                np.concatenate([r[1] for r in rows]), sum(r[2] for r in rows),
                np.concatenate([r[3] for r in rows]))]
    if reference:
        for label, params in (("pionml, default", DEFAULT_PARAMS),
                              ("pionml, transition effect (3.6)",
                               DEFAULT_PARAMS.with_(em_transition=True)),
                              ("pionml, default, no field", DEFAULT_PARAMS.with_(b_field_t=1e-9))):
            ev = simulate_particles(np.full(len(e_pi0), 111), e_pi0, np.full(len(e_pi0), eta0),
                                    np.zeros(len(e_pi0)), seed=seed, params=params)
            reco = reconstruct(ev, geo, None)
            samples.append((label, reco.moments["E"], reco.moments["ENG_CALIB_TOT"], len(e_pi0),
                            np.diff(reco.batch.event_offsets)))
        # the same cells as Geant4's and no field, the showers of 2026-12-06 against those before
        # (physics.md 3.3: the spot law, the deposits of the material in front)
        spots_before = dict(spot_coef=42.0, spot_pow=0.959, spot_max=400)
        front_before = dict(em_front_dep=(1.0, 1.0, 1.0))
        in_window = np.zeros(geo.n_cells, bool)
        in_window[window] = True
        for label, changes in (("in the window, no field", {}),
                               ("  spots of before", spots_before),
                               ("  front of before", front_before),
                               ("  both of before", {**spots_before, **front_before})):
            ev = simulate_particles(np.full(len(e_pi0), 111), e_pi0, np.full(len(e_pi0), eta0),
                                    np.zeros(len(e_pi0)), seed=seed,
                                    params=DEFAULT_PARAMS.with_(b_field_t=1e-9, **changes))
            keep = in_window[ev.cell]
            event = np.repeat(np.arange(len(e_pi0)), np.diff(ev.event_offsets))
            offsets = np.concatenate([[0], np.cumsum(np.bincount(event[keep],
                                                                 minlength=len(e_pi0)))])
            zero = np.zeros(int(keep.sum()))
            events = SimpleNamespace(
                event_offsets=offsets.astype(np.int64), cell=ev.cell[keep], E=ev.E[keep],
                sigma=ev.sigma[keep], E_em=ev.E_em[keep] + ev.E_nonem[keep], E_nonem=zero,
                E_invis=zero, E_escaped=zero, truth_eta=ev.truth_eta, truth_phi=ev.truth_phi,
                pdg=ev.pdg, **{k: np.zeros(len(e_pi0)) for k in ("dm_front", "dm_ps_emb1",
                                                                 "dm_gap", "dm_leak")})
            reco = reconstruct(events, geo, None)
            samples.append((f"pionml, {label}" if not label.startswith(" ") else label,
                            reco.moments["E"], reco.moments["ENG_CALIB_TOT"], len(e_pi0),
                            np.diff(reco.batch.event_offsets)))
    print(f"EM scale f = {f:.5f} (from {e_path}); cells at eta {eta0}; noise {noise} (pionml's "
          "own samples: electronic); medians of E^EM / ENG_CALIB_TOT (clusters)")
    head = "ENG_CALIB_TOT (GeV)".ljust(34) + "".join(f"{lo:g}-{hi:g}".rjust(15) for lo, hi in BINS)
    print(head + "   clusters per pi0")
    for label, e_em, e_cal, n, _ in samples:
        r = e_em / np.maximum(e_cal, 1e-9)
        cols = []
        for lo, hi in BINS:
            s = (e_cal >= lo) & (e_cal < hi)
            cols.append(f"{np.median(r[s]):.4f} ({s.sum()})" if s.any() else "-")
        print(label.ljust(34) + "".join(c.rjust(15) for c in cols) + f"   {len(e_em) / n:.2f}")
    print("clusters per pi0 (% of pi0 with none / with three or more), by pi0 energy (GeV):")
    pi0_bins = ((0.2, 0.5), (0.5, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 50.0))
    print("".ljust(34) + "".join(f"{lo:g}-{hi:g}".rjust(20) for lo, hi in pi0_bins))
    for label, _, _, _, per_event in samples:
        cols = []
        for lo, hi in pi0_bins:
            s = (e_pi0 >= lo) & (e_pi0 < hi)
            k = per_event[s]
            cols.append(f"{k.mean():.2f} ({100 * np.mean(k == 0):.0f} / "
                        f"{100 * np.mean(k >= 3):.1f})")
        print(label.ljust(34) + "".join(c.rjust(20) for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("emlow", help="write the G4EMLOW stand-in")
    p.add_argument("folder")
    for name in ("stack", "cells", "_one"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="folder of the Geant4 data sets")
        p.add_argument("--physics", choices=("opt1", "opt0"), default="opt1")
        p.add_argument("--cut-mm", type=float, default=0.1, help="range cut in the accordion")
        p.add_argument("--seed", type=int, default=11)
        p.add_argument("--out", default="g4_emscale")
        p.add_argument("--events", type=int, default=None)
        if name == "cells":
            p.add_argument("--electron", type=float, default=None,
                           help="electrons of this energy (GeV) at the accordion face")
        if name == "_one":
            p.add_argument("--particle", default="gamma")
            p.add_argument("--energy", type=float, default=1.0)
            p.add_argument("--front", action="store_true")
    p = sub.add_parser("cluster")
    p.add_argument("electron_npz")
    p.add_argument("pi0_npz", nargs="+")
    p.add_argument("--eta0", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reference", action="store_true", help="pionml's own simulation beside")
    p.add_argument("--noise", choices=("electronic", "total", "none"), default="electronic",
                   help="noise added to the Geant4 cells: pionml's electronic noise (default), "
                        "the noise the thresholds assume, or none")
    p = sub.add_parser("stack-table")
    p.add_argument("folder")
    args = parser.parse_args()
    for path in (getattr(args, "electron_npz", None), *getattr(args, "pi0_npz", ())):
        if path is not None and not os.path.isfile(path):
            parser.error(f"{path}: no such file (write it with the 'cells' command)")
    data = getattr(args, "data", None)
    if data is not None and not (os.path.isdir(os.path.join(data, "G4EMLOW8.8"))
                                 or "G4LEDATA" in os.environ):
        parser.error(f"--data {data}: no G4EMLOW8.8 there (write a stand-in with 'emlow {data}', "
                     "or point at the Geant4 data sets)")
    if args.cmd == "emlow":
        write_emlow(args.folder)
    elif args.cmd == "cluster":
        cluster_table(args.electron_npz, args.pi0_npz, args.eta0, args.seed, args.reference,
                      args.noise)
    elif args.cmd == "stack-table":
        stack_table(args.folder)
    elif args.cmd == "stack":  # one process per run: Geant4 builds its geometry once
        os.makedirs(args.out, exist_ok=True)
        for particle, energy, n, front in STACK_RUNS:
            out = os.path.join(args.out, f"stack_{particle}_{energy:g}.npz")
            cmd = [sys.executable, __file__, "_one", "--data", args.data, "--physics",
                   args.physics, "--cut-mm", str(args.cut_mm), "--seed", str(args.seed),
                   "--out", out, "--events", str(args.events or n), "--particle", particle,
                   "--energy", str(energy)] + (["--front"] if front else [])
            t0 = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            print(f"{particle} {energy:g} GeV x{args.events or n}: {time.time() - t0:.0f} s",
                  flush=True)
        stack_table(args.out)
    else:
        set_data_env(os.path.abspath(args.data))
        if args.cmd == "_one":
            run_geant4("stack", args.particle, args.energy, args.events, args.front, args.seed,
                       args.physics, args.cut_mm, args.out)
        elif args.electron is not None:
            run_geant4("cells", "e-", args.electron, args.events or 100, False, args.seed,
                       args.physics, args.cut_mm, args.out)
        else:
            _, photons = pi0_events(args.events or 4000, args.seed)
            run_geant4("cells", "gamma", None, len(photons), True, args.seed, args.physics,
                       args.cut_mm, args.out, pi0=photons)
        # the output is written; leave before Python and Geant4 tear down each other's objects
        # in an order that crashes at exit
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
