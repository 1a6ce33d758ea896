"""Generate crystal structures with a :class:`CrystalDiffusion` model under a composition constraint.

Output folder layout (:func:`write_samples`):

- ``000_<formula>.cif`` … one P1 CIF per sample, numbered from 0 and zero-padded to at least 3 digits;
- ``samples.extxyz``: every sample, in the same order;
- ``summary.csv``: ``index, formula, n_atoms, density`` (g/cm³), ``min_distance`` (Å, periodic images
  included), ``valid`` (structurally and compositionally valid, as in :mod:`atomdiff.tasks.evaluate`).

Samples are drawn in calls of at most ``batch_size`` structures; call ``k`` uses :func:`chunk_seed`
``(seed, k)``, so the same seed and batch size give identical structures.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from atomdiff.diffusion.constraints import CompositionConstraint
from atomdiff.diffusion.crystal import CrystalDiffusion
from atomdiff.diffusion.guidance import RepulsionGuidance
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure.io import write_structures
from atomdiff.structure.structure import Structure

SUMMARY_COLUMNS = ("index", "formula", "n_atoms", "density", "min_distance", "valid")
SAMPLES_FILE = "samples.extxyz"
SUMMARY_FILE = "summary.csv"
_SAMPLE_CIF = re.compile(r"^\d+_.*\.cif$")

Progress = Callable[[float, float], None]


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of the ``chunk``-th sampling call of a run with ``seed``: ``seed`` itself for the first call,
    then seeds derived with :class:`numpy.random.SeedSequence` (distinct across seeds and calls)."""
    if seed < 0:
        raise InputError(f"--seed must be zero or positive, got {seed}")
    if chunk == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1)[0])


def repulsion_guidance(strength: float) -> RepulsionGuidance | None:
    """:class:`RepulsionGuidance` of that strength (defaults otherwise), or ``None`` for 0."""
    if strength < 0:
        raise InputError(f"--repulsion must be ≥ 0, got {strength}")
    return RepulsionGuidance(strength) if strength > 0 else None


def sample_structures(
    model: CrystalDiffusion,
    n: int,
    constraint: CompositionConstraint | None = None,
    *,
    steps: int = 200,
    sampler: str = "pc",
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
    repulsion: float = 0.0,
) -> list[Structure]:
    """Draw ``n`` structures in calls of at most ``batch_size`` and check each against ``constraint``.

    Args:
        progress: called with ``(steps done, steps in all)`` over every call.
        repulsion: strength of :class:`~atomdiff.diffusion.guidance.RepulsionGuidance` (0: off).

    Raises:
        InputError: the constraint cannot be met by the model (before any sampling), or bad parameters.
        RuntimeError: a sample violates the constraint (a bug of the sampler, never expected).
    """
    if n < 1 or batch_size < 1:
        raise InputError(f"the number of samples and the batch size must be positive, got {n} and {batch_size}")
    constraint = constraint or CompositionConstraint()
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    total = steps * len(sizes)
    out: list[Structure] = []
    for k, size in enumerate(sizes):
        callback = None
        if progress is not None:

            def callback(step: int, _steps: int, done: int = k * steps) -> None:
                progress(done + step, total)

        out += model.sample(
            size,
            constraint,
            steps=steps,
            sampler=sampler,
            seed=chunk_seed(seed, k),
            progress=callback,
            guidance=repulsion_guidance(repulsion),
        )
    for i, s in enumerate(out):
        problems = constraint.check(s.numbers)
        if problems:
            raise RuntimeError(f"sample {i} ({s.formula}) violates the constraint: {'; '.join(problems)}")
    return out


def summary_row(index: int, structure: Structure) -> dict[str, object]:
    """One row of ``summary.csv`` (see the module docstring)."""
    from atomdiff.tasks.evaluate import composition_valid, structurally_valid

    dmin = min_distance(structure)
    return {
        "index": index,
        "formula": structure.formula,
        "n_atoms": len(structure),
        "density": round(structure.density, 6),
        "min_distance": round(dmin, 6) if math.isfinite(dmin) else "",
        "valid": structurally_valid(structure) and composition_valid(structure.numbers),
    }


def check_output_folder(folder: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse a file, or a folder holding an earlier run's samples unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("output must be a folder, and this is a file", path=str(folder))
    if overwrite or not folder.is_dir():
        return
    earlier = [p.name for p in folder.iterdir() if p.name in (SAMPLES_FILE, SUMMARY_FILE) or _SAMPLE_CIF.match(p.name)]
    if earlier:
        raise InputError(
            f"folder already holds samples ({', '.join(sorted(earlier)[:3])}, ...): choose another or overwrite",
            path=str(folder),
        )


def write_samples(structures: Sequence[Structure], folder: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Write one CIF per structure, ``samples.extxyz`` and ``summary.csv`` into ``folder``.

    With ``overwrite``, sample CIFs of an earlier run (``<digits>_<formula>.cif``) are removed first.
    Returns the paths written.
    """
    folder = Path(folder)
    check_output_folder(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if _SAMPLE_CIF.match(old.name) and old.is_file():
            old.unlink()
    width = max(3, len(str(len(structures) - 1)))
    paths = []
    for k, s in enumerate(structures):
        path = folder / f"{k:0{width}d}_{s.formula}.cif"
        write_structures(s, path)
        paths.append(path)
    write_structures(list(structures), folder / SAMPLES_FILE)
    with atomic_path(folder / SUMMARY_FILE) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(summary_row(k, s) for k, s in enumerate(structures))
    return [*paths, folder / SAMPLES_FILE, folder / SUMMARY_FILE]


def generate(
    model: CrystalDiffusion,
    n: int,
    folder: str | os.PathLike,
    constraint: CompositionConstraint | None = None,
    *,
    steps: int = 200,
    sampler: str = "pc",
    seed: int = 0,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: Progress | None = None,
    repulsion: float = 0.0,
) -> list[Structure]:
    """Sample ``n`` structures and write them into ``folder``; nothing is written if the input is refused."""
    check_output_folder(folder, overwrite)
    structures = sample_structures(
        model,
        n,
        constraint,
        steps=steps,
        sampler=sampler,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        repulsion=repulsion,
    )
    write_samples(structures, folder, overwrite)
    return structures
