"""The ordered-phase experiment: how often does a generative model produce a perfect crystal?

Both models learn the same boxes (``atomdiff data ordered``). Samples are requested phase by phase, cycling
through the phases of the data (64 samples of 8 phases: 8 each). A phase-conditioned voxel model is given the
phase label only — its decoder chooses the number of atoms — and is scored against that phase; an
unconditional voxel model samples freely and each sample is grouped by the phase it turned out to be. The
point-cloud model (either the local Cartesian prior of the amorphous mode or the DiffCSP-style crystal model
with its box held) is given, for every sample, the species and box of a random training structure of the
requested phase (so it knows the right atom count and composition, the most it can be told without telling
it the answer) and is scored against that phase. Every sample is classified with
:func:`atomdiff.physics.ordering.classify`; the same classifier on the training structures themselves gives
the ceiling (thermal noise in the data makes a few training boxes fail it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.ordering import PHASES, classify
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure

Progress = Callable[[int, int], None] | None


def sample_record(structure: Structure, intended: str | None = None) -> dict[str, Any]:
    """What the classifier says about one sample (JSON-ready)."""
    result = classify(structure)
    record: dict[str, Any] = {
        "atoms": len(structure),
        "formula": structure.formula if len(structure) else "",
        "phase": result.phase,
        "lattice": result.lattice,
        "ordered_fraction": round(result.ordered_fraction, 4),
        "perfect": result.perfect,
    }
    if intended is not None:
        record["intended"] = intended
        record["perfect_any_phase"] = bool(result.perfect)  # a perfect crystal, but maybe not of the phase asked for
        record["perfect"] = result.perfect and result.phase == intended
    return record


def summarise(records: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per phase (grouped by ``record[key]``: ``"phase"`` or ``"intended"``) and overall fractions of perfect
    samples, and the mean fraction of ordered atoms."""
    per_phase: dict[str, Any] = {}
    for phase in PHASES:
        group = [r for r in records if r.get(key) == phase]
        if group:
            per_phase[phase] = {
                "samples": len(group),
                "perfect": sum(r["perfect"] for r in group),
                "perfect_fraction": float(np.mean([r["perfect"] for r in group])),
                "mean_ordered_fraction": float(np.mean([r["ordered_fraction"] for r in group])),
            }
    n = len(records)
    out = {
        "samples": n,
        "perfect": sum(r["perfect"] for r in records),
        "perfect_fraction": float(np.mean([r["perfect"] for r in records])) if n else 0.0,
        "no_phase": sum(r["phase"] is None for r in records),
        "per_phase": per_phase,
    }
    if n and all("perfect_any_phase" in r for r in records):
        out["perfect_any_phase"] = int(sum(r["perfect_any_phase"] for r in records))
        out["confusion"] = {  # requested phase → what the samples turned out to be ("imperfect" if not perfect)
            phase: dict(Counter(r["phase"] if r["perfect_any_phase"] else "imperfect" for r in group))
            for phase in PHASES
            if (group := [r for r in records if r["intended"] == phase])
        }
    return out


def reference_ceiling(structures: Sequence[Structure]) -> dict[str, Any]:
    """The classifier on labelled training structures (``info['phase']``): the best a model can score."""
    records = [sample_record(s, s.info.get("phase")) for s in structures]
    return summarise(records, "intended")


def intended_phases(data: Sequence[Structure], number: int) -> list[str]:
    """The phases of the data (in :data:`PHASES` order) cycled to ``number`` requests."""
    present = {s.info.get("phase") for s in data}
    phases = [p for p in PHASES if p in present]
    if not phases:
        raise InputError(f"the data hold none of the phases {', '.join(PHASES)} in info['phase']")
    return [phases[k % len(phases)] for k in range(number)]


