"""XANES-guided amorphous generation for a material the shipped models never saw, checked against FEFF itself.

The chain of issue 7 end to end: a prior (``atomdiff train amorphous``) and a XANES surrogate (``atomdiff train
xanes``) trained on cells labelled by FEFF (``atomdiff data xanes``), then guided generation. The surrogate's own
misfit says little about whether guidance worked (guidance minimises it, and can fool it), so every generated cell
is labelled by FEFF again with the data set's settings and energy grid, and the misfit is computed from FEFF too.

For each chosen test cell of the labelled data set the target is the mean FEFF spectrum of its labelled sites.
``--samples`` cells are generated in its cell (same atom count and density) with XANES guidance, and as many
without. FEFF then labels ``--feff-sites`` random sites of every sample and of the reference cell itself (its
sites drawn independently of the target's, so they may overlap them): the reference's FEFF misfit is the floor
that a perfect structure reaches with that many sites. Misfit = mean squared difference / mean square of the
target (the guidance's relative misfit). Coordination fractions (Si–Si bonds < 2.85 Å, see
``atomdiff.physics.descriptors``) and the RDF distance to the reference are reported too.

Optionally (``--steer LOW,HIGH``) the steering experiment of ``atomdiff evaluate amorphous``: targets
interpolated between the mean spectra of two test cells, generated at ``--steer-density``; the 4-fold fraction
per target and whether it moves monotonically.

    python benchmarks/xanes_new_material.py --data DATASET --prior RUN/model --surrogate RUN/model \\
        --cells d2.10_000,d2.60_000 --samples 3 --feff-sites 8 --workers 2 -o result.json --work /tmp/work
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from atomdiff.data.generate.xanes import XanesDataGenerator, load_inputs
from atomdiff.data.spectra import read_spectrum_dataset
from atomdiff.diffusion.amorphous import AmorphousDiffusion, SampleOptions, density_cell
from atomdiff.diffusion.guidance.spectra import relative_misfit
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.physics.xanes import FeffSettings, SpectrumCache, default_cache_dir
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.io import write_structures
from atomdiff.structure.structure import Structure
from atomdiff.tasks.amorphous import default_min_distance
from atomdiff.tasks.evaluate_amorphous import (
    rdf_distance,
    sample_cells,
    spectrum_misfit,
    steering,
    structure_metrics,
    xanes_guidance,
)


def misfit(y: np.ndarray, target: np.ndarray) -> float:
    """The guidance's relative misfit of one spectrum."""
    return float(relative_misfit(torch.as_tensor(y), torch.as_tensor(target)))


