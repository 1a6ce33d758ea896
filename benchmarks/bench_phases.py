"""Quantitative phase analysis of kesterite with a secondary phase: found or not, and the weight-fraction error.

    .venv/bin/python benchmarks/bench_phases.py [--fractions 2,5,10] [--seeds 3] [-o RESULT.json]

For each secondary phase (``--secondary``: herzenbergite SnS, Pnma; sphalerite ZnS, F-43m; mohite Cu2SnS3, Cc,
:func:`atomdiff.examples.mohite`), each weight fraction and each noise seed, a lab pattern of kesterite + that
phase is simulated (Cu Kα1, 2θ 10–90°, step 0.02°, the demo's profile, B = 0.6 Å², 2·10⁴ counts at the
strongest point over a flat background of 150, Poisson noise; ``--profile-w`` broadens the peaks: the Caglioti
W, 0.003 in the demo, 0.03 for a thin film's ~0.17° at 28°) and ``analyse_phases`` is given kesterite and every
secondary phase of ``--secondary`` as candidates (all but one absent from the sample). Each row also gives the
share of each phase's intensity in lines of its own (``Phase.own_lines``).
It prints, per case, the fractions found with their standard uncertainties, whether the secondary phase was
kept and the absent one dropped, and the error of the secondary phase's weight fraction.

With ``--generate`` the secondary phases are not given: kesterite is the one known phase, and a structure for
each of SnS and ZnS is generated and refined by the solve against what kesterite leaves unexplained
(``atomdiff phases --known DIR --formula SnS --formula ZnS``, :func:`atomdiff.tasks.phases.generated_phases`)
with the default model (``--model`` to choose); the row also says whether the generated structure is the true
one (pymatgen's StructureMatcher, the crystal issue's tolerances) and its space group. With ``--search`` nothing
is given but the element list: a phase is generated for each composition of Cu, Zn, Sn and S the model's
training cells hold (``atomdiff phases --elements Cu,Zn,Sn,S``), the compound of all four first.

With ``--displace S`` the kesterite candidate (given, or the known phase of ``--generate``) is not the structure
that made the pattern: its free coordinates in its space group (I-4) are moved at random, S Å root-mean-square
over the atoms (seeded by the noise seed), as a main phase that is only approximately right would be (a generated
one, or one from a database at another temperature). ``--fix-positions`` keeps every phase's coordinates as
given (``analyse_phases(positions_above=None)``); by default the main phase's are refined jointly.

``--generate`` and ``--search`` cover SnS and ZnS (``--secondary SnS,ZnS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.diffusion.constraints import parse_formula
from atomdiff.examples import example_path, mohite, sphalerite, tin_sulfide
from atomdiff.physics.diffraction import PowderDiffractionModel, two_theta_grid
from atomdiff.refine import symmetrised, symmetry_constraints
from atomdiff.structure import read_structure
from atomdiff.tasks.demo import LAB_PROFILE
from atomdiff.tasks.phases import analyse_phases, generated_phases, search_compositions
from atomdiff.tasks.simulate import mixture_counts
from atomdiff.weights import choose_crystal_model, load_crystal_model


def displaced(structure, rms: float, seed: int):
    """``structure`` with its free coordinates in its space group moved at random, ``rms`` Å over the atoms."""
    exact = symmetrised(structure, 0.01)
    basis = symmetry_constraints(exact, 1e-3).position_basis
    dfrac = (basis @ np.random.default_rng(seed).normal(size=basis.shape[1])).reshape(-1, 3)
    dfrac *= rms / np.sqrt(((dfrac @ exact.cell) ** 2).sum(1).mean())
    return exact.replace(frac=exact.frac + dfrac)


def rms_off(analysis, truth) -> float | None:
    """RMS distance (Å) of the kesterite phase's atoms from the true ones (same atom order), or ``None``."""
    phase = next((p for p in analysis.phases if p.name == "kesterite"), None)
    if phase is None or len(phase.refinement.structure) != len(truth):
        return None
    d = phase.refinement.structure.frac - truth.frac
    d -= np.round(d)
    return round(float(np.sqrt(((d @ truth.cell) ** 2).sum(1).mean())), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", default="2,5,10", help="weight per cent of the secondary phase")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--secondary", default="SnS,ZnS", help="secondary phases, of SnS, ZnS, Cu2SnS3")
    parser.add_argument("--profile-w", type=float, default=None, help="Caglioti W of the simulated peaks")
    parser.add_argument("--generate", action="store_true", help="generate SnS and ZnS instead of giving them")
    parser.add_argument(
        "--search",
        action="store_true",
        help="nothing given: every phase generated for the compositions the model knows of Cu,Zn,Sn,S",
    )
    parser.add_argument("--model", default=None, help="crystal model for --generate (default: the solve's choice)")
    parser.add_argument("--candidates", type=int, default=20, help="candidates per generated phase")
    parser.add_argument("--displace", type=float, default=0.0, help="kesterite candidate's coordinates off by (Å)")
    parser.add_argument("--fix-positions", action="store_true", help="refine no phase's coordinates")
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args()
    kesterite = read_structure(example_path("kesterite_Cu2ZnSnS4.cif"))
    known = {"SnS": tin_sulfide(), "ZnS": sphalerite(), "Cu2SnS3": mohite()}
    wanted = args.secondary.split(",")
    if not set(wanted) <= set(known) or len(wanted) < 2:
        raise SystemExit(f"--secondary: two or more of {', '.join(known)}")
    secondary = {n: known[n] for n in wanted}
    columns = ("kesterite", *secondary)
    profile = LAB_PROFILE if args.profile_w is None else dataclasses.replace(LAB_PROFILE, w=args.profile_w)
    model = PowderDiffractionModel("xray", "CuKa1", two_theta_grid(10, 90, 0.02), profile=profile, b_iso=0.6)
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    references = {"kesterite": kesterite, **secondary}
    if args.search:
        elements = [29, 30, 50, 16]
        search_model = load_crystal_model(args.model or choose_crystal_model(set(elements)))
        searched = search_compositions(search_model.stats.cells, elements)
        print("searched:", ", ".join(text for text, _ in searched))
    rows = []
    header = "found wt% (" + " / ".join(columns) + ")"
    print(f"{'phase':5s} {'true wt%':>8s} {'seed':>4s}  {header:40s} {'error':>7s}  absent")
    for name, structure in secondary.items():
        absent = [n for n in secondary if n != name]
        for percent in (float(v) for v in args.fractions.split(",")):
            for seed in range(args.seeds):
                w = percent / 100
                counts = mixture_counts(model, [(kesterite, 1 - w), (structure, w)], 2e4, 150.0, seed)
                pattern = MeasuredPattern(model.x.numpy(), counts, None, "two_theta", f"{name}_{percent:g}wt_{seed}")
                given = displaced(kesterite, args.displace, seed) if args.displace > 0 else kesterite
                t0 = time.perf_counter()
                if args.search:
                    made = generated_phases(
                        pattern, [], searched, lambda text: search_model, candidates=args.candidates, seed=seed
                    )
                    names = {"generated Cu2ZnSnS4": "kesterite", **{f"generated {k}": k for k in secondary}}
                    candidates = [(names.get(n, n), s) for n, s in made]
                elif args.generate:
                    made = generated_phases(
                        pattern,
                        [("kesterite", given)],
                        [(k, parse_formula(k)) for k in secondary],
                        lambda text: load_crystal_model(
                            args.model or choose_crystal_model(set(parse_formula(text)), True)
                        ),
                        candidates=args.candidates,
                        seed=seed,
                    )
                    candidates = [("kesterite", given)] + [(n.removeprefix("generated "), s) for n, s in made]
                else:
                    candidates = [("kesterite", given), *secondary.items()]
                analysis = analyse_phases(pattern, candidates, positions_above=None if args.fix_positions else 0.2)
                seconds = time.perf_counter() - t0
                found = {p.name: (100 * p.weight_fraction, 100 * p.sigma) for p in analysis.phases}
                error = found[name][0] - percent if name in found else None
                row = {
                    "secondary": name,
                    "true_wt_percent": percent,
                    "seed": seed,
                    "found": {k: [round(v[0], 3), round(v[1], 3)] for k, v in found.items()},
                    "secondary_found": name in found,
                    "error_wt_percent": None if error is None else round(error, 3),
                    "absent_phase_dropped": not set(absent) & set(found),
                    "other_phases": sorted(set(found) - set(columns)),
                    "own_lines": {p.name: round(p.own_lines, 3) for p in analysis.phases},
                    "kesterite_rms_off": rms_off(analysis, kesterite),
                    "rwp": analysis.rwp,
                    "gof": analysis.gof,
                    "warning": analysis.warning(),
                    "seconds": seconds,
                }
                if args.generate or args.search:
                    row["generated"] = {
                        n: {
                            "formula": ph.refinement.structure.formula,
                            "space_group": ph.space_group,
                            "atoms": len(ph.refinement.structure),
                            "true_structure": bool(
                                matcher.fit(ph.refinement.structure.to_pymatgen(), references[n].to_pymatgen())
                            ),
                        }
                        for ph in analysis.phases
                        if (n := ph.name) in references and (args.search or n != "kesterite")
                    }
                rows.append(row)
                text = " / ".join(f"{found[k][0]:.2f}±{found[k][1]:.2f}" if k in found else "—" for k in columns)
                err = "missed" if error is None else f"{error:+.2f}"
                dropped = "dropped" if row["absent_phase_dropped"] else "KEPT"
                made = "".join(
                    f"  [{n}: {g['space_group']}, {'true' if g['true_structure'] else 'other'} structure]"
                    for n, g in row.get("generated", {}).items()
                )
                made += "".join(f"  [also {n}: {found[n][0]:.2f} wt%]" for n in row["other_phases"])
                made += f"  Rwp {100 * analysis.rwp:.2f} %, kesterite {row['kesterite_rms_off']} Å off"
                own = row["own_lines"]
                made += "".join(f", {n} own lines {100 * v:.0f} %" for n, v in own.items() if n != "kesterite")
                print(f"{name:5s} {percent:8.1f} {seed:4d}  {text:40s} {err:>7s}  {dropped}{made}", flush=True)
    for name in secondary:
        mine = [r for r in rows if r["secondary"] == name]
        errors = [abs(r["error_wt_percent"]) for r in mine if r["error_wt_percent"] is not None]
        print(
            f"{name}: found in {sum(r['secondary_found'] for r in mine)}/{len(mine)}, "
            f"mean |error| {sum(errors) / max(len(errors), 1):.2f} wt% (max {max(errors, default=float('nan')):.2f}), "
            f"absent phase dropped in {sum(r['absent_phase_dropped'] for r in mine)}/{len(mine)}"
        )
    if args.output:
        command = f"python benchmarks/bench_phases.py --fractions {args.fractions} --seeds {args.seeds}"
        if args.secondary != "SnS,ZnS":
            command += f" --secondary {args.secondary}"
        if args.profile_w is not None:
            command += f" --profile-w {args.profile_w:g}"
        if args.displace > 0:
            command += f" --displace {args.displace:g}"
        if args.fix_positions:
            command += " --fix-positions"
        if args.search:
            command += f" --search --candidates {args.candidates}" + (f" --model {args.model}" if args.model else "")
        if args.generate:
            command += f" --generate --candidates {args.candidates}" + (f" --model {args.model}" if args.model else "")
        with open(args.output, "w") as fh:
            json.dump({"command": command, "cases": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
