"""Control for `atomdiff gb`: the builder's boundaries with their slab atoms displaced at random, then relaxed —
what a plain perturb-and-relax search finds in the same cell, with no model.

    python benchmarks/gb_perturbed_builder.py --element W --sigma 5 --plane 1,0,0 --kind twist \
        --expand 4 --in-plane 3,3 --shifts 4 --displacement 0.3 -o perturbed.json

For every rigid shift and merge ratio of `atomdiff gb` (the starts its samples cycle through), the builder's
bicrystal in the generation cell (`--expand`, `--in-plane`: the values `atomdiff gb` prints in its summary's
"generation") has the atoms within `--width` of a boundary displaced by Gaussian noise of `--displacement` Å per
component, and is relaxed with the same potential, force threshold and step limit. Prints one line per start and
the lowest energy; writes the records as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from atomdiff.cli.options import parse_triple
from atomdiff.physics.potentials import bulk_reference, calculator, relax
from atomdiff.tasks.grain_boundary import BUILDER_MERGE_RATIOS, GBSettings, gb_energy, rigid_shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="W")
    parser.add_argument("--sigma", type=int, default=5)
    parser.add_argument("--plane", default="1,0,0")
    parser.add_argument("--kind", default="twist")
    parser.add_argument("--axis", default=None)
    parser.add_argument("--expand", type=int, default=4, help="grain thickness, CSL periods")
    parser.add_argument("--in-plane", default="3,3", help="in-plane repeats of the boundary cell")
    parser.add_argument("--shifts", type=int, default=4)
    parser.add_argument("--width", type=float, default=3.0, help="half-width (Å) of the displaced slabs")
    parser.add_argument("--displacement", type=float, default=0.3, help="Gaussian σ (Å) per component")
    parser.add_argument("--potential", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    settings = GBSettings(
        args.element,
        args.sigma,
        parse_triple(args.plane, "--plane"),
        args.kind,
        parse_triple(args.axis, "--axis"),
        potential=args.potential,
        shifts=args.shifts,
    )
    in_plane = tuple(int(v) for v in args.in_plane.split(","))
    reference = bulk_reference(settings.element, settings.lattice, settings.potential)
    calc = calculator(settings.element, settings.potential)
    rng = np.random.default_rng(args.seed)
    records = []
    for shift, ratio in itertools.product(rigid_shifts(settings), BUILDER_MERGE_RATIOS):
        bicrystal = settings.bicrystal(
            reference, expand_times=args.expand, in_plane=in_plane, ab_shift=shift, rm_ratio=ratio
        )
        atoms = bicrystal.structure.to_ase()
        slab = bicrystal.distance_to_boundary() <= args.width
        atoms.positions[slab] += rng.normal(0.0, args.displacement, (int(slab.sum()), 3))
        relaxed = relax(atoms, calc, fmax=settings.fmax, steps=settings.relax_steps)
        energy = gb_energy(relaxed.energy, len(relaxed.atoms), reference, bicrystal.area)
        record = {
            "shift": list(shift),
            "rm_ratio": ratio,
            "atoms": len(relaxed.atoms),
            "atoms_per_cell": len(relaxed.atoms) / (in_plane[0] * in_plane[1]),
            "E_gb_J_m2": round(energy, 5),
            "converged": relaxed.converged,
        }
        records.append(record)
        print(record, flush=True)
    best = min(records, key=lambda r: r["E_gb_J_m2"])
    print(f"lowest: {best['E_gb_J_m2']} J/m² ({best['atoms_per_cell']:g} atoms per CSL cell)")
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump({"settings": vars(args), "records": records}, fh, indent=1)


if __name__ == "__main__":
    main()