def feff_label(structures: dict[str, Structure], dataset: Path, work: Path, sites: int, workers: int, seed: int):
    """FEFF mean spectrum over ``sites`` random absorbing sites of each structure, on the data set's grid."""
    record = json.loads((dataset / "settings.json").read_text())
    settings = FeffSettings(**record["feff"]["settings"])
    grid = record["grid"]
    folder = work / "structures"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, structure in structures.items():
        path = folder / f"{name}.vasp"
        write_structures(structure.replace(info={}), path)
        paths.append(path)
    generator = XanesDataGenerator(
        work / "feff",
        settings,
        "samples",
        emin=grid["emin"],
        emax=grid["emax"],
        step=grid["step"],
        cache=SpectrumCache(default_cache_dir()),
        workers=workers,
        sites_per_structure=sites,
        seed=seed,
    )
    t0 = time.perf_counter()
    summary = generator.run(load_inputs(paths))
    labelled = {item.name: item for item in read_spectrum_dataset(work / "feff", "samples", settings.absorber_z)}
    return labelled, summary, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="FEFF-labelled data set (atomdiff data xanes)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--prior", required=True, help="amorphous prior folder")
    parser.add_argument("--surrogate", required=True, help="XANES surrogate folder")
    parser.add_argument("--cells", default=None, help="comma-separated test cells (default: all)")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--feff-sites", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steer", default=None, help="LOW,HIGH: two test cells whose spectra are the ends")
    parser.add_argument("--steer-density", type=float, default=2.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True, help="folder for the samples and their FEFF labels")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    prior = AmorphousDiffusion.load(args.prior).eval()
    surrogate = XanesSurrogate.load(args.surrogate).eval()
    cells = {item.name: item for item in read_spectrum_dataset(args.data, args.split, surrogate.absorber)}
    chosen = args.cells.split(",") if args.cells else sorted(cells)
    element = chemical_symbols[surrogate.absorber]
    options = SampleOptions(steps=args.steps, min_distance=default_min_distance(element))
    result: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}

    samples: dict[str, Structure] = {}
    rows = []
    for k, name in enumerate(chosen):
        cell = cells[name]
        target = cell.mean_spectrum
        template = cell.structure.replace(frac=np.zeros_like(cell.structure.frac))
        row = {"name": name, "density": cell.structure.density, "reference": structure_metrics(cell.structure)}
        samples[f"{name}_reference"] = cell.structure
        for label, guidance in (
            ("guided", xanes_guidance(surrogate, target, args.guidance, "tweedie")),
            ("unguided", None),
        ):
            t0 = time.perf_counter()
            out = sample_cells(prior, template, args.samples, options, args.seed + 1000 * k, guidance)
            seconds = time.perf_counter() - t0
            for j, s in enumerate(out):
                samples[f"{name}_{label}_{j}"] = s
            row[label] = {
                "metrics": [structure_metrics(s) for s in out],
                "surrogate_misfit": spectrum_misfit(surrogate, out, target).tolist(),
                "rdf_distance": [rdf_distance(s, cell.structure) for s in out],
                "seconds": seconds,
            }
            print(f"{name} {label}: {seconds:.0f} s, surrogate misfit {np.mean(row[label]['surrogate_misfit']):.2e}")
        row["reference_surrogate_misfit"] = float(spectrum_misfit(surrogate, [cell.structure], target)[0])
        rows.append(row)

    labelled, summary, feff_seconds = feff_label(
        samples, args.data, args.work, args.feff_sites, args.workers, args.seed
    )
    result["feff"] = {"runs": summary.computed, "seconds": feff_seconds, "failed_structures": summary.failed}
    for row in rows:
        target = cells[row["name"]].mean_spectrum
        ref = labelled.get(f"{row['name']}_reference")
        row["reference_feff_misfit"] = misfit(ref.mean_spectrum, target) if ref else None
        for label in ("guided", "unguided"):
            found = [labelled.get(f"{row['name']}_{label}_{j}") for j in range(args.samples)]
            row[label]["feff_misfit"] = [misfit(f.mean_spectrum, target) if f else None for f in found]
    result["cells"] = rows

    def mean(label: str, key: str) -> float:
        values = [v for r in rows for v in r[label][key] if v is not None]
        return float(np.mean(values))

    def cn4_error(label: str) -> float:
        return float(np.mean([abs(m["cn4"] - r["reference"]["cn4"]) for r in rows for m in r[label]["metrics"]]))

    result["summary"] = {
        **{
            f"{label}_{key}": mean(label, key)
            for label in ("guided", "unguided")
            for key in ("surrogate_misfit", "feff_misfit", "rdf_distance")
        },
        "guided_cn4_error": cn4_error("guided"),
        "unguided_cn4_error": cn4_error("unguided"),
        "reference_feff_misfit": float(
            np.mean([r["reference_feff_misfit"] for r in rows if r["reference_feff_misfit"] is not None])
        ),
        "reference_surrogate_misfit": float(np.mean([r["reference_surrogate_misfit"] for r in rows])),
    }
    if args.steer:
        low, high = (cells[n] for n in args.steer.split(","))
        n = len(low.structure)
        z = np.full(n, surrogate.absorber)
        template = Structure(z, np.zeros((n, 3)), density_cell(z, args.steer_density))
        t0 = time.perf_counter()
        result["steering"] = steering(
            prior,
            surrogate,
            low.mean_spectrum,
            high.mean_spectrum,
            template,
            samples=args.samples,
            options=options,
            strength=args.guidance,
            seed=args.seed,
        )
        result["steering"]["ends"] = {
            "low": {"name": low.name, **structure_metrics(low.structure)},
            "high": {"name": high.name, **structure_metrics(high.structure)},
        }
        result["steering"]["seconds"] = time.perf_counter() - t0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    if "steering" in result:
        print(
            "steering cn4:",
            [round(t["cn4_mean"], 3) for t in result["steering"]["targets"]],
            "monotonic",
            result["steering"]["monotonic"],
        )


if __name__ == "__main__":
    main()
