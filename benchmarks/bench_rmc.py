"""PDF-guided diffusion against reverse Monte Carlo fitted to the same G(r), in the same cell, for the same time.

    python benchmarks/bench_rmc.py --samples 5 --seed 0 -o docs/results/bench_rmc.json

For each reference cell (the test cells of ``../shared/data/a-C_xanes`` by default, more with ``--cells``), the
target is the reference's X-ray G(r) on 0.5–8 Å (0.02 Å steps, Gaussian width 0.05 Å, optional ``--qmax``
termination) from :class:`~atomdiff.physics.total_scattering.PDFForwardModel`. Then, in the reference's cell with
its atom count:

* **diffusion**: ``--samples`` cells from the shipped a-C prior guided by that G(r) (``atomdiff amorphous
  --target-pdf``, tweedie guidance at ``--guidance``, ``--steps`` steps, ``--finish-steps`` iterations of the
  zero-temperature finish, closest approach 1.1 Å); its wall time
  divided by the number of samples is the time budget of one RMC run;
* **RMC** (:class:`~atomdiff.refine.rmc.PDFReverseMonteCarlo`): ``--samples`` runs from random starts with the
  same closest approach, each for that budget (and on to ``--rmc-factor`` times it, e.g. ``1 10``). A run is
  looked at the first time its Rw reaches the diffusion samples' mean Rw ("equal fit") and at the end of each
  budget.

Every structure is scored the same way: Rw of G(r) through the forward model (``sqrt(Σ ΔG² / Σ G²)``), sp3
fraction, the fractions of 1-fold and of 5-or-more-fold carbon and the fraction of atoms with a neighbour closer
than 1.2 Å (shorter than any C–C bond; bonds within 1.85 Å), the fraction of bond angles below 70° (three-membered
rings), and the RMS distances of g(r) and of the bond-angle distribution to the reference cell.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from atomdiff.physics import descriptors
from atomdiff.physics.total_scattering import PDFForwardModel
from atomdiff.refine.rmc import PDFReverseMonteCarlo, random_start
from atomdiff.structure import Structure, StructureBatch
from atomdiff.structure.io import read_structure
from atomdiff.tasks.amorphous import AmorphousSettings, Targets, default_min_distance, generate_amorphous
from atomdiff.tasks.evaluate_amorphous import adf_distance, rdf_distance
from atomdiff.weights import load_amorphous_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BOND, SHORT, ACUTE = 1.85, 1.2, 70.0


def realism(s: Structure, ref: Structure, pdf: PDFForwardModel, target: np.ndarray) -> dict[str, float]:
    """The scores of the module docstring for one cell."""
    with torch.no_grad():
        g = pdf(StructureBatch.from_structures([s], dtype=torch.float64)).y[0].numpy()
    cn = descriptors.coordination_numbers(s, BOND)
    i, _, vec = descriptors.pairs(s, SHORT)
    short = np.unique(i[np.linalg.norm(vec, axis=1) < SHORT]).size
    angles, density = descriptors.bond_angle_distribution(s, BOND, 180)
    return {
        "rw": float(np.sqrt(np.sum((g - target) ** 2) / np.sum(target**2))),
        "sp3": float(np.mean(cn == 4)),
        "cn1": float(np.mean(cn == 1)),
        "cn5_plus": float(np.mean(cn >= 5)),
        "short_contacts": short / len(s),
        "acute_angles": float(np.sum(density[angles < ACUTE]) * (180.0 / len(angles))),
        "rdf_distance": rdf_distance(s, ref),
        "adf_distance": adf_distance(s, ref),
        "min_distance": descriptors.min_distance(s),
    }


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def compare(ref: Structure, name: str, args, model) -> dict:
    r = np.arange(0.5, 8.0 + 1e-9, 0.02)
    pdf = PDFForwardModel(r, "xray", qmax=args.qmax, sigma=0.05)
    with torch.no_grad():
        target = pdf(StructureBatch.from_structures([ref], dtype=torch.float64)).y[0].numpy()
    closest = default_min_distance("C")
    settings = AmorphousSettings(
        atoms=len(ref),
        samples=args.samples,
        steps=args.steps,
        guidance=args.guidance,
        restarts=args.restarts,
        restart_sigma=args.restart_sigma,
        finish_steps=args.finish_steps,
        finish_guidance=args.finish_guidance,
        pdf_qmax=args.qmax,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    result = generate_amorphous(model, settings, Targets(pdf=(r, target)), cell=ref.cell)
    seconds = time.perf_counter() - t0
    diffusion = [realism(s, ref, pdf, target) for s in result.structures]
    per_sample = seconds / args.samples
    factors = sorted(set(args.rmc_factor))
    equal_fit = float(np.mean([d["rw"] for d in diffusion]))
    sigma = args.rmc_sigma * float(np.sqrt(np.mean(target**2)))
    runs = []
    for k in range(0 if args.no_rmc else args.samples):
        start = random_start(ref, closest, seed=args.seed + 7919 * k)
        rmc = PDFReverseMonteCarlo(start, pdf, target, sigma, closest, args.rmc_step, seed=args.seed + k)
        run: dict = {"seconds_to_equal_fit": None, "at_equal_fit": None, "at_budget": {}}
        for factor in factors:  # run on to each budget in turn; note the first time Rw reaches the diffusion's
            while rmc.status.seconds < factor * per_sample:
                left = factor * per_sample - rmc.status.seconds
                status = rmc.run(seconds=left, until_rw=None if run["at_equal_fit"] else equal_fit)
                if run["at_equal_fit"] is None and status.rw <= equal_fit:
                    run["seconds_to_equal_fit"] = status.seconds
                    run["at_equal_fit"] = realism(rmc.structure, ref, pdf, target)
                elif run["at_equal_fit"] is not None or status.rw > equal_fit:
                    break
            run["at_budget"][str(factor)] = {
                **realism(rmc.structure, ref, pdf, target),
                "proposals": rmc.status.proposed,
                "acceptance": rmc.status.acceptance,
            }
        runs.append(run)
    reached_fit = [run["at_equal_fit"] for run in runs if run["at_equal_fit"]]
    row = {
        "name": name,
        "atoms": len(ref),
        "density": ref.density,
        "reference": realism(ref, ref, pdf, target),
        "diffusion": {"mean": mean(diffusion), "samples": diffusion, "seconds_per_sample": per_sample},
        "rmc": {
            "budget_seconds": {str(f): f * per_sample for f in factors},
            "equal_fit_rw": equal_fit,
            "reached_equal_fit": len(reached_fit),
            "seconds_to_equal_fit": [run["seconds_to_equal_fit"] for run in runs],
            "at_equal_fit": mean(reached_fit),
            "at_budget": {str(f): mean([run["at_budget"][str(f)] for run in runs]) for f in factors},
            "runs": runs,
        },
    }
    return row


def add_reference_arguments(parser: argparse.ArgumentParser, threads: int) -> None:
    """Options shared with ``bench_sq_guidance.py``: the reference cells, the guided sampling, threads (default
    ``threads``), seed and output file."""
    parser.add_argument("--data", type=Path, default=SHARED / "a-C_xanes", help="a-C XANES data set (test cells)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cells", type=Path, nargs="*", default=[], help="more reference cells (any format)")
    parser.add_argument("--limit", type=int, default=None, help="first N cells only")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--restarts", type=int, default=None, help="guided restarts (default: the task's, 2)")
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path)


def reference_paths(args: argparse.Namespace) -> list[Path]:
    """The data set's cells of ``--split`` and the ``--cells``, the first ``--limit`` of them."""
    folder = args.data / "poscar" / args.split
    if not folder.is_dir():
        raise SystemExit(f"no reference cells in {folder} (the shared a-C XANES data set; see its README)")
    paths = sorted(folder.glob("*.vasp")) + list(args.cells)
    return paths[: args.limit] if args.limit else paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reference_arguments(parser, threads=2)
    parser.add_argument(
        "--restart-sigma", type=float, default=AmorphousSettings.restart_sigma, help="noise level (Å) of a restart"
    )
    parser.add_argument("--finish-steps", type=int, default=0, help="zero-temperature finish (0: off)")
    parser.add_argument("--finish-guidance", type=float, default=0.1, help="guidance in the finish, × --guidance")
    parser.add_argument("--qmax", type=float, default=None, help="Q-range termination of G(r), Å⁻¹")
    parser.add_argument("--rmc-sigma", type=float, default=0.1, help="χ² width over the target's RMS")
    parser.add_argument("--rmc-step", type=float, default=0.1, help="largest RMC move, Å")
    parser.add_argument(
        "--rmc-factor", type=float, nargs="+", default=[1.0], help="RMC time budgets over diffusion's time per sample"
    )
    parser.add_argument("--no-rmc", action="store_true", help="the diffusion half only (no RMC runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = reference_paths(args)
    model = load_amorphous_model("amorphous_carbon")
    rows = []
    columns = ("Rw", "sp3", "cn1", "cn≥5", "<1.2Å", "<70°", "RDF")
    print(f"{'cell':>24} {'ρ':>5} | {'':>9} " + " ".join(f"{c:>6}" for c in columns))
    for path in paths:
        ref = read_structure(path)
        row = compare(ref, path.stem, args, model)
        rows.append(row)
        rmc_rows = (
            [
                ("RMC @ fit", row["rmc"]["at_equal_fit"]),
                *((f"RMC @ {f}×t", m) for f, m in row["rmc"]["at_budget"].items()),
            ]
            if row["rmc"]["runs"]
            else []
        )
        for label, m in (("reference", row["reference"]), ("diffusion", row["diffusion"]["mean"]), *rmc_rows):
            if not m:
                print(f"{path.stem:>24} {ref.density:5.2f} | {label:>9}  (equal fit not reached)")
                continue
            print(
                f"{path.stem:>24} {ref.density:5.2f} | {label:>9} "
                + " ".join(
                    f"{m[k]:6.3f}"
                    for k in ("rw", "sp3", "cn1", "cn5_plus", "short_contacts", "acute_angles", "rdf_distance")
                )
            )
        rmc_note = (
            f"; RMC reached the diffusion's Rw in {row['rmc']['reached_equal_fit']}/{args.samples} runs, "
            f"{np.mean([r['at_budget'][str(max(args.rmc_factor))]['proposals'] for r in row['rmc']['runs']]):.0f} "
            "proposals per run"
            if row["rmc"]["runs"]
            else ""
        )
        print(
            f"{'':>24} {'':>5} | diffusion {row['diffusion']['seconds_per_sample']:.1f} s per sample{rmc_note}",
            flush=True,
        )
    summary = {
        label: mean([pick(r) for r in rows if pick(r)])
        for label, pick in (
            ("reference", lambda r: r["reference"]),
            ("diffusion", lambda r: r["diffusion"]["mean"]),
            ("rmc_at_equal_fit", lambda r: r["rmc"]["at_equal_fit"]),
        )
    }
    for f in sorted(set(args.rmc_factor)):
        summary[f"rmc_at_{f}x_budget"] = mean([r["rmc"]["at_budget"][str(f)] for r in rows])
    print("mean over cells:", json.dumps({k: {m: round(v, 4) for m, v in d.items()} for k, d in summary.items()}))
    if args.output:
        out = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": platform.processor() or platform.machine(),
            "cells": rows,
            "summary": summary,
        }
        out["settings"]["cells"] = [str(p) for p in args.cells]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
