"""Index simulated lab powder patterns of held-out structures and score the cells against the true lattices.

For each of the first ``--limit`` structures of a test CSV (carbon-24, perov-5, ...): simulate a Cu Kα1+Kα2
pattern (2θ 10–90°, step 0.02°, Caglioti U, V, W = 0.004, −0.002, 0.003 deg², η 0.45, zero shift 0.02°, B_iso
0.5 Å², 2·10⁴ counts at the strongest peak over a sloping background, Poisson noise), find its peaks and index
them (:mod:`atomdiff.physics.indexing`). The top solution is

- **right** when its lattice is the true one (primitive cells equivalent: pymatgen ``Lattice.find_mapping``,
  1 % in lengths, 1° in angles);
- a **sub-cell** when it is a finer lattice whose volume is the true one divided by an integer (the
  reflections of the bigger cell that would tell it apart are too weak or absent, so the data cannot);
- **wrong** otherwise, or **none** when no cell indexes the lines.

Each row also says where the true lattice is among all the solutions (``true_rank``, 1 = first): a solve
holds the best indexed cell its candidates can fill, so a wrong first cell that no content fills plausibly
costs nothing when the truth comes next. Results are split by the true crystal system (spglib on the structure
at 0.01 Å); triclinic cells (searched since session 31, by ITO's zone method) are reported apart from the others.

    python benchmarks/bench_index.py --data ../shared/data/carbon_24/test.csv --limit 200 \
        -o docs/results/bench_index_carbon24.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.diffraction import PowderDiffractionModel, two_theta_grid
from atomdiff.physics.indexing import find_peaks, index_peaks, same_lattice
from atomdiff.physics.profile import Profile
from atomdiff.physics.radiation import parse_wavelength
from atomdiff.structure.io import read_structures
from atomdiff.tasks.simulate import add_counting_noise, simulate

PROFILE = Profile(u=0.004, v=-0.002, w=0.003, eta=0.45)


def outcome(structure, cell) -> str:
    from pymatgen.core import Lattice

    if cell is None:
        return "none"
    truth = structure.to_pymatgen().get_primitive_structure().lattice
    found = Lattice(cell.primitive)
    if same_lattice(truth, found):
        return "right"
    ratio = truth.volume / found.volume
    if ratio > 1.5 and abs(ratio - round(ratio)) < 0.02:
        return "sub-cell"
    return "wrong"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, default=0, help="first structure (0-based) of the CSV")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()

    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structures = read_structures(args.data)[args.start : args.start + args.limit]
    wavelength = parse_wavelength("CuKa")
    model = PowderDiffractionModel(
        "xray", wavelength, two_theta_grid(10, 90, 0.02), profile=PROFILE, zero_shift=0.02, b_iso=0.5
    )
    x = model.x.numpy()
    rows = []
    t0 = time.perf_counter()
    for k, structure in enumerate(structures, start=args.start):
        system = SpacegroupAnalyzer(structure.to_pymatgen(), symprec=0.01).get_crystal_system()
        y = simulate(model, structure).y[0].numpy()
        counts, sigma = add_counting_noise(y, 2e4, 200 - 0.5 * x, seed=args.seed + k)
        t = time.perf_counter()
        peaks = find_peaks(x, counts, "two_theta", wavelength, sigma)
        try:
            cells = index_peaks(peaks)
        except InputError:
            cells = []
        seconds = time.perf_counter() - t
        best = cells[0] if cells else None
        result = outcome(structure, best)
        # where the true lattice is among the solutions (1 = first; a solve passes over cells it cannot fill)
        true_rank = next((i for i, c in enumerate(cells, start=1) if outcome(structure, c) == "right"), None)
        rows.append(
            {
                "index": k,
                "system": system,
                "atoms": len(structure),
                "peaks": len(peaks),
                "outcome": result,
                "true_rank": true_rank,
                "solutions": len(cells),
                "found": best.describe() if best else "",
                "seconds": round(seconds, 2),
            }
        )
        print(
            f"{k:4d} {system:12s} {len(peaks):3d} peaks  {result:8s} {rows[-1]['found']}  (truth at "
            f"{true_rank or '-'} of {len(cells)}; {seconds:.1f} s)",
            flush=True,
        )
    searched = ("cubic", "hexagonal", "trigonal", "tetragonal", "orthorhombic", "monoclinic")
    summary = {}
    for group, members in (
        ("searched systems", [r for r in rows if r["system"] in searched]),
        ("triclinic", [r for r in rows if r["system"] not in searched]),
    ):
        counts = Counter(r["outcome"] for r in members)
        summary[group] = {"n": len(members), **{o: counts.get(o, 0) for o in ("right", "sub-cell", "wrong", "none")}}
    by_system = {}
    for system in sorted({r["system"] for r in rows}):
        members = [r for r in rows if r["system"] == system]
        counts = Counter(r["outcome"] for r in members)
        by_system[system] = {"n": len(members), **{o: counts.get(o, 0) for o in ("right", "sub-cell", "wrong", "none")}}
    total = time.perf_counter() - t0
    print(json.dumps({"summary": summary, "by_system": by_system}, indent=1))
    print(f"mean {np.mean([r['seconds'] for r in rows]):.2f} s per pattern (peak search + indexing)")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "command": f"python benchmarks/bench_index.py --data {args.data} --start {args.start} --limit {args.limit} "
            f"--seed {args.seed}",
            "threads": torch.get_num_threads(),
            "summary": summary,
            "by_system": by_system,
            "seconds_total": round(total, 1),
            "rows": rows,
        }
        args.output.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
