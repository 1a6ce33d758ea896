"""Benchmarks of a crystal diffusion model: structure prediction (as DiffCSP) and de novo generation (as CDVAE).

Validity of one generated structure (as in DiffCSP's ``compute_metrics.py``, with our own checks):

- *structural*: shortest interatomic distance > 0.5 Å (periodic images, an atom's own included) and cell
  volume ≥ 0.1 Å³;
- *composition*: a SMACT-like charge-neutrality test. A single element, or only metals (pymatgen's
  ``Element.is_metal``, like SMACT's ``include_alloys``), is valid; otherwise the reduced composition is
  valid when pymatgen's ``Composition.oxi_state_guesses()`` (its ICSD oxidation states) finds a neutral
  assignment. There is no Pauling electronegativity test and the oxidation states are pymatgen's, not
  SMACT's longer list, so the check is stricter: 90.0 % of the 3,785 Perov-5 test structures pass it.

Structure prediction (:func:`evaluate_csp`): for each test structure, ``k`` samples with its exact atomic
numbers. A sample *matches* when it is structurally valid and pymatgen's
``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3).get_rms_dist`` finds a match (an exception counts as
no match); its RMSE is that function's RMS displacement normalised by ``(V/n)^(1/3)``. ``match_rate``
(top-k) is the fraction of test structures with at least one matching sample, and ``rmse`` the mean over
those of the smallest RMSE of their matching samples; ``match_rate_top1`` and ``rmse_top1`` use only the
first sample of each. Unlike DiffCSP, composition validity is not required for a match: a sample has the
test structure's composition, so that requirement would only score the test set against our stricter
oxidation-state check (it would cap the Perov-5 match rate at 90 %). ``composition_validity`` is still
reported.

De novo generation (:func:`evaluate_denovo`): validity fractions; coverage (COV-R, COV-P) as in CDVAE with
*our own fingerprints* (see :func:`composition_fingerprints`, :func:`structure_fingerprints`) and cutoffs
(``STRUCT_CUTOFF``, ``COMP_CUTOFF``). CDVAE uses CrystalNN site fingerprints and standardised Magpie
composition features, with cutoffs 0.4/10 (MP-20) or 0.2/4 (Perov-5, Carbon-24): our coverage numbers are
**not** comparable with published ones. Wasserstein distances of density (g/cm³) and of the number of
distinct elements between the valid generated structures and the test set, as CDVAE.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from atomdiff.diffusion.crystal import DEFAULT_CFG_SCALE, CrystalDiffusion
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import MAX_Z
from atomdiff.structure.io import load_structures_npz, read_npz_key, save_structures_npz
from atomdiff.structure.neighbors import neighbor_list
from atomdiff.structure.structure import Structure
from atomdiff.tasks.generate import chunk_seed, repulsion_guidance, sample_structures

MIN_DISTANCE = 0.5  # Å, structural validity
MIN_VOLUME = 0.1  # Å³, structural validity
MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}

# Structural fingerprint: Gaussian-smeared pair-distance histogram (per atom, unit L2 norm).
FP_R_MAX = 6.0  # Å
FP_BIN = 0.1  # Å, spacing of the grid of bin centres
FP_WIDTH = 0.2  # Å, standard deviation of each distance's Gaussian
# Cutoffs on Euclidean fingerprint distances. STRUCT_CUTOFF 0.15: the median distance of a structure to
# itself with 0.1 Å Gaussian noise on every atom is 0.11 (Perov-5) and 0.05 (Carbon-24); the median distance
# between two different test structures is 0.48 (Perov-5) and 0.20 (Carbon-24). COMP_CUTOFF 0.1: the same
# composition up to one atom in about fifteen (moving one atom of n to another element changes it by √2/n).
STRUCT_CUTOFF = 0.15
COMP_CUTOFF = 0.1

Progress = Callable[[float, float], None]


# --- validity ------------------------------------------------------------------------------------------------
def structurally_valid(structure: Structure) -> bool:
    """Shortest interatomic distance > 0.5 Å and volume ≥ 0.1 Å³."""
    return structure.volume >= MIN_VOLUME and min_distance(structure) > MIN_DISTANCE


@functools.lru_cache(maxsize=65536)
def _charge_neutral(reduced: tuple[tuple[int, int], ...]) -> bool:
    from pymatgen.core import Composition, Element

    elements = [Element.from_Z(z) for z, _ in reduced]
    if len(elements) == 1 or all(e.is_metal for e in elements):
        return True
    return len(Composition({e: k for e, (_, k) in zip(elements, reduced, strict=True)}).oxi_state_guesses()) > 0


def composition_valid(numbers: Sequence[int] | np.ndarray) -> bool:
    """SMACT-like charge neutrality of a cell's atomic numbers (see the module docstring)."""
    counts = Counter(int(z) for z in numbers)
    if not counts:
        return False
    g = math.gcd(*counts.values())
    return _charge_neutral(tuple(sorted((z, c // g) for z, c in counts.items())))


# --- structure prediction -----------------------------------------------------------------------------------
@dataclasses.dataclass
class MatchScores:
    """Match rates (fractions of test structures) and mean RMSEs (normalised; None without a match)."""

    match_rate: float
    match_rate_top1: float
    rmse: float | None
    rmse_top1: float | None


def make_matcher():
    """pymatgen ``StructureMatcher`` with DiffCSP's tolerances."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_TOLERANCES)


def rms_distances(matcher, test: Structure, samples: Sequence[Structure], valid: Sequence[bool]) -> list[float | None]:
    """The matcher's normalised RMS distance of each sample to ``test``; None for no match or invalid."""
    reference = test.to_pymatgen()
    out: list[float | None] = []
    for sample, ok in zip(samples, valid, strict=True):
        rms = None
        if ok:
            try:
                result = matcher.get_rms_dist(sample.to_pymatgen(), reference)
            except Exception:  # pymatgen fails on some degenerate cells; DiffCSP counts that as no match
                result = None
            rms = None if result is None else float(result[0])
        out.append(rms)
    return out


def summarise_matches(rms: Sequence[Sequence[float | None]]) -> MatchScores:
    """Top-k and top-1 match rates and RMSEs from the per-sample RMS distances of each test structure."""
    if not rms:
        raise InputError("no test structure to score")
    best = [min((r for r in row if r is not None), default=None) for row in rms]
    first = [row[0] if row else None for row in rms]

    def mean(values: list[float | None]) -> float | None:
        hits = [v for v in values if v is not None]
        return float(np.mean(hits)) if hits else None

    n = len(rms)
    return MatchScores(
        match_rate=sum(b is not None for b in best) / n,
        match_rate_top1=sum(f is not None for f in first) / n,
        rmse=mean(best),
        rmse_top1=mean(first),
    )


def match_scores(
    tests: Sequence[Structure],
    samples: Sequence[Sequence[Structure]],
    valid: Sequence[Sequence[bool]] | None = None,
    progress: Progress | None = None,
) -> MatchScores:
    """Score ``samples[i]`` (the k samples for ``tests[i]``); only samples with ``valid`` true can match
    (default: the structurally valid ones). ``progress``: called with ``(test structures done, in all)``."""
    matcher = make_matcher()
    if valid is None:
        valid = [[structurally_valid(s) for s in group] for group in samples]
    rms = []
    for i, (t, g, v) in enumerate(zip(tests, samples, valid, strict=True)):
        rms.append(rms_distances(matcher, t, g, v))
        if progress is not None:
            progress(i + 1, len(tests))
    return summarise_matches(rms)


def sample_csp(
    model: CrystalDiffusion,
    tests: Sequence[Structure],
    samples: int = 20,
    *,
    steps: int = 200,
    sampler: str = "pc",
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
    patterns: str | None = None,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    repulsion: float = 0.0,
) -> list[list[Structure]]:
    """``samples`` structures with the exact atoms of each test structure (the sampling half of
    :func:`evaluate_csp`, whose arguments these are); no pymatgen needed, so it runs where only torch is.

    Test structures are grouped so that each call of ``model.sample`` holds about ``batch_size`` structures
    (at least one test structure's ``samples``); call ``k`` uses :func:`chunk_seed` ``(seed, k)``.
    """
    if not tests:
        raise InputError("no test structure to evaluate")
    if samples < 1 or batch_size < 1:
        raise InputError(f"samples and batch size must be positive, got {samples} and {batch_size}")
    per_call = max(1, batch_size // samples)
    n = len(tests)
    groups: list[list[Structure]] = []
    conditions = _pattern_conditions(model, tests, patterns, seed)
    guide = repulsion_guidance(repulsion)
    for k, start in enumerate(range(0, n, per_call)):
        chunk = tests[start : start + per_call]
        callback = None
        if progress is not None:

            def callback(step: int, total: int, done: int = start, size: int = len(chunk)) -> None:
                progress(done + size * step / (total + 1), n)

        numbers = [t.numbers for t in chunk for _ in range(samples)]
        condition = None
        if conditions is not None:
            condition = conditions[start : start + len(chunk)].repeat_interleave(samples, 0)
        out = model.sample(
            len(numbers),
            steps=steps,
            sampler=sampler,
            seed=chunk_seed(seed, k),
            numbers=numbers,
            progress=callback,
            condition=condition,
            cfg_scale=cfg_scale if condition is not None else 0.0,
            guidance=guide,
        )
        groups.extend(out[j * samples : (j + 1) * samples] for j in range(len(chunk)))
        if progress is not None:
            progress(start + len(chunk), n)
    return groups


def score_csp(
    tests: Sequence[Structure], groups: Sequence[Sequence[Structure]], progress: Progress | None = None
) -> dict[str, Any]:
    """Match rates, RMSEs and validity of ``groups[i]``, the samples for ``tests[i]`` (pymatgen's matcher).

    Returns:
        ``match_rate``, ``match_rate_top1``, ``rmse``, ``rmse_top1``, ``structural_validity``,
        ``composition_validity`` (fractions over all samples), ``n_structures`` and ``samples``.
    """
    if len(groups) != len(tests) or not tests:
        raise InputError(f"{len(groups)} groups of samples for {len(tests)} test structures")
    struct_ok = [[structurally_valid(s) for s in group] for group in groups]
    scores = match_scores(tests, groups, struct_ok, progress)
    n_samples = sum(len(group) for group in groups)
    n_comp = sum(composition_valid(s.numbers) for group in groups for s in group)
    return {
        **dataclasses.asdict(scores),
        "structural_validity": sum(map(sum, struct_ok)) / n_samples,
        "composition_validity": n_comp / n_samples,
        "n_structures": len(tests),
        "samples": n_samples // len(tests),
    }


def save_csp_samples(groups: Sequence[Sequence[Structure]], file: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Store the samples of :func:`sample_csp` (test structure ``i``'s in order) with the settings that made
    them (JSON in the file's key), to be scored later by :func:`load_csp_samples` and :func:`score_csp`."""
    flat = [
        s.replace(info={**s.info, "test_index": i, "sample": j}) for i, g in enumerate(groups) for j, s in enumerate(g)
    ]
    save_structures_npz(flat, file, json.dumps({**settings, "n_structures": len(groups)}))


def load_csp_samples(
    file: str | os.PathLike, tests: Sequence[Structure]
) -> tuple[list[list[Structure]], dict[str, Any]]:
    """The groups and settings stored by :func:`save_csp_samples`, checked against ``tests``: as many test
    structures, and every sample with its test structure's atoms (else the file belongs to other data or
    another ``--limit``)."""
    structures = load_structures_npz(file)
    try:
        settings = json.loads(read_npz_key(file) or "")
        n, k = int(settings["n_structures"]), int(settings["samples"])
    except (ValueError, KeyError, TypeError):
        structures = None
    if structures is None:
        raise InputError("not a file of stored CSP samples (atomdiff evaluate csp --save-samples)", path=str(file))
    if n != len(tests) or len(structures) != n * k:
        raise InputError(
            f"holds {len(structures)} samples for {n} test structures; the data give {len(tests)} "
            "(use the --data and --limit the samples were made with)",
            path=str(file),
        )
    groups = [structures[i * k : (i + 1) * k] for i in range(n)]
    for i, (test, group) in enumerate(zip(tests, groups, strict=True)):
        want = sorted(test.numbers.tolist())
        if any(sorted(s.numbers.tolist()) != want for s in group):
            raise InputError(
                f"the samples of test structure {i} do not have its atoms ({test.formula}): "
                "the file was made from other data",
                path=str(file),
            )
    return groups, settings


def evaluate_csp(
    model: CrystalDiffusion,
    tests: Sequence[Structure],
    samples: int = 20,
    *,
    steps: int = 200,
    sampler: str = "pc",
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
    patterns: str | None = None,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    save_samples: str | os.PathLike | None = None,
    saved_settings: dict[str, Any] | None = None,
    score: bool = True,
    repulsion: float = 0.0,
) -> dict[str, Any]:
    """Crystal structure prediction benchmark (see the module docstring): :func:`sample_csp` then
    :func:`score_csp`.

    Args:
        progress: called with ``(work done, work in all)``: sampling, then matching, each counting the test
            structures (fractionally during sampling).
        patterns: for a pattern-conditioned model: ``"matched"`` conditions the samples of each test structure on
            a simulated powder pattern of it, with an instrument drawn at random as in training
            (:mod:`atomdiff.data.generate.patterns`, seeded by ``seed``); ``"mismatched"`` on the pattern of the
            next test structure (a control: the pattern must drive the answer); ``None``: unconditioned.
        cfg_scale: classifier-free guidance scale for ``patterns``.
        repulsion: strength of :class:`~atomdiff.diffusion.guidance.RepulsionGuidance` while sampling (0: off).
        save_samples: also store the samples there (:func:`save_csp_samples`), with the sampling settings and
            ``saved_settings`` (the model's name, say), before scoring them.
        score: False: only sample (and store); the result has the settings and ``sample_time_s`` alone.

    Returns:
        :func:`score_csp`'s entries and ``steps``, ``sampler``, ``seed``, ``batch_size``, ``patterns``,
        ``cfg_scale``, ``sample_time_s``, ``wall_time_s``.
    """
    t0 = time.perf_counter()
    sample_progress = score_progress = None
    if progress is not None:

        def sample_progress(done: float, total: float) -> None:
            progress(done, 2 * total if score else total)

        def score_progress(done: float, total: float) -> None:
            progress(total + done, 2 * total)

    groups = sample_csp(
        model,
        tests,
        samples,
        steps=steps,
        sampler=sampler,
        seed=seed,
        batch_size=batch_size,
        progress=sample_progress,
        patterns=patterns,
        cfg_scale=cfg_scale,
        repulsion=repulsion,
    )
    settings = csp_settings(samples, steps, sampler, seed, batch_size, patterns, cfg_scale)
    settings["repulsion"] = repulsion
    settings["sample_time_s"] = time.perf_counter() - t0
    if save_samples is not None:
        save_csp_samples(groups, save_samples, {**settings, **(saved_settings or {})})
    if not score:
        return settings
    return {**score_csp(tests, groups, score_progress), **settings, "wall_time_s": time.perf_counter() - t0}


def csp_settings(
    samples: int, steps: int, sampler: str, seed: int, batch_size: int, patterns: str | None, cfg_scale: float
) -> dict[str, Any]:
    """The sampling settings a CSP result (and a file of stored samples) records."""
    return {
        "samples": samples,
        "steps": steps,
        "sampler": sampler,
        "seed": seed,
        "batch_size": batch_size,
        "patterns": patterns,
        "cfg_scale": cfg_scale if patterns else None,
    }


def _pattern_conditions(
    model: CrystalDiffusion, tests: Sequence[Structure], patterns: str | None, seed: int
) -> torch.Tensor | None:
    """Encoded simulated patterns of ``tests`` (rolled by one for ``"mismatched"``), or ``None``."""
    if patterns is None:
        return None
    if patterns not in ("matched", "mismatched"):
        raise InputError(f"patterns must be 'matched' or 'mismatched', got {patterns!r}")
    if not model.conditioned:
        raise InputError("--patterns needs a pattern-conditioned model (this one has no pattern encoder)")
    from atomdiff.data.generate.patterns import simulate_training_patterns

    encoder = model.net.pattern_encoder.config
    feats, rads = simulate_training_patterns(tests, 1, encoder, seed=seed + 7919)
    if patterns == "mismatched":
        feats, rads = np.roll(feats, 1, axis=0), np.roll(rads, 1, axis=0)
    with torch.no_grad():
        return model.encode_patterns(torch.as_tensor(feats[:, 0]), torch.as_tensor(rads[:, 0])).double()


# --- de novo generation -------------------------------------------------------------------------------------
def composition_fingerprints(structures: Sequence[Structure]) -> np.ndarray:
    """Element fractions, shape ``(n_structures, 118)`` (column ``Z - 1``), each row summing to 1."""
    out = np.zeros((len(structures), MAX_Z))
    for k, s in enumerate(structures):
        np.add.at(out[k], s.numbers - 1, 1.0 / max(len(s), 1))
    return out


def structure_fingerprints(structures: Sequence[Structure], batch: int = 256) -> np.ndarray:
    """Pair-distance fingerprints, shape ``(n_structures, 60)``.

    Every pair distance ``d < 6 Å`` (periodic images, both directions) adds a Gaussian of standard deviation
    0.2 Å centred on ``d`` to a grid of bin centres 0.05, 0.15, …, 5.95 Å; the sum is divided by the number
    of atoms (an RDF-like count of neighbours per shell) and the row scaled to unit Euclidean norm, so the
    fingerprint describes the shape of the distance distribution up to 6 Å, not the density. A structure
    without any pair within 6 Å, or with a volume below 0.1 Å³, gets a zero row.
    """
    grid = (np.arange(round(FP_R_MAX / FP_BIN)) + 0.5) * FP_BIN
    out = np.zeros((len(structures), len(grid)))
    usable = [k for k, s in enumerate(structures) if len(s) and s.volume >= MIN_VOLUME]
    for start in range(0, len(usable), batch):
        index = usable[start : start + batch]
        sb = StructureBatch.from_structures([structures[k] for k in index], dtype=torch.float64)
        nb = neighbor_list(sb, FP_R_MAX)
        with torch.no_grad():
            d = nb.distances(sb).numpy()
        b = nb.batch_idx.numpy()
        keep = d < FP_R_MAX
        rows = np.zeros((len(index), len(grid)))
        np.add.at(rows, b[keep], np.exp(-0.5 * ((d[keep, None] - grid[None, :]) / FP_WIDTH) ** 2))
        out[index] = rows / np.array([len(structures[k]) for k in index])[:, None]
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1.0)


def coverage(
    generated: Sequence[Structure],
    reference: Sequence[Structure],
    struct_cutoff: float = STRUCT_CUTOFF,
    comp_cutoff: float = COMP_CUTOFF,
) -> dict[str, float]:
    """CDVAE's coverage with our fingerprints.

    ``coverage_recall``: fraction of reference structures whose nearest generated structure in the
    structural fingerprint is within ``struct_cutoff`` *and* whose nearest in the composition fingerprint is
    within ``comp_cutoff`` (the two nearest taken separately, as CDVAE). ``coverage_precision``: the same for
    generated structures against the reference set, over all generated structures.
    """
    from scipy.spatial.distance import cdist

    if not generated or not reference:
        raise InputError("coverage needs generated and reference structures")
    struct = cdist(structure_fingerprints(generated), structure_fingerprints(reference))
    comp = cdist(composition_fingerprints(generated), composition_fingerprints(reference))
    recall = (struct.min(0) <= struct_cutoff) & (comp.min(0) <= comp_cutoff)
    precision = (struct.min(1) <= struct_cutoff) & (comp.min(1) <= comp_cutoff)
    return {"coverage_recall": float(recall.mean()), "coverage_precision": float(precision.mean())}


def evaluate_denovo(
    model: CrystalDiffusion,
    tests: Sequence[Structure],
    n: int = 1000,
    *,
    steps: int = 200,
    sampler: str = "pc",
    seed: int = 0,
    batch_size: int = 256,
    struct_cutoff: float = STRUCT_CUTOFF,
    comp_cutoff: float = COMP_CUTOFF,
    progress: Progress | None = None,
    repulsion: float = 0.0,
) -> dict[str, Any]:
    """De novo generation benchmark: ``n`` unconditional samples against ``tests`` (see the module docstring).

    Args:
        progress: called with ``(denoising steps done, steps in all)`` over every sampling call.

    Returns:
        ``structural_validity``, ``composition_validity``, ``validity`` (both), ``coverage_recall``,
        ``coverage_precision``, ``wdist_density``, ``wdist_num_elements`` (None without a valid sample),
        ``n_generated``, ``n_valid``, ``n_test``, ``struct_cutoff``, ``comp_cutoff``, ``steps``, ``sampler``,
        ``seed``, ``batch_size``, ``wall_time_s``, ``fingerprints`` (a note).
    """
    from scipy.stats import wasserstein_distance

    if not tests:
        raise InputError("no test structure to compare with")
    t0 = time.perf_counter()
    generated = sample_structures(
        model,
        n,
        steps=steps,
        sampler=sampler,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        repulsion=repulsion,
    )
    struct_ok = np.array([structurally_valid(s) for s in generated])
    comp_ok = np.array([composition_valid(s.numbers) for s in generated])
    valid = [s for s, ok in zip(generated, struct_ok & comp_ok, strict=True) if ok]

    def wdist(values: Callable[[Structure], float]) -> float | None:
        if not valid:
            return None
        return float(wasserstein_distance([values(s) for s in valid], [values(s) for s in tests]))

    return {
        "structural_validity": float(struct_ok.mean()),
        "composition_validity": float(comp_ok.mean()),
        "validity": float((struct_ok & comp_ok).mean()),
        **coverage(generated, tests, struct_cutoff, comp_cutoff),
        "wdist_density": wdist(lambda s: s.density),
        "wdist_num_elements": wdist(lambda s: len(set(s.numbers.tolist()))),
        "n_generated": len(generated),
        "n_valid": len(valid),
        "n_test": len(tests),
        "struct_cutoff": struct_cutoff,
        "comp_cutoff": comp_cutoff,
        "steps": steps,
        "sampler": sampler,
        "seed": seed,
        "batch_size": batch_size,
        "repulsion": repulsion,
        "wall_time_s": time.perf_counter() - t0,
        "fingerprints": (
            "atomdiff's own: element fractions and a smeared pair-distance histogram up to 6 Å; "
            "not comparable with CDVAE's CrystalNN/Magpie coverage"
        ),
    }


def write_result(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a result dict as indented JSON (the file appears only once complete)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
