"""Cost of amorphous sampling against the number of atoms (is it linear?), unguided and XANES-guided.

For each cell size, times a few sampler steps of the shipped a-C prior (and of the prior plus XANES guidance
through the surrogate) at one density, and prints µs per atom per step with the ratio to the smallest cell
measured in the same process. Optionally runs one full generation of the largest cell.

    python benchmarks/bench_amorphous.py --atoms 216 1000 4000 16000 64000 100000 --guided-max 16000 --full 10000 \
        -o docs/results/bench_amorphous.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from atomdiff.diffusion.amorphous import SampleOptions, density_cell
from atomdiff.diffusion.guidance.spectra import SpectralGuidance, SpectrumTerm
from atomdiff.physics import descriptors
from atomdiff.structure import Structure, StructureBatch
from atomdiff.weights import load_amorphous_model, load_xanes_surrogate


def template(n: int, density: float) -> StructureBatch:
    s = Structure(np.full(n, 6), np.zeros((n, 3)), density_cell(np.full(n, 6), density))
    return StructureBatch.from_structures([s], dtype=torch.float32)


def time_steps(model, batch, steps: int, guidance=None) -> float:
    """Seconds per step of ``steps`` sampler steps (after one warm-up step)."""
    model.sample(batch, SampleOptions(steps=1), torch.Generator().manual_seed(0), guidance)
    t0 = time.perf_counter()
    model.sample(batch, SampleOptions(steps=steps), torch.Generator().manual_seed(0), guidance)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, nargs="+", default=[216, 1000, 4000, 16000])
    parser.add_argument("--density", type=float, default=2.5)
    parser.add_argument("--steps", type=int, default=3, help="timed sampler steps per size")
    parser.add_argument("--full", type=int, default=0, help="also generate one cell of this many atoms (100 steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guided-max", type=int, default=10**9, help="time guided steps only up to this size")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_amorphous_model("amorphous_carbon")
    surrogate = load_xanes_surrogate("xanes_carbon_k")
    target = torch.as_tensor(surrogate.mean)
    rows: list[dict] = []
    result = {"density": args.density, "threads": args.threads, "timed_steps": args.steps, "sizes": rows}
    for n in args.atoms:
        batch = template(n, args.density)
        plain = time_steps(model, batch, args.steps)
        row = {"atoms": n, "s_per_step": plain, "us_per_atom_step": 1e6 * plain / n}
        base = rows[0] if rows else row
        text = (
            f"{n:>7} atoms: {plain:8.3f} s/step ({1e6 * plain / n:6.1f} µs/atom, ×{plain / base['s_per_step']:.1f} "
            f"for ×{n / base['atoms']:.0f} atoms)"
        )
        if n <= args.guided_max:
            guided = time_steps(model, batch, args.steps, SpectralGuidance([SpectrumTerm("xanes", surrogate, target)]))
            row.update({"s_per_step_guided": guided, "us_per_atom_step_guided": 1e6 * guided / n})
            text += f" | guided {guided:8.3f} s/step ({1e6 * guided / n:6.1f} µs/atom)"
        rows.append(row)
        print(text, flush=True)
        if args.output:  # after every size, so an interrupted run keeps what it measured
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n")
    if args.full:
        batch = template(args.full, args.density)
        t0 = time.perf_counter()
        (s,) = model.generate(batch, SampleOptions(steps=100, min_distance=1.1), torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - t0
        hyb = descriptors.hybridisation_fractions(s)
        result["full"] = {
            "atoms": args.full,
            "steps": 100,
            "seconds": seconds,
            **hyb,
            "min_distance": descriptors.min_distance(s),
        }
        print(f"full generation of {args.full} atoms, 100 steps: {seconds:.1f} s; sp3 {hyb['sp3']:.3f}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
