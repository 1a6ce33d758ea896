"""How far XANES guidance steers an amorphous-carbon cell as the cell grows: guided against unguided misfit.

    OMP_NUM_THREADS=2 python benchmarks/bench_guidance_size.py --atoms 216 1728 13824 --samples 5 3 1 \
        [--target ../shared/data/a-C_xanes/xanes/test/d2.5_5.txt] [--density 2.5] [--guidance 1] [-o RESULT.json]

For each cell size, ``--samples`` cells are generated with the shipped prior at the density, once guided by the
target's mean spectrum (strength ``--guidance``) and once unguided (strength 0, the same seed), and both are
measured against the target with the shipped surrogate (relative misfit of the mean spectrum, as
``atomdiff amorphous`` reports it), with their sp3 fraction and the seconds per cell. The guidance step is
normalised per structure (RMS over atoms, :mod:`atomdiff.diffusion.guidance.spectra`), so one strength gives the
same step per atom at every size; what changes with the size is how much of the misfit the prior leaves and
how many atoms share in removing it. ``--skip-guided N`` leaves the guided runs out at the sizes ≥ N (for a
10⁵-atom unguided baseline whose guided run was made with ``atomdiff amorphous``). ``--domain N`` guides the
XANES of every domain of about N atoms (``atomdiff amorphous --guidance-domain``, default 216); ``--domain 0``
guides the whole cell's mean, as every run before session 24 did. ``--restarts N`` sets the guided runs'
restarts (default: the task's, two from 0.2 Å for a XANES target since session 26; ``--restarts 0`` is the
session-25 behaviour).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from atomdiff.tasks.amorphous import AmorphousSettings, generate_amorphous, read_targets, summary_rows
from atomdiff.weights import load_amorphous_model, load_xanes_surrogate

DEFAULT_TARGET = Path(__file__).resolve().parents[1].parent / "shared/data/a-C_xanes/xanes/test/d2.5_5.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[216, 1728, 13824])
    ap.add_argument("--samples", type=int, nargs="+", default=[5, 3, 1], help="cells per size (last one repeats)")
    ap.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="XANES target (mean spectrum)")
    ap.add_argument("--density", type=float, default=2.5)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-guided", type=int, default=None, help="no guided runs at this size and above")
    ap.add_argument("--domain", type=int, default=216, help="guide per domain of this many atoms (0: whole cell)")
    ap.add_argument("--restarts", type=int, default=None, help="restarts of the guided runs (default: the task's)")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    if not args.target.is_file():
        raise SystemExit(f"no target spectrum at {args.target} (give --target)")
    prior = load_amorphous_model("amorphous_carbon")
    surrogate = load_xanes_surrogate("xanes_carbon_k")
    targets = read_targets(args.target, None, None, surrogate.n_bins)
    rows = []
    print(
        f"{'atoms':>7s} {'cells':>5s}  {'unguided misfit':>15s} {'guided misfit':>13s} {'ratio':>6s}"
        "  sp3 u/g      s/cell u/g"
    )
    for k, n in enumerate(args.atoms):
        count = args.samples[min(k, len(args.samples) - 1)]
        row = {"atoms": n, "cells": count}
        strengths = {"unguided": 0.0, "guided": args.guidance}
        if args.skip_guided is not None and n >= args.skip_guided:
            strengths.pop("guided")
        for label, strength in strengths.items():
            settings = AmorphousSettings(
                density=args.density,
                atoms=n,
                samples=count,
                steps=args.steps,
                guidance=strength,
                guidance_domain=args.domain or None,
                restarts=args.restarts,
                seed=args.seed,
            )
            t0 = time.perf_counter()
            result = generate_amorphous(prior, settings, targets, surrogate)
            seconds = (time.perf_counter() - t0) / count
            misfit = result.curves["xanes"]["misfit"]
            row[label] = {
                "misfit": [round(float(m), 6) for m in misfit],
                "mean_misfit": float(np.mean(misfit)),
                "sp3": [r["sp3"] for r in summary_rows(result.structures)],
                "seconds_per_cell": round(seconds, 1),
                "restarts": result.settings.restarts,
            }
        rows.append(row)
        u, g = row["unguided"], row.get("guided")
        ratio = f"{u['mean_misfit'] / g['mean_misfit']:6.2f}" if g else "     –"
        gm = f"{g['mean_misfit']:13.4f}" if g else f"{'–':>13s}"
        sp3 = f"{np.mean(u['sp3']):.3f}/" + (f"{np.mean(g['sp3']):.3f}" if g else "–")
        secs = f"{u['seconds_per_cell']:.0f}/" + (f"{g['seconds_per_cell']:.0f}" if g else "–")
        print(f"{n:7d} {count:5d}  {u['mean_misfit']:15.4f} {gm} {ratio}  {sp3:12s} {secs}", flush=True)
        if args.output:  # written after every size, so a long run keeps what it measured
            command = "python benchmarks/bench_guidance_size.py " + " ".join(
                [f"--atoms {' '.join(map(str, args.atoms))}", f"--samples {' '.join(map(str, args.samples))}"]
                + [f"--target {args.target.name}", f"--density {args.density}", f"--guidance {args.guidance}"]
                + [f"--steps {args.steps}", f"--seed {args.seed}"]
                + ([f"--skip-guided {args.skip_guided}"] if args.skip_guided is not None else [])
                + [f"--domain {args.domain}"]
                + ([f"--restarts {args.restarts}"] if args.restarts is not None else [])
            )
            args.output.write_text(json.dumps({"command": command, "sizes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
