"""``pionml geometry``: print the layer table and cell counts, optionally write CellGeo."""

from __future__ import annotations


def _add_arguments(p):
    from pionml.cli import positive_float

    p.add_argument("--write", metavar="FILE.root", help="write the CellGeo tree to this file")
    p.add_argument("--noise-scale", type=positive_float, default=1.0,
                   help="multiply every layer's noise sigma (physics.md 10.1 scans)")
    p.add_argument("--noise-thresholds", choices=("total", "electronic"), default="total",
                   help="sigma of the clustering thresholds written as cell_geo_sigma: total "
                        "(2018 conditions, default) or electronic (physics.md 2.4)")


def geometry_table(geo) -> str:
    """The layer table as text: sampling, granularity, radii, depth at eta 0, noise, cells."""
    import numpy as np

    from pionml.geometry import LAYERS, material_segments

    counts = geo.counts_per_layer()
    seg0 = {s.name: s for s in material_segments(0.0)}
    head = (f"{'layer':<12}{'samp':>5}{'calo':>6}{'deta':>10}{'dphi':>9}{'n_eta':>7}{'n_phi':>7}"
            f"{'r_in':>8}{'r_out':>8}{'X0@0':>7}{'lam@0':>7}{'sig_el':>9}{'sig_thr':>9}"
            f"{'image':>8}{'cells':>8}")
    lines = [head, "-" * len(head)]
    for layer in LAYERS:
        sel = geo.layer == layer.index
        sig = np.median(geo.sigma_el[sel]) * 1e3 if sel.any() else float("nan")
        thr = np.median(geo.sigma[sel]) * 1e3 if sel.any() else float("nan")
        shape = "x".join(map(str, layer.image_shape)) if layer.image_shape else "-"
        s = seg0[layer.name]
        lines.append(
            f"{layer.name:<12}{layer.sampling:>5}{layer.calo:>6}{layer.deta:>10.6f}"
            f"{layer.dphi:>9.4f}{layer.n_eta - len(layer.missing_rows):>7}{layer.nphi:>7}"
            f"{float(s.r_in):>8.1f}{float(s.r_out):>8.1f}{float(s.x0):>7.2f}{float(s.lam):>7.3f}"
            f"{sig:>6.1f}MeV{thr:>6.1f}MeV{shape:>8}{counts[layer.name]:>8}")
    lines.append(f"{'total':<12}{'':>100}{geo.n_cells:>8}")
    lines.append("radii and depths at eta = 0; sig_el = median electronic noise of the layer "
                 "(injected), sig_thr = median sigma of the clustering thresholds")
    return "\n".join(lines)


def _run(args):
    import logging

    from pionml.geometry import NoiseConfig, barrel_geometry

    geo = barrel_geometry(NoiseConfig(scale=args.noise_scale, thresholds=args.noise_thresholds))
    print(geometry_table(geo))
    if args.write:
        from pionml.io.root import write_cellgeo

        write_cellgeo(args.write, geo)
        logging.getLogger("pionml").info("wrote CellGeo (%d cells) to %s", geo.n_cells, args.write)
    return 0


COMMANDS = {"geometry": ("print the calorimeter layer table; write CellGeo", _add_arguments, _run)}
