"""S(Q)-guided amorphous carbon against unguided samples, in the reference cells, scored with the exact S(Q).

    python benchmarks/bench_sq_guidance.py --samples 5 --seed 0 -o docs/results/bench_sq_guidance.json

For each reference cell (the test cells of ``../shared/data/a-C_xanes`` by default, more with ``--cells``) the
target is the reference's X-ray structure factor S(Q) on ``--q`` (default 0.5–20 Å⁻¹, step 0.05), computed with
:class:`~atomdiff.physics.total_scattering.ScatteringForwardModel` pair by pair (Lorch window, r_max 10 Å). Then,
in the reference's cell with its atom count, ``--samples`` cells from the shipped a-C prior guided by that S(Q)
(``atomdiff amorphous --target-sq``: the task's settings, in particular its binned Debye sum for guidance and its
restarts) and as many unguided (the same seed). Every structure is scored with the exact S(Q): Rw on S − 1
(``sqrt(Σ ΔS² / Σ (S_ref − 1)²)``), the sp3 fraction and its distance to the reference's, the fractions of
1-fold and of 5-or-more-fold carbon (bonds within 1.85 Å), the RMS distance of g(r) to the reference's, and,
for cells with XANES in the data set, the shipped surrogate's relative misfit to the cell's mean spectrum (as
``atomdiff evaluate amorphous`` scores it). ``--xanes-weight W`` adds that spectrum as a second target with weight
W (S(Q) weight ``--sq-weight``, default 1; 0 leaves S(Q) out, for XANES-guided samples scored the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from bench_rmc import add_reference_arguments, reference_paths  # the same reference cells and sampling options

from atomdiff.data.spectra import read_spectrum_dataset
from atomdiff.physics import descriptors
from atomdiff.physics.total_scattering import ScatteringForwardModel
from atomdiff.structure import Structure, StructureBatch
from atomdiff.structure.io import read_structure
from atomdiff.tasks.amorphous import AmorphousSettings, Targets, generate_amorphous
from atomdiff.tasks.evaluate_amorphous import rdf_distance, spectrum_misfit
from atomdiff.weights import load_amorphous_model, load_xanes_surrogate

ROOT = Path(__file__).resolve().parents[1]
BOND = 1.85
R_MAX = 10.0


def scores(
    s: Structure, ref: Structure, sq: ScatteringForwardModel, target: np.ndarray, xanes=None
) -> dict[str, float]:
    """The scores of the module docstring; ``xanes``: ``(surrogate, mean spectrum)`` or ``None``."""
    with torch.no_grad():
        y = sq(StructureBatch.from_structures([s], dtype=torch.float64)).y[0].numpy()
    cn = descriptors.coordination_numbers(s, BOND)
    ref_sp3 = float(np.mean(descriptors.coordination_numbers(ref, BOND) == 4))
    return {
        "rw": float(np.sqrt(np.sum((y - target) ** 2) / np.sum((target - 1.0) ** 2))),
        "sp3": float(np.mean(cn == 4)),
        "sp3_error": abs(float(np.mean(cn == 4)) - ref_sp3),
        "cn1": float(np.mean(cn == 1)),
        "cn5_plus": float(np.mean(cn >= 5)),
        "rdf_distance": rdf_distance(s, ref),
        **({"xanes_misfit": float(spectrum_misfit(xanes[0], [s], xanes[1])[0])} if xanes else {}),
    }


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each score that every row has (cells without XANES have no ``xanes_misfit``)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if all(k in r for r in rows)} if rows else {}


def compare(ref: Structure, name: str, args, model, xanes=None) -> dict:
    q = np.arange(args.q[0], args.q[1] + 1e-9, args.q[2])
    sq = ScatteringForwardModel(q, "xray", r_max=R_MAX)
    with torch.no_grad():
        target = sq(StructureBatch.from_structures([ref], dtype=torch.float64)).y[0].numpy()
    row: dict = {
        "name": name,
        "atoms": len(ref),
        "density": ref.density,
        "reference": scores(ref, ref, sq, target, xanes),
    }
    both = xanes is not None and args.xanes_weight > 0
    targets = Targets(sq=(q, target) if args.sq_weight > 0 else None, xanes=xanes[1] if both else None)
    for label, strength in (("guided", args.guidance), ("unguided", 0.0)):
        settings = AmorphousSettings(
            atoms=len(ref),
            samples=args.samples,
            steps=args.steps,
            guidance=strength,
            restarts=args.restarts if strength > 0 else None,
            sq_rmax=R_MAX,
            weight_xanes=args.xanes_weight,
            weight_sq=args.sq_weight,
            xanes_scale="none",
            seed=args.seed,
        )
        t0 = time.perf_counter()
        result = generate_amorphous(model, settings, targets, xanes[0] if both else None, cell=ref.cell)
        seconds = (time.perf_counter() - t0) / args.samples
        samples = [scores(s, ref, sq, target, xanes) for s in result.structures]
        row[label] = {
            "mean": mean(samples),
            "samples": samples,
            "seconds_per_sample": seconds,
            "restarts": result.settings.restarts,
        }
    return row


def command(args: argparse.Namespace) -> str:
    """The command line of this run (options left at None or empty are left out)."""
    parts = ["python benchmarks/bench_sq_guidance.py"]
    for key, value in vars(args).items():
        if key == "output" or value is None or value == []:
            continue
        shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        if isinstance(value, Path):
            shown = os.path.relpath(value, ROOT)
        parts.append(f"--{key.replace('_', '-')} {shown}")
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_arguments(parser, threads=1)
    parser.add_argument("--q", type=float, nargs=3, default=[0.5, 20.0, 0.05], metavar=("MIN", "MAX", "STEP"))
    parser.add_argument("--xanes-weight", type=float, default=0.0, help="also guide by the cell's XANES (weight)")
    parser.add_argument("--sq-weight", type=float, default=1.0, help="weight of the S(Q) target (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = reference_paths(args)
    model = load_amorphous_model("amorphous_carbon")
    surrogate = load_xanes_surrogate("xanes_carbon_k")
    spectra = {c.name: c.mean_spectrum for c in read_spectrum_dataset(args.data, args.split, surrogate.absorber)}
    rows = []
    columns = ("Rw", "sp3", "|Δsp3|", "cn1", "cn≥5", "RDF", "s/cell", "XANES")
    print(f"{'cell':>24} {'ρ':>5} | {'':>9} " + " ".join(f"{c:>6}" for c in columns))
    for path in paths:
        ref = read_structure(path)
        known = spectra.get(path.stem)
        row = compare(ref, path.stem, args, model, (surrogate, known) if known is not None else None)
        rows.append(row)
        for label in ("reference", "guided", "unguided"):
            m = row[label] if label == "reference" else row[label]["mean"]
            secs = f"{row[label]['seconds_per_sample']:6.1f}" if label != "reference" else f"{'':>6}"
            keys = ("rw", "sp3", "sp3_error", "cn1", "cn5_plus", "rdf_distance")
            spectral = f" {m['xanes_misfit']:.4f}" if "xanes_misfit" in m else ""
            values = " ".join(f"{m[k]:6.3f}" for k in keys)
            print(f"{path.stem:>24} {ref.density:5.2f} | {label:>9} {values} {secs}{spectral}")
        if args.output:  # after every cell, so a long run keeps what it measured
            summary = {label: mean([r[label]["mean"] for r in rows]) for label in ("guided", "unguided")}
            out = {
                "command": command(args),
                "machine": platform.processor() or platform.machine(),
                "cells": rows,
                "summary": summary,
            }
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1, default=str))
    summary = {label: mean([r[label]["mean"] for r in rows]) for label in ("guided", "unguided")}
    print("mean over cells:", json.dumps({k: {m: round(v, 4) for m, v in d.items()} for k, d in summary.items()}))


if __name__ == "__main__":
    main()
