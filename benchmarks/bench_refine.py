"""Rietveld refinement speed: the peak-list Jacobian against one forward-mode pass per column, same starts.

    .venv/bin/python benchmarks/bench_refine.py [--n 20] [--keep 8] [--threads 2] [--seed 0] [-o RESULT.json]

Starts: the bundled kesterite (primitive cell, 8 atoms) and its 16-atom supercell, each with random strain
(±2 %), atomic displacements (0.1 Å) and, for half of them, two cations swapped — the kind of candidates a
solve refines. Target: the bundled pattern ``kesterite_CuKa.xye`` (Cu Kα1+Kα2, 2θ 10–80°, 3,501 points)
with the solve's starting profile. Both runs refine the same starts with ``RietveldRefiner`` (volume scan,
broadened stages, three paths of the sharp stages, the last stage for ``--keep``), first with
``jacobian="passes"`` (the reference), then with ``jacobian="peaks"``; it prints both times, their ratio
and the largest difference of final Rwp.

    .venv/bin/python benchmarks/bench_refine.py --compare symmetry [--n 20] [--threads 2] [-o RESULT.json]

compares refinement in P1 (the reference) with refinement in each start's space group
(``RietveldRefiner(symmetry=...)``) on the same starts (tetragonal strain ±2 %, displacements 0.01 Å rms, half with a
Cu/Zn swap) made symmetric as the solve makes its samples (spglib at 0.1 Å, ``Solver.idealised``): times, their
ratio, and per start the final Rwp of both.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from atomdiff.data.patterns import read_pattern
from atomdiff.examples import example_path
from atomdiff.refine import RietveldRefiner
from atomdiff.structure import Structure, read_structure
from atomdiff.tasks.solve import SolveSettings, build_target


def starts(n: int, seed: int, displacement: float = 0.1, tetragonal: bool = False) -> list[Structure]:
    """Strained (tetragonal: a and c only), displaced (``displacement`` Å rms) kesterite cells, half with a Cu/Zn
    swap."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    pm = read_structure(example_path("kesterite_Cu2ZnSnS4.cif")).to_pymatgen()
    primitive = SpacegroupAnalyzer(pm).get_primitive_standard_structure()
    cells = [Structure.from_pymatgen(primitive), Structure.from_pymatgen(primitive * (1, 1, 2))]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        s = cells[k % 2]
        numbers = s.numbers.copy()
        if k % 4 >= 2:  # swap a Cu and a Zn
            cu, zn = rng.choice(np.flatnonzero(numbers == 29)), rng.choice(np.flatnonzero(numbers == 30))
            numbers[cu], numbers[zn] = 30, 29
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3)) * np.array([[1, 0.2, 0.2], [0.2, 1, 0.2], [0.2, 0.2, 1]])
        cell = s.cell @ strain
        if tetragonal:  # the primitive cells' c axis is z: scale a and c, keep the metric tetragonal
            ea, ec = rng.uniform(-0.02, 0.02, 2)
            cell = s.cell @ np.diag([1 + ea, 1 + ea, 1 + ec])
        frac = s.frac + rng.normal(0, displacement, s.frac.shape) @ np.linalg.inv(cell)
        out.append(Structure(numbers, frac, cell))
    return out


def write_record(args: argparse.Namespace, measured: dict) -> None:
    """``measured`` with the command line that reproduces the run and its settings, as JSON in ``--output``."""
    if not args.output:
        return
    command = "python benchmarks/bench_refine.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "output"
    )
    record = {"command": command, "starts": args.n, "keep": args.keep, "threads": args.threads, **measured}
    with open(args.output, "w") as fh:
        json.dump(record, fh, indent=1)


def kesterite_target(threads: int) -> tuple[SolveSettings, object]:
    """The solve's default settings and the bundled kesterite pattern as a target, on ``threads`` threads."""
    torch.set_num_threads(threads)
    settings = SolveSettings()
    return settings, build_target(read_pattern(example_path("kesterite_CuKa.xye")), "xray", "CuKa", settings.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--keep", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", choices=("jacobian", "symmetry"), default="jacobian")
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args()
    if args.compare == "symmetry":
        return compare_symmetry(args)
    settings, target = kesterite_target(args.threads)
    structures = starts(args.n, args.seed)
    results = {}
    for mode in ("passes", "peaks"):
        refiner = RietveldRefiner(target, settings.profile, keep=args.keep, jacobian=mode)
        t0 = time.perf_counter()
        refined = refiner.refine(structures)
        results[mode] = (time.perf_counter() - t0, np.array([r.rwp for r in refined]))
        print(
            f"jacobian={mode:6s}: {results[mode][0]:7.1f} s, best Rwp {100 * results[mode][1].min():.2f} %", flush=True
        )
    ratio = results["passes"][0] / results["peaks"][0]
    diff = float(np.abs(results["passes"][1] - results["peaks"][1]).max())
    print(f"speed-up {ratio:.2f}×; largest |ΔRwp| between the two runs {100 * diff:.4f} % (Rwp points)")
    write_record(
        args,
        {
            "seconds_passes": results["passes"][0],
            "seconds_peaks": results["peaks"][0],
            "speedup": ratio,
            "max_abs_rwp_difference": diff,
            "rwp_passes": results["passes"][1].tolist(),
            "rwp_peaks": results["peaks"][1].tolist(),
        },
    )


def compare_symmetry(args: argparse.Namespace) -> None:
    """P1 against space-group refinement of the same idealised starts."""
    from atomdiff.tasks.solve import symmetry_of

    settings, target = kesterite_target(args.threads)
    structures = []
    # near-symmetric starts (0.01 Å displacements, tetragonal strain), as the solve's samples are after idealising
    for s in starts(args.n, args.seed, displacement=0.01, tetragonal=True):
        symbol, ideal = symmetry_of(s, settings.idealise_symprec)
        structures.append(ideal if symbol != "P1 (1)" and len(ideal) == len(s) else s)
    results = {}
    for mode, symmetry in (("P1", None), ("group", 1e-3)):
        refiner = RietveldRefiner(target, settings.profile, keep=args.keep, symmetry=symmetry)
        t0 = time.perf_counter()
        refined = refiner.refine(structures)
        groups = [r.space_group or "P1 (1)" for r in refined]
        results[mode] = (time.perf_counter() - t0, np.array([r.rwp for r in refined]), groups)
        print(f"{mode:5s}: {results[mode][0]:7.1f} s, best Rwp {100 * results[mode][1].min():.2f} %", flush=True)
    ratio = results["P1"][0] / results["group"][0]
    rexp = target.expected_rwp()
    print(f"speed-up {ratio:.2f}×; Rexp {100 * rexp:.2f} %")
    for k, (a, b, g) in enumerate(zip(results["P1"][1], results["group"][1], results["group"][2], strict=True)):
        print(f"start {k:2d} ({len(structures[k])} atoms, {g}): P1 {100 * a:6.2f} %  group {100 * b:6.2f} %")
    write_record(
        args,
        {
            "expected_rwp": rexp,
            "seconds_p1": results["P1"][0],
            "seconds_group": results["group"][0],
            "speedup": ratio,
            "rwp_p1": results["P1"][1].tolist(),
            "rwp_group": results["group"][1].tolist(),
            "space_groups": results["group"][2],
            "atoms": [len(s) for s in structures],
        },
    )


if __name__ == "__main__":
    main()
