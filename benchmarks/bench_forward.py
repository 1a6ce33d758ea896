"""Forward-model speed: pymatgen's XRDCalculator vs atomdiff's batched powder XRD, same structures, one run.

    .venv/bin/python benchmarks/bench_forward.py [--n 500] [--threads 2]

For each dataset (first N structures of ../shared/data/{perov_5,carbon_24}/test.csv) it times
  1. pymatgen ``XRDCalculator("CuKa1").get_pattern(s, two_theta_range=(5, 90))`` in a loop (the reference);
  2. atomdiff: every reflection's 2θ and intensity for the whole batch at once (``reflections``) — the same
     quantities pymatgen computes, before its merging of equal-2θ peaks;
  3. atomdiff: the full profile pattern on a 2θ grid (5–90°, step 0.02°, pseudo-Voigt) for the batch;
  4. atomdiff: merged peak lists (``peak_table``) structure by structure, the like-for-like output of 1.
and prints the times and the ratios against 1.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from atomdiff.physics.diffraction import PowderDiffractionModel, peak_table, two_theta_grid
from atomdiff.structure import StructureBatch, read_structures

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = {args.n} structures per dataset")
    print(f"{'dataset':10s} {'method':44s} {'time (s)':>9s} {'ms/structure':>13s} {'speed-up':>9s}")
    for dataset in ("perov_5", "carbon_24"):
        structures = read_structures(args.data / dataset / "test.csv", limit=args.n)
        pmg = [s.to_pymatgen() for s in structures]
        calc = XRDCalculator("CuKa1")
        t_ref = _best_of(lambda: [calc.get_pattern(p, two_theta_range=(5, 90)) for p in pmg], 1)

        model = PowderDiffractionModel("xray", "CuKa1", two_theta_grid(5, 90, 0.02))
        rows = [("pymatgen XRDCalculator.get_pattern (loop)", t_ref)]
        for dtype in (torch.float64, torch.float32):
            batch = StructureBatch.from_structures(structures, dtype=dtype)
            with torch.no_grad():
                model.reflections(batch)  # warm-up (form-factor tables)
                t = _best_of(lambda b=batch: model.reflections(b), 3)
            rows.append((f"atomdiff batched reflections ({str(dtype)[6:]})", t))
        batch = StructureBatch.from_structures(structures, dtype=torch.float32)
        with torch.no_grad():
            t = _best_of(lambda: model(batch), 1)
        rows.append(("atomdiff batched profile pattern, 4251 pts (float32)", t))
        t = _best_of(lambda: [peak_table(model, s) for s in structures], 1)
        rows.append(("atomdiff merged peak lists (loop, float64)", t))
        for name, t in rows:
            print(f"{dataset:10s} {name:44s} {t:9.3f} {1000 * t / len(structures):13.3f} {t_ref / t:8.1f}x")


if __name__ == "__main__":
    main()
