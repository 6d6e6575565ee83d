"""All parameters of the fast simulation, in one frozen table (physics.md sections 2-4).

Every value carries its physics.md section and confidence label in a comment. Values marked
``[E] tunable`` are estimates that may be tuned against the validation targets of physics.md
section 7; values changed from the physics.md nominal by the tuning are marked ``TUNED`` with the
nominal value. Units: GeV, mm, radians (physics.md quotes MeV: converted here).

Material (X0, lambda per layer and dead-material region) and noise are not here: they come from
:mod:`pionml.geometry` (physics.md 1.2-1.4, 2.4), the single source of the detector description.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["SimParams", "DEFAULT_PARAMS", "M_PI0", "M_PIC", "PDG_PI0", "PDG_PIP", "PDG_PIM",
           "PDG_GAMMA", "PDG_ELECTRON", "PDG_POSITRON"]

M_PI0 = 0.134977  # GeV, physics.md 3.1 [M:PDG]
M_PIC = 0.13957  # GeV, charged pion mass [M:PDG]
PDG_PI0, PDG_PIP, PDG_PIM = 111, 211, -211
PDG_GAMMA, PDG_ELECTRON, PDG_POSITRON = 22, 11, -11


@dataclass(frozen=True)
class SimParams:
    """The parameter table of the fast simulation. Build variants with :meth:`with_`."""

    # ---- magnetic field (physics.md 0.2, 3.2, 4.1) ------------------------------------------
    b_field_t: float = 2.0  # solenoid field [M:JINST]
    r_solenoid_mm: float = 1150.0  # field region r < 1.15 m [M:JINST]
    id_x0: float = 0.45  # X0 of the inner detector at eta=0 (part of DM_front) [M:JINST] 1.4
    r_id_mm: float = 1100.0  # outer radius of the ID material for conversions [E] 3.2

    # ---- pi0 decay (physics.md 3.1) ----------------------------------------------------------
    br_dalitz: float = 0.0117  # Dalitz branching ratio [M:PDG]; simulated as gamma gamma [E]

    # ---- photon conversion (physics.md 3.2) --------------------------------------------------
    conv_mfp_x0: float = 9.0 / 7.0  # pair-production mean free path in X0 [S:GFlash-G4]

    # ---- GFlash longitudinal (physics.md 3.3), EMB effective material (1.3) --------------------
    z_eff: float = 59.2  # [D] 1.3
    ec_gev: float = 0.0112  # E_c,eff = 11.2 MeV [D] 1.3
    f_s: float = 3.03  # F_S = X0,eff/period [D] 1.3
    e_hat: float = 0.691  # GFlash e-hat [D] 1.3
    t_max_min: float = 1.0  # T floor [S:GFlash-G4]
    # scale on the shower-maximum depth T ("combined-material handling" [E] 3.3): TUNED from
    # 1.0 to 1.04 so that the photon EMB1/EMB2 fractions of physics.md 3.5 are reproduced
    t_scale: float = 1.04
    alpha_min: float = 1.1  # alpha floor [S:GFlash-G4]
    # spot number N = spot_coef * E^spot_pow: GFlash's homogeneous-medium law 93 ln(Z) E^0.876
    # [S:GFlash-G4, GP], because the sampling fluctuations are drawn per cell (2.2) and the spots
    # carry only the shower's own lateral fluctuations (physics.md 3.3). CHANGED (issue 29,
    # 2026-12-06) from 42 E^0.959 (10.3 ln Z, a misreading of the sampling class, whose law is
    # 10.3/c_S E^0.959 and whose spots carry the sampling fluctuations too): with 2.5-9x fewer
    # spots the EMB1 strips were lumpy and 1-3 GeV pi0 split into three or more clusters 5 %
    # of the time, against < 1 % in Geant4 (physics.md 7.7-7.8 (i))
    spot_coef: float = 379.5  # = 93 ln(59.2) [S:GFlash-G4]
    spot_pow: float = 0.876  # [S:GFlash-G4]
    spot_max: int = 1000  # cap per shower (reached at 3 GeV), scaling the spot energy [E] 3.3
    spot_min: int = 4  # floor per shower [E]

    # OPTION (issue 29, physics.md 3.6), off by default: the deposited (calibration-hit)
    # energy of each EM spot is its visible (EM-scale) energy x f_hom/f_sam, the ratio of
    # GFlash's homogeneous-medium to sampling-calorimeter profiles at the spot's depth and
    # radius, normalised per shower (showers.transition_weights) [S: Grindhammer-Peters; Geant4
    # GFlashSamplingShowerParameterisation]; no free parameter. The EM-scale signal is unchanged
    # (bit for bit); only the truth moves. Off: every spot deposits what it signals (the
    # default, as before). On, it lowers the median pi0 E^EM/ENG_CALIB_TOT by 0.01 at 1-3 GeV
    # and 0.02-0.04 at 0.2-1 GeV (five seeds), away from ATL-PHYS-PUB-2020-018 Fig. 13a, and
    # the round-2 acceptance R1 (pi0 clusters below 1 GeV > 1.03, seed 41) then fails (1.016);
    # it stays off until the maintainers decide (physics.md 3.6, 7.7-7.8)
    em_transition: bool = False

    # ---- GFlash lateral (physics.md 3.4) -------------------------------------------------------
    r_moliere_lar_mm: float = 38.0  # R_M,eff EMB [D] 1.3
    r_moliere_tile_mm: float = 20.0  # R_M,eff Tile [D] 1.3
    lateral_u_max: float = 0.995  # truncation of the 1/(r^2+R^2)^2 tail (r <= 14 R) [E]
    # TUNED (new in the first tuning; before: no splitting, i.e. tail_spot_emax = inf):
    # lateral tail splitting (showers.em_showers): spots heavier than tail_spot_emax sampled
    # beyond tail_split_rm (Moliere units) are split into <= tail_split_max light spots drawn
    # from the same lateral law beyond tail_split_rm [E]. The capped heavy spots of TeV
    # photons (2.5 GeV at 1 TeV) in the tail seeded 4-6 spurious hadron-like clusters per
    # 0.5-2 TeV pi0 (now 0.3-0.8); rm = 1.0 gives the same multiplicity at 2x the packets
    tail_split_rm: float = 2.0
    tail_spot_emax: float = 0.03  # GeV, ~1 sigma of an EMB2 cell (30 MeV) [E]
    tail_split_max: int = 128
    # NEW (issue 29, 2026-12-06) [E]: the EM profile (3.3) is the EMB medium's, whose charged
    # tracks deposit E_c,eff = 11.2 MeV per X0; in the low-Z material in front (Si, Al: E_c 40-43
    # MeV; the PS's LAr 32.8 MeV) the same tracks deposit more per X0. The EM deposit of a spot
    # in the dead material in front, the PS and the material between PS and EMB1 is multiplied
    # by these factors, and the shower's later spots give up what they take (energy conserved
    # per shower). Values: the ratios of the deposits there that Geant4 11.4 gives for photons
    # from the vertex in pionml's material budget to those of the EMB medium (0.25-10 GeV,
    # physics.md 3.6 "The material in front": 2.5-2.7, 1.2-1.3, 1.7-2.1), below the ratios of
    # critical energies (3.6-3.8, 2.9) because photons, which deposit nothing there, carry part
    # of the shower. (1, 1, 1) restores the EMB medium everywhere (as before)
    em_front_dep: tuple = (2.6, 1.25, 2.0)  # (DM front, PS, DM PS-EMB1) [E] 3.3

    # ---- charged pion tracking (physics.md 4.1, 4.2) -----------------------------------------
    lambda_pi_factor: float = 1.1  # lambda_pi = 1.1 lambda_I [E] tunable 4.1
    dedx_rise: float = 1.1  # dE/dx = 1.1 dE/dx_min [E] 4.2
    # MIP dE/dx_min per interaction length (GeV/lambda_I): EMB 0.521 MeV/mm x 390.5 mm = 0.203;
    # Tile 0.977 x 205 = 0.200; DM front (2 X0 ~ Al) 78 MeV / 0.5 lambda = 0.156 [D] 4.2 table
    mip_gev_per_lambda_lar: float = 0.203
    mip_gev_per_lambda_tile: float = 0.200
    mip_gev_per_lambda_dm: float = 0.156
    # NEW [E], physics.md 2.2 ("mip/e ... E_ion(primary & long-range tracks)") and
    # 4.2: the leading charged pion of a low-energy interaction carries a share
    # x = lead_frac_max / (1 + K / lead_k_gev) of the kinetic energy K at the interaction on as
    # MIP-like ionisation (showers._leading_track). Before (lead_frac_max = 0) the whole K became
    # a hadron shower, with 35 % invisible energy and the hadronic response, even at K < 1 GeV
    # where f_em = 0; so the low-energy charged-pion clusters held little MIP-like signal (20 %
    # of their ENG_CALIB_TOT at 0.2-1 GeV) and their EM-scale response sat at 0.69-0.79
    # instead of above 1 (ATL-PHYS-PUB-2020-018 sec 5.3, Fig. 12a). x = 0.33 / 0.25 / 0.12 / 0.05 at
    # K = 0.5 / 1 / 3 / 10 GeV, < 1 % above 50 GeV
    lead_frac_max: float = 0.5
    lead_k_gev: float = 1.0
    mu_visible_gev: float = 0.0041  # pi+ -> mu nu: muon kinetic energy, deposited [M:PDG] 4.2
    capture_gev: float = 0.100  # pi- capture: nuclear break-up energy [E] 4.2
    capture_vis_frac: float = 0.40  # visible non-EM share of the break-up [E] 4.2
    capture_inv_frac: float = 0.30  # invisible share (the remaining 0.30 escapes) [E] 4.2

    # ---- EM fraction of hadron showers (physics.md 4.3) ---------------------------------------
    # TUNED from 1.0 to 1.3 (upper end of Wigmans' 0.7-1.3 GeV): the clustered pi+- EM-scale
    # response R_clus was 0.04-0.05 above physics.md 7.2(d) at 10-50 GeV; E0 lowers it there
    # while e/pi at 100 GeV-1 TeV stays inside 1.15-1.25 (fem_k is left at 0.83 for that)
    fem_e0_gev: float = 1.3  # E0 [M:PDG-Calorimetry] [E] tunable 4.3
    # TUNED from 0.85 to 0.83 (Groom's range 0.83-0.87): e/pi at 100 GeV-1 TeV inside
    # 1.15-1.25 (physics.md 7.2(d)) and Tile pi/e closer to 7.2(c)
    fem_k: float = 0.83  # k [M:Groom] [E] tunable 4.3
    # TUNED from 0.12 to 0.20: the event-by-event f_em fluctuation is the part of the pion
    # resolution that cell weighting corrects; with 0.12 (and the Tile sampling term carrying the
    # Tile resolution) LCW could not narrow the pi+- response (physics.md 7.3)
    fem_sigma_max: float = 0.20  # [E] tunable 4.3
    fem_sigma_scale: float = 0.8  # sigma = min(fem_sigma_max, 0.8 sqrt(mu(1-mu))) [E] 4.3
    cex_p10: float = 0.03  # P_cex at 10 GeV [E] tunable 4.3
    cex_pow: float = -0.5  # [E] 4.3
    cex_pmax: float = 0.1  # [E] 4.3
    cex_fem_lo: float = 0.7  # [E] 4.3
    cex_fem_hi: float = 0.95  # [E] 4.3

    # ---- invisible energy (physics.md 4.4, 2.2) -----------------------------------------------
    finv_mean: float = 0.35  # [E] tunable 4.4
    finv_sigma: float = 0.05  # [E] 4.4
    finv_lo: float = 0.2  # [E] 4.4
    finv_hi: float = 0.5  # [E] 4.4
    # OPTION (physics.md 4.4, "A visible trace of the invisible energy"), off by default (0):
    # the halo share of a shower's hadronic packets follows its invisible share, h = (1 - p_c)
    # x [g(f_inv) / g(finv_mean)]^had_inv_trace with g(f) = f / (1 - f), clipped to [0.02,
    # 0.98] (showers.halo_share): the binding energy lost goes with the nuclear fragments
    # (spallation protons, evaporation neutrons) whose visible energy the halo carries [M:
    # Wigmans, Calorimetry], so a shower that lost more is wider. 0: every shower's halo share
    # is 1 - p_c, independent of f_inv (bit for bit the default); 1: the nuclear fragments'
    # visible energy in proportion to the binding energy lost. The strength is [E]: a
    # sensitivity study (benchmarks/bench_inv_trace.py), not a tuned value.
    had_inv_trace: float = 0.0

    # ---- hadronic longitudinal profile, Bock (physics.md 4.5) ---------------------------------
    bock_a0: float = 0.6165  # original Bock a = a0 + a1 ln E [M:Bock]
    bock_a1: float = 0.3183
    bock_d0: float = 0.9099  # d = d0 + d1 ln E [M:Bock]
    bock_d1: float = -0.0237
    tile_a0: float = 0.786  # Tile fit [S:Kulchitsky-analytic]
    tile_a1: float = 0.427
    tile_d: float = 0.978
    bock_blend_lo_gev: float = 10.0  # linear blend in ln E between 10 and 30 GeV [E] 4.5
    bock_blend_hi_gev: float = 30.0
    bock_a_min: float = 0.5  # floor of the Gamma shape at low E [E]
    bock_a_sigma_ln: float = 0.15  # per-event log-normal factor on a [E] tunable 4.5
    had_packet_coef: float = 20.0  # hadronic packets N = coef sqrt(E_nonem/GeV) [E] (granularity)
    had_packet_min: int = 4
    had_packet_max: int = 200

    # ---- EM sub-showers in hadron showers (physics.md 4.5) ------------------------------------
    sub_poisson_coef: float = 0.6  # N = 1 + Poisson(max(0, 0.6 ln E)) [E] tunable 4.5
    sub_dirichlet: float = 0.7  # Dirichlet concentration [E] 4.5
    sub_start_lambda: float = 0.3  # start offset Exp(0.3 lambda) after s_int [E] 4.5
    sub_theta_coef: float = 0.15  # |theta| ~ Exp(0.15/sqrt(E_sub)) rad [E] 4.5
    sub_theta_max: float = 0.5  # [E] 4.5

    # ---- hadronic lateral profile (physics.md 4.6) --------------------------------------------
    had_core_frac: float = 0.5  # p_c [E] tunable 4.6
    had_core_rm: float = 0.5  # r_c = 0.5 R_M [E] 4.6
    had_halo_lambda: float = 0.12  # r_h = 0.12 lambda_I (1 + 0.5 s/lambda) [E] tunable 4.6
    had_halo_growth: float = 0.5  # [E] 4.6
    lambda_lar_mm: float = 390.5  # lambda_I EMB [D] 1.3 (lateral scale only)
    lambda_tile_mm: float = 205.0  # lambda_I Tile [D] 1.3 (lateral scale only)
    had_r_max_mm: float = 1500.0  # truncation of the lateral tail [E]
    # halo splitting (showers._hadronic_packets): halo packets heavier than had_halo_emax are
    # split into <= had_halo_split_max light packets, each drawn from the halo law [E]
    had_halo_emax: float = 0.05  # GeV
    had_halo_split_max: int = 256

    # ---- signal formation (physics.md 2.2) ----------------------------------------------------
    eh_lar: float = 1.74  # [S:Kulchitsky-EM-eh]
    eh_tile: float = 1.362  # [S:Budagov-Tile-eh]
    mip_over_e_lar: float = 1.0 / 0.70  # [E/D] 2.2
    mip_over_e_tile: float = 1.0 / 0.85  # [E/D] 2.2
    stoch_em_lar: float = 0.10  # sqrt(GeV): sigma^2 = s^2 mu [S:Aharrouche] [E] tunable 2.2
    stoch_em_tile: float = 0.28  # [M] [E] tunable 2.2
    stoch_had_lar: float = 0.20  # [E] tunable 2.2
    # TUNED 0.35 -> 0.58 (physics.md 2.2 sets this term so that the Tile-standalone
    # pion resolution reaches 52.9 %/sqrt(E) (+) 5.7 %, 7.4). History: 0.58, back to
    # 0.35 because LCW then widened the pi+- response (with fem_sigma_max 0.12, and
    # on 400-event samples). Re-measured with the 2018 thresholds on 3000 pi+- per point and
    # LCW tables derived for each value: 0.35 gives Tile standalone 37.4 %/sqrt(E) (+) 7.9 %,
    # clustered EM-scale sigma/R 0.079 at 100 GeV (physics.md 7.4: 0.08-0.11) and LCW gains
    # -9/0/+2/+13/+14 % at 5/10/20/50/100 GeV; 0.58 gives 53.3 %/sqrt(E) (+) 7.6 %, sigma/R
    # 0.182 / 0.085 at 10 / 100 GeV (0.17-0.22 / 0.08-0.11) and LCW gains -9/0/+3/+4/+11 %.
    # The measured Tile resolution wins over the LCW-gain window (an [M/E] number for ATLAS'
    # LCW with OOC and DM corrections, which pionml does not have)
    stoch_had_tile: float = 0.58  # [E] tunable 2.2
    landau_sigma_ln_lar: float = 0.35  # [E] 2.2
    landau_sigma_ln_tile: float = 0.25  # [E] 2.2
    const_lar: float = 0.005  # frozen per-cell constant term [E] tunable 2.2
    const_tile: float = 0.02  # [E] tunable 2.2
    const_seed: int = 20260  # the fixed seed of the frozen per-cell constants (one production)

    # ---- cell time (physics.md 2.6) -----------------------------------------------------------
    time_a_lar_ns: float = 1.5  # sigma_t = a/(E/GeV) (+) c [E] 2.6
    time_c_lar_ns: float = 0.3  # [E] 2.6
    time_a_tile_ns: float = 1.5  # [E] 2.6
    time_c_tile_ns: float = 0.6  # [E] 2.6
    time_delayed_frac: float = 0.05  # delayed (neutron) share of the non-EM visible signal [E] 2.6
    time_delayed_tau_ns: float = 10.0  # its exponential delay [E] 2.6
    time_e_floor_gev: float = 0.001  # |E| floor of the a/E term (1 MeV: sigma_t <= 1.5 us) [E]

    # ---- noise (physics.md 2.4; sigma per cell from pionml.geometry) --------------------------
    # The noise values and the pile-up factors f_pu of the clustering thresholds (2018
    # conditions, TUNED to the low end of the physics.md 2.4 ranges) live in
    # pionml.geometry.NoiseConfig, with their history.
    window_half_width: float = 0.7  # noise window |deta|,|dphi| <= 0.7 around the particle [E]
    tile_double_gauss: bool = False  # option: Tile double Gaussian [S:Artamonov-2G]
    tile_dg_weight: float = 0.02  # R [E] 2.4
    tile_dg_ratio: float = 3.0  # sigma2 / sigma1 [E] 2.4

    def with_(self, **changes) -> "SimParams":
        """A copy with some parameters changed (unknown names raise TypeError)."""
        return replace(self, **changes)

    # Derived quantities (physics.md 2.2): c_comp = (h/e)/(1 - f_inv).
    @property
    def c_comp_lar(self) -> float:
        return (1.0 / self.eh_lar) / (1.0 - self.finv_mean)

    @property
    def c_comp_tile(self) -> float:
        return (1.0 / self.eh_tile) / (1.0 - self.finv_mean)


DEFAULT_PARAMS = SimParams()
