"""Solve simulated powder patterns of held-out structures and score the ranking with StructureMatcher.

For each of the first ``--limit`` structures of a test CSV: simulate a Cu Kα1 pattern (2θ 10–90°, step
0.02°) with realistic broadening (Caglioti U, V, W = 0.01, −0.005, 0.01 deg², eta 0.4), zero shift 0.03°,
B_iso 0.6 Å², a Chebyshev background and Poisson noise (10⁴ counts at the strongest peak); solve it with
the formula given (``--given formula``) or only the element list (``--given elements``: candidates hold
exactly those elements, as with ``atomdiff solve --elements``); report top-1 and top-N match rates (pymatgen
StructureMatcher with DiffCSP's tolerances, refined candidates vs the truth), mean Rwp of the best candidate
and wall time per pattern. ``--control`` solves each pattern with the pattern of the next structure in the
file with another formula (the candidates keep the true formula), to show that the pattern drives the answer.
``--repeats R`` solves each structure R times with new pattern noise and sampling seeds (for one structure,
such as the bundled kesterite CIF).

    python benchmarks/bench_solve.py --data ../shared/data/perov_5/test.csv --limit 20 -o docs/results/solve_perov5.json

Long runs: every pattern's row is written to ``--output`` as it finishes, ``--resume`` solves only the patterns
not there yet, and chunks run side by side (``--start 0 --limit 100``, ``--start 100 --limit 100``, one thread
each) are combined with ``--merge A.json B.json -o ALL.json``. After a change that only touches some patterns,
those are re-run (``--only I,J,...``) and ``--merge ALL.json RERUN.json --replace -o NEW.json`` puts their rows in
place of the old ones (the settings must agree; the output records which patterns were replaced, and where from).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.diffusion.constraints import CompositionConstraint, parse_formula
from atomdiff.diffusion.crystal import DEFAULT_CFG_SCALE
from atomdiff.physics.diffraction import PowderDiffractionModel, two_theta_grid
from atomdiff.physics.indexing import same_lattice
from atomdiff.physics.profile import Profile
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.io import read_structures
from atomdiff.tasks.evaluate import make_matcher
from atomdiff.tasks.solve import Solver, SolveSettings, build_target
from atomdiff.weights import load_crystal_model

PROFILE = Profile(u=0.01, v=-0.005, w=0.01, eta=0.4, cutoff=20.0)


def simulate_measurement(structure, seed: int) -> MeasuredPattern:
    x = two_theta_grid(10, 90, 0.02)
    model = PowderDiffractionModel(
        "xray", "CuKa1", x, profile=PROFILE, zero_shift=0.03, b_iso=0.6, background=[100.0, -20.0, 10.0]
    )
    with torch.no_grad():
        y = model(StructureBatch.from_structures([structure])).y[0].numpy()
    y = y / y.max() * 1e4 + 100.0
    y = np.random.default_rng(seed).poisson(y).astype(float)
    return MeasuredPattern(x.numpy(), y, None, "two_theta", f"simulated #{seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="test CSV (not needed with --merge)")
    ap.add_argument("--model", default="perov5")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument(
        "--only",
        type=lambda text: {int(k) for k in text.split(",")},
        help="comma-separated test indices: solve only these of --start/--limit (a targeted re-run)",
    )
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--given", choices=("formula", "elements"), default="formula")
    ap.add_argument("--control", action="store_true", help="solve with a mismatched pattern")
    ap.add_argument(
        "--no-condition", action="store_true", help="do not condition a pattern-conditioned model on the pattern"
    )
    ap.add_argument(
        "--cfg", type=float, default=DEFAULT_CFG_SCALE, help="classifier-free guidance scale (conditioned models)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--relax-steps", type=int, default=100, help="CHGNet steps per sample before refinement (0: none)")
    ap.add_argument("--cell-pass", type=int, default=16, help="second-pass candidates in held cells (0: none)")
    ap.add_argument("--cell-guidance", type=float, default=3.0, help="guidance strength of the second pass")
    ap.add_argument("--index-cells", type=int, default=1, help="indexed cells held in the second pass (0: none)")
    ap.add_argument("--restarts", type=int, default=0, help="restarted candidates after the second pass (0: none)")
    ap.add_argument("--restart-level", type=float, default=0.3, help="noise level the restarts start from")
    ap.add_argument("--index-contents", type=int, default=2, help="contents an indexed cell is held with (at most)")
    ap.add_argument(
        "--held-contents",
        default="statistics",
        choices=["statistics", "candidates"],
        help="how an indexed cell is filled (the training cells' statistics, or the best candidate's contents)",
    )
    ap.add_argument("--index-share", type=float, default=0.75, help="share of the second pass in the indexed cells")
    ap.add_argument(
        "--stop-gof", type=float, default=1.05, help="skip relaxation/second pass at Rwp ≤ this × Rexp (0: never)"
    )
    ap.add_argument(
        "--refine-in-group",
        action="store_true",
        help="refine each idealised sample in its space group instead of P1 (SolveSettings.refine_in_group)",
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="solve each structure this many times (new noise and sampling seed)"
    )
    ap.add_argument(
        "--ordering-tolerance",
        type=float,
        default=0.05,
        help="reorder near-equal scatterers of the written candidates (SolveSettings.ordering_tolerance; 0: off)",
    )
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument(
        "--resume", action="store_true", help="keep the rows already in --output and solve only the missing ones"
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="only combine these outputs of one benchmark run in chunks (--start/--limit) into --output",
    )
    ap.add_argument(
        "--replace",
        action="store_true",
        help="with --merge: a pattern in a later file replaces its row from the earlier ones (targeted re-runs)",
    )
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.output, replace=args.replace)
        return
    if not args.data:
        ap.error("--data is required (except with --merge)")

    structures = read_structures(args.data)
    tests = structures[args.start : args.start + args.limit]
    model = load_crystal_model(args.model)
    args.conditioned = bool(model.conditioned and not args.no_condition)
    matcher = make_matcher()
    rows = []
    if args.resume and args.output and args.output.exists():
        rows = json.loads(args.output.read_text())["rows"]
    done = {(r["index"], r["repeat"]) for r in rows}
    wanted = [k for k in range(len(tests)) if not args.only or args.start + k in args.only]
    runs = [(k, r) for k in wanted for r in range(args.repeats)]
    args.n_requested = len(runs)
    for k, repeat in runs:
        if (args.start + k, repeat) in done:
            continue
        truth = tests[k]
        index = args.start + k
        source = truth
        if args.control:  # the pattern of the next structure with a different formula
            others = [j for j in range(len(structures)) if structures[j].formula != truth.formula]
            if not others:
                raise SystemExit("--control needs a structure with another formula in --data")
            source = structures[min(others, key=lambda j: (j - index - 1) % len(structures))]
        pattern = simulate_measurement(source, seed=index + 100_000 * repeat)
        formula = parse_formula(truth.formula)
        constraint = (
            CompositionConstraint(formula=formula)
            if args.given == "formula"
            else CompositionConstraint(required=frozenset(formula), atoms=(1, max(20, len(truth)))).only_required(
                set(model.stats.elements)
            )
        )
        settings = SolveSettings(
            candidates=args.candidates,
            guidance=args.guidance,
            steps=args.steps,
            seed=args.seed + repeat,
            profile=Profile(cutoff=20.0),
            condition=not args.no_condition,
            cfg=args.cfg,
            relax_steps=args.relax_steps,
            cell_pass=args.cell_pass,
            cell_guidance=args.cell_guidance,
            index_cells=args.index_cells,
            index_contents=args.index_contents,
            held_contents=args.held_contents,
            index_share=args.index_share,
            restarts=args.restarts,
            restart_level=args.restart_level,
            stop_gof=args.stop_gof,
            refine_in_group=args.refine_in_group,
            ordering_tolerance=args.ordering_tolerance,
        )
        target = build_target(pattern, "xray", "CuKa1", settings.profile)
        solver = Solver(model, target, constraint, settings)
        t0 = time.perf_counter()
        candidates = solver.run()
        ranked = solver.with_orderings(solver.rank(candidates), candidates)
        solver.symmetrise(ranked, candidates)  # the ranking the user gets (written candidates refit in their group)
        wall = time.perf_counter() - t0
        truth_pm = truth.to_pymatgen()

        def fits(structure) -> bool:
            try:
                return bool(matcher.fit(structure.to_pymatgen(), truth_pm))
            except Exception:
                return False

        hits = [fits(c.refinement.structure) for c in ranked]
        any_raw = any(fits(c.sample) for c in candidates if c.origin == "sample")  # before refinement (relaxed)
        row = {
            "index": index,
            "repeat": repeat,
            "formula": truth.formula,
            "top1": bool(hits[:1] and hits[0]),
            "topN": any(hits),
            "any_generated": any_raw,
            "best_rwp": ranked[0].refinement.rwp if ranked else None,
            "n_distinct": len(ranked),
            "top1_origin": ranked[0].origin if ranked else None,
            # did the pattern index, was the indexer's first cell the true lattice, and the cell the second pass held?
            "indexed": bool(solver.indexed_cells()),
            "indexed_right": any(
                same_lattice(Lattice(c.primitive), truth_pm.lattice) for c in solver.indexed_cells()[:1]
            ),
            "held_right": any(same_lattice(Lattice(c.primitive), truth_pm.lattice) for c in solver.held_indexed),
            # atoms in the indexed cells held (each content) and in the truth's primitive cell
            "held_atoms": [len(numbers) for numbers, _ in solver.held[: len(solver.held_indexed)]],
            "truth_primitive_atoms": len(truth_pm.get_primitive_structure()),
            "seconds": wall,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_summary(args, rows)  # after every pattern, so a stopped run keeps what it measured


def summarise(settings: dict, rows: list[dict], n_requested: int) -> dict:
    n = len(rows)
    return {
        **settings,
        "n_patterns": n,
        "n_requested": n_requested,
        "top1_match_rate": sum(r["top1"] for r in rows) / n,
        "topN_match_rate": sum(r["topN"] for r in rows) / n,
        "generated_match_rate": sum(r["any_generated"] for r in rows) / n,
        "mean_best_rwp": float(np.mean([r["best_rwp"] for r in rows if r["best_rwp"] is not None])),
        "mean_seconds_per_pattern": float(np.mean([r["seconds"] for r in rows])),
        **indexing_rates(rows),
        "rows": rows,
    }


def indexing_rates(rows: list[dict]) -> dict:
    """Share of the patterns that indexed, whose first cell is the true lattice, and whose held indexed cell is
    (rows from before session 31 lack these)."""
    known = [r for r in rows if "indexed" in r]
    if not known:
        return {}
    return {
        "indexed_rate": sum(r["indexed"] for r in known) / len(known),
        "indexed_right_rate": sum(r["indexed_right"] for r in known) / len(known),
        "held_right_rate": sum(r.get("held_right", False) for r in known) / len(known),
    }


def merge(paths: list[Path], output: Path | None, replace: bool = False) -> None:
    """One summary from the outputs of chunks of one run (same settings, distinct patterns); with ``replace``,
    rows of later files take the place of the same patterns' rows in earlier ones."""
    if output is None:
        raise SystemExit("--merge needs -o/--output")
    parts = [json.loads(p.read_text()) for p in paths]
    derived = {"n_patterns", "n_requested", "rows", "only", "replaced"}
    derived |= {k for k in parts[0] if k.endswith(("_rate", "_rwp", "_pattern"))}
    settings = {k: v for k, v in parts[0].items() if k not in derived}
    for path, part in zip(paths[1:], parts[1:], strict=True):
        other = {k: v for k, v in part.items() if k not in derived}
        if other != settings:
            raise SystemExit(f"{path}: settings differ from {paths[0]}: {other} vs {settings}")
    if replace:
        latest: dict[tuple[int, int], dict] = {}
        replaced: dict[str, list[int]] = {}
        for path, part in zip(paths, parts, strict=True):
            for r in part["rows"]:
                key = (r["index"], r["repeat"])
                if key in latest:
                    replaced.setdefault(str(path), []).append(r["index"])
                latest[key] = r
        rows = sorted(latest.values(), key=lambda r: (r["index"], r["repeat"]))
        settings["replaced"] = {k: sorted(v) for k, v in replaced.items()}
        n_requested = len(rows)
    else:
        rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: (r["index"], r["repeat"]))
        if len({(r["index"], r["repeat"]) for r in rows}) != len(rows):
            raise SystemExit("the chunks overlap (a pattern appears twice; --replace for targeted re-runs)")
        if all(part.get("only") for part in parts):  # targeted re-runs: the patterns chosen in all
            settings["only"] = sorted({k for part in parts for k in part["only"]})
        n_requested = sum(part["n_requested"] for part in parts)
    summary = summarise(settings, rows, n_requested)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    write_json(summary, output)


