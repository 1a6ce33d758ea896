"""Diagnostic of a voxel model: noise training boxes to time t, denoise them back with DDPM steps, decode and
classify — does the denoiser keep the atoms it is given? Then a few unconditional samples.

    python benchmarks/voxel_restoration.py --model runs/voxel_v/model --data ordered.extxyz

Prints, per start time, (phase, atoms in the box, atoms decoded, phase found, perfect) for every 400th box,
and the atom counts of the unconditional samples. The figures in docs/voxel.md ("Diagnostic") come from this
procedure with these defaults.
"""

from __future__ import annotations

import argparse

import torch

from atomdiff.physics.ordering import classify
from atomdiff.structure.io import read_structures
from atomdiff.weights import load_voxel_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="boxes with info['phase'] (atomdiff data ordered)")
    parser.add_argument("--every", type=int, default=400, help="use every N-th box")
    parser.add_argument("--times", default="0.3,0.5,0.7,0.85")
    parser.add_argument("--steps", type=int, default=40, help="DDPM steps from t back to 0")
    parser.add_argument("--samples", type=int, default=4, help="unconditional samples (100 DDPM steps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_voxel_model(args.model).eval()
    boxes = read_structures(args.data)[:: args.every]
    x0 = model.noise.encode(model.grid.encode_batch(boxes))
    generator = torch.Generator().manual_seed(args.seed)
    for t0 in (float(t) for t in args.times.split(",")):
        x, _ = model.noise.sample_marginal(x0, torch.full((len(boxes),), t0, dtype=torch.float64), generator)
        times = torch.linspace(t0, 0.0, args.steps + 1, dtype=torch.float64)
        with torch.no_grad():
            for k in range(args.steps):
                t, t_prev = float(times[k]), float(times[k + 1])
                out = model.net(x, torch.full((len(boxes),), t))
                x = model.noise.reverse_step(x, out, t, t_prev, generator, eta=1.0)
        fields = model.noise.decode(x).clamp_min(0)
        rows = []
        for field, box in zip(fields, boxes, strict=True):
            decoded = model.grid.decode(field, model.cell)
            found = classify(decoded) if len(decoded) > 1 else None
            rows.append(
                (box.info["phase"], len(box), len(decoded), found and found.phase, bool(found and found.perfect))
            )
        print(f"t={t0} alpha_bar={float(model.noise.alpha_bar(t0)):.3f}", rows)
    samples = model.generate_structures(args.samples, steps=100, generator=torch.Generator().manual_seed(args.seed))
    print("unconditional atom counts:", [len(s) for s in samples])


if __name__ == "__main__":
    main()
