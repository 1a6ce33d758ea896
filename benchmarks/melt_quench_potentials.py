"""Which melt–quench potential makes amorphous carbon like C-GAP-17's? sp3 fraction against density.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/melt_quench_potentials.py --potentials tersoff lcbop snap@3.5 \
        --densities 1.5 2.0 2.5 3.0 3.5 --per-density 2 -o docs/results/melt_quench_potentials.json

For each potential (``NAME@3.5`` runs that one at the listed densities only, one cell each), the generator
of ``atomdiff data amorphous`` (default carbon schedule: 9000 K for 1 ps, 5000 K for 3 ps, quench at 1000 K/ps
to 300 K, minimisation; 216 atoms) makes cells at each density into ``--work/<potential>`` (resumable: a rerun
reuses the cells). Their sp3 fractions (neighbours within 1.85 Å) are compared with two references read
from ``../shared/data``:

- the C-GAP-17 melt–quench–anneal cells of ``amorphous_carbon/`` (200 atoms, 1.0–3.5 g/cm³; the reference curve
  the issue names), at the nearest reference density, and
- the 25 training cells of ``a-C_xanes/`` (the data the shipped prior learned), mean per density.

Prints a table and writes JSON with every cell's fractions, energy and wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np

from atomdiff.data.generate.amorphous import MeltQuenchGenerator
from atomdiff.physics.descriptors import density, hybridisation_fractions
from atomdiff.structure.io import read_structure

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def gap17_reference() -> dict[float, float]:
    """Nominal density → sp3 of the 2000 K-anneal C-GAP-17 cells."""
    out = {}
    for path in sorted((SHARED / "amorphous_carbon").glob("gap17_density-*-T-2000.extxyz")):
        rho = float(path.name.split("-")[1])
        out[rho] = hybridisation_fractions(read_structure(path))["sp3"]
    return out


def xanes_cells_reference() -> dict[float, float]:
    """Density (rounded to 0.5 g/cm³) → mean sp3 of the a-C_xanes training cells."""
    groups: dict[float, list[float]] = {}
    for path in sorted((SHARED / "a-C_xanes" / "poscar" / "train").glob("*.vasp")):
        cell = read_structure(path)
        groups.setdefault(round(density(cell) * 2) / 2, []).append(hybridisation_fractions(cell)["sp3"])
    return {rho: float(np.mean(v)) for rho, v in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--potentials", nargs="+", default=["tersoff", "lcbop"], help="NAME or NAME@D1,D2 (one cell per density)"
    )
    parser.add_argument("--densities", nargs="+", type=float, default=[1.5, 2.0, 2.5, 3.0, 3.5])
    parser.add_argument("--per-density", type=int, default=1)
    parser.add_argument("--atoms", type=int, default=216)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "melt_quench")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "melt_quench_potentials.json")
    args = parser.parse_args()

    gap = gap17_reference()
    xanes = xanes_cells_reference()
    result = {
        "command": "python benchmarks/melt_quench_potentials.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work", "output")),
        "machine": platform.processor() or platform.machine(),
        "gap17_sp3": gap,
        "a-C_xanes_train_sp3": xanes,
        "potentials": {},
    }
    names = []
    for item in args.potentials:
        name, _, only = item.partition("@")
        names.append(name)
        densities = [float(d) for d in only.split(",")] if only else args.densities
        count = 1 if only else args.per_density
        generator = MeltQuenchGenerator(args.work / name, "C", args.atoms, name, seed=args.seed, workers=args.workers)
        start = time.perf_counter()
        generator.run(densities, count, lambda done, total: print(f"{name}: {done}/{total}"))
        print(f"{name}: {time.perf_counter() - start:.0f} s")
        rows = [r for r in csv.DictReader(open(generator.summary_path))]
        wanted = {generator.name(d, i) for d in densities for i in range(count)}
        rows = [r for r in rows if r["name"] in wanted]
        cells = []
        for r in rows:
            rho = float(r["density"])
            ref = gap[min(gap, key=lambda d: abs(d - rho))]
            cells.append(
                {
                    "name": r["name"],
                    "density": rho,
                    "sp": float(r["sp"]),
                    "sp2": float(r["sp2"]),
                    "sp3": float(r["sp3"]),
                    "gap17_sp3": ref,
                    "energy_per_atom_eV": float(r["energy_per_atom"]),
                    "seconds": float(r["seconds"]),
                }
            )
        result["potentials"][name] = {
            "reference": generator.pair.reference,
            "protocol": generator.settings()["protocol"],
            "mean_abs_sp3_vs_gap17": float(np.mean([abs(c["sp3"] - c["gap17_sp3"]) for c in cells])),
            "seconds_per_cell": float(np.mean([c["seconds"] for c in cells])),
            "cells": cells,
        }

    print(f"\n{'density':>8} {'GAP-17':>7} {'a-C_xanes':>9} " + " ".join(f"{p:>8}" for p in names))
    for rho in args.densities:
        near = xanes.get(round(rho * 2) / 2)
        line = f"{rho:8.2f} {gap[min(gap, key=lambda d: abs(d - rho))]:7.3f} "
        line += f"{near:9.3f} " if near is not None else f"{'':9} "
        for p in names:
            values = [c["sp3"] for c in result["potentials"][p]["cells"] if abs(c["density"] - rho) < 1e-6]
            line += f"{np.mean(values):8.3f} " if values else f"{'':8} "
        print(line)
    for p, r in result["potentials"].items():
        print(f"{p}: mean |sp3 − GAP-17| {r['mean_abs_sp3_vs_gap17']:.3f}, {r['seconds_per_cell']:.0f} s per cell")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