def voxel_samples(
    model,
    number: int,
    steps: int,
    sampler: str,
    seed: int,
    progress: Progress = None,
    chunk: int = 8,
    labels: Sequence[str] | None = None,
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
) -> list[Structure]:
    """``number`` samples of a :class:`~atomdiff.diffusion.voxel.VoxelDiffusion` (of the classes ``labels``, one
    per sample, for a class-conditioned model; else unconditional), generated in chunks (memory) from one
    seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    out: list[Structure] = []
    for start in range(0, number, chunk):
        k = min(chunk, number - start)

        def tick(step: int, total: int, start: int = start, k: int = k) -> None:
            if progress is not None:
                progress(start * steps + step * k, number * steps)

        part = None if labels is None else list(labels[start : start + k])
        out.extend(
            model.generate_structures(
                k,
                steps=steps,
                generator=generator,
                progress=tick,
                sampler=sampler,
                labels=part,
                guidance=guidance,
                guidance_interval=guidance_interval,
            )
        )
    return out


def point_cloud_templates(data: Sequence[Structure], phases: Sequence[str], seed: int) -> list[Structure]:
    """For each requested phase a random training structure of that phase, giving a sample its species and box."""
    rng = np.random.default_rng(seed)
    by_phase: dict[str, list[Structure]] = {}
    for s in data:
        by_phase.setdefault(s.info.get("phase"), []).append(s)
    return [by_phase[p][rng.integers(len(by_phase[p]))] for p in phases]


def point_cloud_samples(
    model, templates: Sequence[Structure], options, seed: int, progress: Progress = None, chunk: int = 8
) -> list[Structure]:
    """Positions sampled for the species and boxes of ``templates`` (the templates' own positions are never
    used) by either point-cloud model: an :class:`~atomdiff.diffusion.amorphous.AmorphousDiffusion` (local
    prior on Cartesian positions, ``options`` its :class:`~atomdiff.diffusion.amorphous.SampleOptions`) or a
    :class:`~atomdiff.diffusion.crystal.CrystalDiffusion` (DiffCSP-style: wrapped-normal diffusion of
    fractional coordinates with the species fixed and the box held, ``options.steps`` predictor–corrector
    steps; each chunk seeded from ``seed`` and its position)."""
    from atomdiff.diffusion.crystal import CrystalDiffusion

    generator = torch.Generator().manual_seed(seed)
    out: list[Structure] = []
    number = len(templates)
    for start in range(0, number, chunk):
        part = templates[start : start + chunk]

        def tick(step: int, total: int, start: int = start, k: int = len(part)) -> None:
            if progress is not None:
                progress(start * total + step * k, number * total)

        if isinstance(model, CrystalDiffusion):
            out.extend(
                model.sample(
                    len(part),
                    steps=options.steps,
                    numbers=[t.numbers for t in part],
                    cells=torch.as_tensor(np.stack([t.cell for t in part])),
                    seed=seed * 1_000_003 + start,
                    progress=tick,
                )
            )
            continue
        batch = StructureBatch.from_structures(part, dtype=torch.float32)
        out.extend(model.generate(batch, options, generator=generator, progress=tick))
    return out


def evaluate_ordered(
    data: Sequence[Structure],
    voxel_model=None,
    point_model=None,
    *,
    number: int = 64,
    steps: int = 100,
    voxel_sampler: str = "ddpm",
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    point_options=None,
    seed: int = 0,
    progress: Callable[[str], Progress] | None = None,
) -> dict[str, Any]:
    """Classify samples of either or both models and the training data; a JSON-ready result."""
    bar = progress or (lambda stage: None)
    result: dict[str, Any] = {"number": number, "steps": steps, "seed": seed, "data_structures": len(data)}
    phases = [s.info.get("phase") for s in data]
    result["data_phase_counts"] = {p: phases.count(p) for p in PHASES if p in phases}
    result["reference"] = reference_ceiling(data)
    intended = intended_phases(data, number)
    if voxel_model is not None:
        conditional = bool(voxel_model.classes)
        if conditional:
            missing = sorted(set(intended) - set(voxel_model.classes))
            if missing:
                raise InputError(f"the voxel model was not trained on the phases {missing} of the data")
        labels = intended if conditional else None
        samples = voxel_samples(
            voxel_model,
            number,
            steps,
            voxel_sampler,
            seed,
            bar("voxel"),
            labels=labels,
            guidance=guidance,
            guidance_interval=guidance_interval,
        )
        if conditional:
            records = [sample_record(s, p) for s, p in zip(samples, intended, strict=True)]
        else:
            records = [sample_record(s) for s in samples]
        result["voxel"] = {
            "sampler": voxel_sampler,
            "conditioned_on_phase": conditional,
            "guidance": guidance if conditional else None,
            "guidance_interval": list(guidance_interval) if conditional and guidance_interval else None,
            **summarise(records, "intended" if conditional else "phase"),
            "samples_detail": records,
        }
        result["voxel_structures"] = samples
    if point_model is not None:
        templates = point_cloud_templates(data, intended, seed)
        samples = point_cloud_samples(point_model, templates, point_options, seed, bar("point cloud"))
        records = [sample_record(s, t.info.get("phase")) for s, t in zip(samples, templates, strict=True)]
        result["point_cloud"] = {**summarise(records, "intended"), "samples_detail": records}
        result["point_cloud_structures"] = samples
    return result
