"""Sampling speed of CrystalDiffusion on the CPU: structures per second and seconds per denoising step.

    .venv/bin/python benchmarks/bench_sampling.py [--steps 20] [--batch 32] [--atoms 5,20,50]
                                                  [--sampler pc] [--threads 2] [--mode both]

The model has the default size (``CrystalNetConfig()``: hidden 256, 4 layers) with *random, untrained
weights*: the cost of a step does not depend on the weights (every pair of atoms of a cell is an edge, so
it grows as the number of atoms squared), but the structures are meaningless. For each cell size N, a batch
of ``--batch`` cells of exactly N atoms is sampled

- ``denovo``: species revealed during sampling (elements of a Perov-5-like set);
- ``csp``: fixed species (``numbers=``), as in ``atomdiff evaluate csp``.

The ``pc`` sampler evaluates the network twice per step (predictor and corrector), ``ode`` once.
One untimed warm-up step precedes each measurement.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.models.crystal import CrystalNetConfig, CrystalScoreNet
from atomdiff.structure import Structure

ELEMENTS = [8, 9, 7, 16, 20, 22, 38, 56, 41, 73, 11, 19, 57, 13]  # O F N S Ca Ti Sr Ba Nb Ta Na K La Al


def _model(n_atoms: int) -> CrystalDiffusion:
    """Default-size model with random weights; statistics from a few random cells of ``n_atoms`` atoms
    (about 12 Å³ per atom), so every sampled cell has exactly ``n_atoms`` atoms."""
    rng = np.random.default_rng(0)
    cells = [np.diag(rng.uniform(0.9, 1.1, 3)) * (12.0 * n_atoms) ** (1 / 3) for _ in range(4)]
    structures = [Structure(rng.choice(ELEMENTS, n_atoms), rng.random((n_atoms, 3)), c) for c in cells]
    torch.manual_seed(0)
    stats = DataStatistics.from_structures(structures)
    stats.elements = sorted(ELEMENTS)
    return CrystalDiffusion(CrystalNetConfig(), stats).eval()


def _time(model: CrystalDiffusion, mode: str, batch: int, n_atoms: int, steps: int, sampler: str) -> float:
    numbers = None
    if mode == "csp":
        rng = np.random.default_rng(0)
        numbers = [rng.choice(ELEMENTS, n_atoms) for _ in range(batch)]
    model.sample(batch, steps=1, sampler=sampler, numbers=numbers)  # warm-up
    t0 = time.perf_counter()
    model.sample(batch, steps=steps, sampler=sampler, numbers=numbers)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="cells per sample() call")
    parser.add_argument("--atoms", default="5,20,50", help="comma-separated atoms per cell")
    parser.add_argument("--sampler", choices=("pc", "ode"), default="pc")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=("denovo", "csp", "both"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = ("denovo", "csp") if args.mode == "both" else (args.mode,)
    config = CrystalNetConfig()
    n_params = sum(p.numel() for p in CrystalScoreNet(config).parameters())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; model hidden {config.hidden}, "
        f"{config.layers} layers, {n_params / 1e6:.2f} M parameters (random weights); sampler {args.sampler}, "
        f"{args.steps} steps, batch {args.batch}"
    )
    print(
        f"{'atoms':>5s} {'mode':>7s} {'batch':>5s} {'steps':>5s} {'time (s)':>9s} {'s/step':>8s} {'structures/s':>13s}"
    )
    for n_atoms in (int(a) for a in args.atoms.split(",")):
        model = _model(n_atoms)
        for mode in modes:
            t = _time(model, mode, args.batch, n_atoms, args.steps, args.sampler)
            print(
                f"{n_atoms:5d} {mode:>7s} {args.batch:5d} {args.steps:5d} {t:9.2f} {t / args.steps:8.3f} "
                f"{args.batch / t:13.2f}"
            )


if __name__ == "__main__":
    main()