def write_json(summary: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(output)


def write_summary(args, rows: list[dict]) -> dict:
    settings = {
        "data": args.data,
        "model": args.model,
        "given": args.given,
        "control": args.control,
        "conditioned": args.conditioned,
        "cfg": args.cfg if args.conditioned else None,
        "candidates": args.candidates,
        "guidance": args.guidance,
        "steps": args.steps,
        "repeats": args.repeats,
        "seed": args.seed,
        "relax_steps": args.relax_steps,
        "cell_pass": args.cell_pass,
        "cell_guidance": args.cell_guidance,
        "index_cells": args.index_cells,
        "index_contents": args.index_contents,
        "held_contents": args.held_contents,
        "index_share": args.index_share,
        "only": sorted(args.only) if args.only else None,
        "restarts": args.restarts,
        "restart_level": args.restart_level,
        "stop_gof": args.stop_gof,
        "refine_in_group": args.refine_in_group,
        "ordering_tolerance": args.ordering_tolerance,
        "ranking": "after the symmetrising refit of the written candidates (Solver.symmetrise), as written",
    }
    summary = summarise(settings, rows, args.n_requested)
    if len(rows) == args.n_requested:
        print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.output:
        write_json(summary, args.output)
    return summary


if __name__ == "__main__":
    main()
