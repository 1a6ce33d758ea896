"""The demo: simulate what a kesterite Cu2ZnSnS4 sample would give on a lab diffractometer, a neutron
powder line and a total-scattering beamline, with plots, peak list and descriptors; analyse the phases of a
kesterite sample with 5 wt% SnS; solve the structure of a perovskite from its pattern and formula, and that of
kesterite from the bundled pattern and its element list only.

Every measured pattern here is simulated (with Poisson noise) from structures built in code or bundled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from atomdiff.data.patterns import MeasuredPattern, write_pattern
from atomdiff.examples import example_path, sphalerite, tin_sulfide
from atomdiff.files import atomic_path
from atomdiff.physics.agreement import rwp
from atomdiff.physics.diffraction import PowderDiffractionModel, Profile, peak_table, two_theta_grid
from atomdiff.physics.total_scattering import PDFForwardModel
from atomdiff.report.plots import plot_fit, plot_pattern
from atomdiff.structure.io import read_structure
from atomdiff.structure.structure import Structure
from atomdiff.tasks.analyze import analyze_structure
from atomdiff.tasks.phases import analyse_phases, write_phase_outputs
from atomdiff.tasks.simulate import add_counting_noise, mixture_counts, normalise_to, simulate, write_peak_table

LAB_PROFILE = Profile(u=0.004, v=-0.002, w=0.003, eta=0.45)


def _demo_phases(folder: Path, kesterite: Structure, seed: int, log) -> dict[str, object]:
    """Kesterite with 5 wt% SnS; candidates kesterite, SnS and ZnS."""
    model = PowderDiffractionModel("xray", "CuKa1", two_theta_grid(10, 80, 0.02), profile=LAB_PROFILE, b_iso=0.6)
    counts = mixture_counts(model, [(kesterite, 0.95), (tin_sulfide(), 0.05)], 2e4, 150.0, seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_pattern(folder / "kesterite_5wt_SnS.xy", model.x.numpy(), counts, header="simulated: 95 wt% CZTS + 5 wt% SnS")
    pattern = MeasuredPattern(model.x.numpy(), counts, None, "two_theta", str(folder / "kesterite_5wt_SnS.xy"))
    candidates = [("kesterite", kesterite), ("SnS", tin_sulfide()), ("ZnS", sphalerite())]
    analysis = analyse_phases(pattern, candidates)
    write_phase_outputs(analysis, pattern, "two_theta", folder, "xray", "CuKa1")
    found = {p.name: (round(100 * p.weight_fraction, 2), round(100 * p.sigma, 2)) for p in analysis.phases}
    log(f"phases (true 95/5 wt% kesterite/SnS): {found}; not needed: {[n for n, _ in analysis.dropped]}")
    return {"found_wt_percent": found, "dropped": [n for n, _ in analysis.dropped], "rwp": analysis.rwp}


def _demo_solve(folder: Path, seed: int, log) -> dict[str, object]:
    """SrTiO3 from its simulated pattern and its formula, with the shipped perov5 model."""
    from atomdiff.diffusion.constraints import CompositionConstraint, parse_formula
    from atomdiff.tasks.solve import SolveSettings, solve
    from atomdiff.weights import load_crystal_model

    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    truth = Structure([38, 22, 8, 8, 8], frac, np.eye(3) * 3.905)
    model = PowderDiffractionModel("xray", "CuKa1", two_theta_grid(10, 90, 0.02), profile=LAB_PROFILE, b_iso=0.5)
    counts = mixture_counts(model, [(truth, 1.0)], 1e4, 100.0, seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_pattern(folder / "SrTiO3_CuKa1.xy", model.x.numpy(), counts, header="simulated SrTiO3, Cu Kα1")
    pattern = MeasuredPattern(model.x.numpy(), counts, None, "two_theta", str(folder / "SrTiO3_CuKa1.xy"))
    result = solve(
        load_crystal_model("perov5"),
        pattern,
        CompositionConstraint(formula=parse_formula("SrTiO3")),
        folder,
        settings=SolveSettings(candidates=20, seed=seed),
    )
    best = result.ranked[0]
    log(
        f"solve SrTiO3: best {best.refinement.structure.formula} {best.space_group}, "
        f"Rwp {100 * best.refinement.rwp:.2f} %"
    )
    return {"best_space_group": best.space_group, "best_rwp": best.refinement.rwp}


def _demo_solve_kesterite(folder: Path, seed: int, log) -> dict[str, object]:
    """Kesterite from the bundled lab pattern (Cu Kα1+Kα2) and its element list only, as ``atomdiff solve
    kesterite_CuKa.xye --elements Cu,Zn,Sn,S --wavelength CuKa`` does: the model is chosen by the elements, and
    compositions and cell sizes come from the model (its training cells with exactly these elements, plus freely
    sampled species)."""
    from atomdiff.data.patterns import read_pattern
    from atomdiff.diffusion.constraints import CompositionConstraint
    from atomdiff.structure.elements import parse_element_list
    from atomdiff.tasks.evaluate import make_matcher
    from atomdiff.tasks.solve import SolveSettings, solve
    from atomdiff.weights import choose_crystal_model, load_crystal_model

    elements = frozenset(parse_element_list("Cu,Zn,Sn,S"))
    name = choose_crystal_model(set(elements))
    model = load_crystal_model(name)
    pattern = read_pattern(example_path("kesterite_CuKa.xye"))
    result = solve(
        model,
        pattern,
        CompositionConstraint(required=elements).only_required(set(model.stats.elements)),
        folder,
        wavelength="CuKa",
        settings=SolveSettings(candidates=20, seed=seed),
    )
    best = result.ranked[0]
    truth = read_structure(example_path("kesterite_Cu2ZnSnS4.cif")).to_pymatgen()
    matcher = make_matcher()
    written = result.ranked[: SolveSettings().top]
    rank = next((c.rank for c in written if matcher.fit(c.refinement.structure.to_pymatgen(), truth)), None)
    found = f"the true structure is rank {rank}" if rank else "the true structure is not among the written candidates"
    log(
        f"solve kesterite from Cu,Zn,Sn,S ({name}): best {best.refinement.structure.formula} {best.space_group}, "
        f"Rwp {100 * best.refinement.rwp:.2f} %; {found}"
    )
    return {
        "model": name,
        "best_formula": best.refinement.structure.formula,
        "best_space_group": best.space_group,
        "best_rwp": best.refinement.rwp,
        "matches_truth": rank == 1,
        "truth_rank": rank,
    }


def _demo_amorphous(folder: Path, seed: int, log) -> dict[str, object]:
    """Two 216-atom a-C cells at 2.5 g/cm³ from the shipped prior, with the descriptor report."""
    from atomdiff.tasks.amorphous import AmorphousSettings, generate_amorphous, write_amorphous_outputs
    from atomdiff.weights import load_amorphous_model

    result = generate_amorphous(
        load_amorphous_model("amorphous_carbon"), AmorphousSettings(density=2.5, atoms=216, samples=2, seed=seed)
    )
    report, rows = write_amorphous_outputs(result, folder / "aC_2.5.extxyz")
    sp3 = [r["sp3"] for r in rows]
    log(f"a-C 2.5 g/cm³, 216 atoms: sp3 fractions {sp3} (C-GAP-17 reference at 2.5 g/cm³: 0.285)")
    return {"sp3": sp3, "report": str(report / "report.html")}


def run_demo(out_dir: Path, seed: int = 0, log=print, full: bool = True) -> dict[str, object]:
    """Write the demo files into ``out_dir`` and return a summary (``full=False`` skips phases, solve and the
    amorphous example)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    structure = read_structure(example_path("kesterite_Cu2ZnSnS4.cif"))
    log(f"kesterite {structure.formula}: {len(structure)} atoms, a = {structure.lattice_parameters[0]:.3f} Å")

    xrd = PowderDiffractionModel(
        "xray", "CuKa", two_theta_grid(10, 80, 0.01), profile=LAB_PROFILE, background=[0.02, -0.01], b_iso=0.6
    )
    clean = normalise_to(simulate(xrd, structure).y[0].numpy())
    counts, sigma = add_counting_noise(clean, 20_000, background=150.0, seed=seed)
    x = xrd.x.numpy()
    write_pattern(out_dir / "kesterite_CuKa.xye", x, counts, sigma, header="simulated lab pattern, Cu Kα1+Kα2")
    rows = write_peak_table(xrd, structure, out_dir / "kesterite_peaks.csv")
    calc = normalise_to(clean, 20_000) + 150.0
    fit_rwp = float(rwp(torch.as_tensor(counts), torch.as_tensor(calc)))
    ticks = [r["two_theta"] for r in rows]
    plot_fit(
        out_dir / "kesterite_CuKa.png",
        x,
        counts,
        calc,
        ticks=ticks,
        title=f"Cu2ZnSnS4, Cu Kα: simulated counts vs model (Rwp = {100 * fit_rwp:.2f} %)",
    )
    log(f"X-ray: {len(rows)} peaks; Poisson counts vs noise-free model Rwp = {100 * fit_rwp:.2f} %")

    neutron = PowderDiffractionModel(
        "neutron", 1.594, two_theta_grid(10, 150, 0.05), profile=Profile(u=0.1, v=-0.1, w=0.08, eta=0.1), b_iso=0.6
    )
    y_n = normalise_to(simulate(neutron, structure).y[0].numpy())
    write_pattern(out_dir / "kesterite_neutron.xy", neutron.x.numpy(), y_n, header="neutron, λ = 1.594 Å")
    n_rows = peak_table(neutron, structure)
    plot_pattern(
        out_dir / "kesterite_neutron.png",
        neutron.x.numpy(),
        y_n,
        title="Cu2ZnSnS4, neutrons λ = 1.594 Å",
        ticks=[r["two_theta"] for r in n_rows],
    )

    r = torch.arange(0.5, 20.0, 0.01, dtype=torch.float64)
    pdf = PDFForwardModel(r, radiation="xray", qmax=25.0, sigma=0.08)
    g = simulate(pdf, structure).y[0].numpy()
    write_pattern(out_dir / "kesterite_pdf.xy", r.numpy(), g, axis="r", header="X-ray G(r), Qmax 25 1/Å")
    plot_pattern(
        out_dir / "kesterite_pdf.png",
        r.numpy(),
        g,
        "r",
        ylabel="G(r) (Å$^{-2}$)",
        title="Cu2ZnSnS4 X-ray PDF, Qmax = 25 Å$^{-1}$",
    )

    descriptors = analyze_structure(structure, plot_dir=out_dir)
    with atomic_path(out_dir / "kesterite_descriptors.json") as tmp:
        tmp.write_text(json.dumps(descriptors, indent=2) + "\n")
    log(
        f"density {descriptors.get('density_g_cm3', float('nan')):.3f} g/cm³, "
        f"shortest distance {descriptors.get('min_distance_A', float('nan')):.3f} Å"
    )
    summary = {}
    if full:
        summary["phases"] = _demo_phases(out_dir / "phases", structure, seed, log)
        summary["solve"] = _demo_solve(out_dir / "solve", seed, log)
        summary["solve_kesterite"] = _demo_solve_kesterite(out_dir / "solve_kesterite", seed, log)
        summary["amorphous"] = _demo_amorphous(out_dir / "amorphous", seed, log)
    return {
        **summary,
        "peaks": len(rows),
        "rwp_noise": fit_rwp,
        "files": sorted(p.name for p in out_dir.iterdir()),
        "strongest": max(rows, key=lambda row: row["intensity"]),
        "max_counts": float(np.max(counts)),
    }
