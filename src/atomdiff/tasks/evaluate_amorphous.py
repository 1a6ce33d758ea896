"""Benchmark amorphous generation against reference cells: guided vs unguided, steering, density trend.

Three experiments, each a function returning JSON-ready results:

* :func:`evaluate_test_cells` — for each labelled test cell, generate ``samples`` cells in its cell (same atom
  count and density) with its mean XANES as target and without guidance, and compare each with the reference:
  sp/sp2/sp3 fractions (another element than carbon: fractions of 3-, 4- and 5-fold atoms, the 4-fold one as
  the headline, see :func:`headline_fraction`), RDF distance (RMS of g(r) − g_ref(r) on 0–8 Å, 0.05 Å bins),
  bond-angle distance (RMS of the angle densities, 2° bins), and the spectrum misfit through the surrogate
  (relative mean squared difference to the target; the reference cell's own misfit through the surrogate is
  reported as the floor).
* :func:`steering` — targets interpolated between two reference spectra (graphite-like and diamond-like) at
  one density; reports the sp3 fraction per target and whether it moves monotonically.
* :func:`density_trend` — unconditional samples at the densities of a reference set (e.g. the C-GAP-17 cells)
  and their sp3 fraction next to the reference's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from atomdiff.data.spectra import SpectrumLabelled
from atomdiff.diffusion.amorphous import AmorphousDiffusion, SampleOptions
from atomdiff.diffusion.guidance.spectra import SpectralGuidance, SpectrumTerm, relative_misfit
from atomdiff.errors import InputError
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.physics import descriptors
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure
from atomdiff.tasks.amorphous import XANES_START

RDF_MAX, RDF_STEP, ANGLE_BINS = 8.0, 0.05, 90
Progress = Callable[[str, int, int], None]


STEER_SAMPLES = 20
"""Samples per target of the steering experiment. A 216-atom a-C cell's sp3 fraction varies by 0.02–0.05 from
sample to sample, more than the step between neighbouring targets (~0.01–0.04): with 5 samples none of the
settings tried in session 26 gave a monotonic series; with 20 (standard error ~0.008) strength 2 did for seeds
0 and 1, and for seed 2 up to a flat last step (0.351 → 0.350; docs/amorphous.md)."""

STEER_GUIDANCE = 2.0
"""Guidance strength of the steering experiment: with 20 samples, strength 1 moved sp3 from 0.297 to 0.341 with a
dip (0.345 → 0.332); strength 2 moved it further (+0.06–0.08), monotonically for two of three seeds and with a
flat last step for the third (docs/amorphous.md "Steering with 20 samples at strength 2")."""


def headline_fraction(element: int) -> str:
    """The fraction whose error sums up a cell: sp3 for carbon, the 4-fold (tetrahedral network) fraction else."""
    return "sp3" if element == 6 else "cn4"


def structure_metrics(structure: Structure) -> dict[str, float]:
    """Coordination fractions (:func:`~atomdiff.physics.descriptors.network_fractions`), density and shortest
    distance of a one-element cell."""
    return {
        **descriptors.network_fractions(structure),
        "density": structure.density,
        "min_distance": descriptors.min_distance(structure),
    }


def _rdf(s: Structure) -> np.ndarray:
    return descriptors.rdf(s, RDF_MAX, RDF_STEP)[1]


def _adf(s: Structure) -> np.ndarray:
    z = int(s.numbers[0])
    return descriptors.bond_angle_distribution(s, descriptors.bond_cutoff(z, z), ANGLE_BINS)[1]


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def spectrum_misfit(surrogate: XanesSurrogate, structures: Sequence[Structure], target: np.ndarray) -> np.ndarray:
    """Relative mean squared difference of the surrogate spectra of ``structures`` to ``target``."""
    with torch.no_grad():
        y = surrogate(StructureBatch.from_structures(list(structures), dtype=torch.float32)).double()
    return relative_misfit(y, torch.as_tensor(target, dtype=torch.float64)).numpy()


def rdf_distance(a: Structure, b: Structure) -> float:
    """RMS difference of the g(r) of two cells on 0–8 Å in 0.05 Å bins."""
    return _rms(_rdf(a), _rdf(b))


def adf_distance(a: Structure, b: Structure) -> float:
    """RMS difference of the bond-angle densities of two cells (2° bins, bonds within the element's cutoff)."""
    return _rms(_adf(a), _adf(b))


def sample_cells(
    model: AmorphousDiffusion,
    template: Structure,
    n: int,
    options: SampleOptions,
    seed: int,
    guidance: SpectralGuidance | None,
) -> list[Structure]:
    batch = StructureBatch.from_structures([template] * n, dtype=torch.float32)
    return model.generate(batch, options, torch.Generator().manual_seed(seed), guidance)


def xanes_guidance(
    surrogate: XanesSurrogate, target: np.ndarray, strength: float, mode: str, sigma_start: float | None = XANES_START
) -> SpectralGuidance:
    return SpectralGuidance([SpectrumTerm("xanes", surrogate, torch.as_tensor(target))], strength, mode, sigma_start)


def evaluate_test_cells(
    model: AmorphousDiffusion,
    surrogate: XanesSurrogate,
    cells: Sequence[SpectrumLabelled],
    samples: int = 5,
    options: SampleOptions | None = None,
    strength: float = 1.0,
    mode: str = "tweedie",
    seed: int = 0,
    progress: Progress | None = None,
    sigma_start: float | None = XANES_START,
) -> dict[str, Any]:
    """Guided and unguided samples in each test cell, compared with the cell (see the module docstring).

    Restarts in ``options`` apply to the guided samples only: the unguided ones are the prior's own samples,
    which a restart (re-noise, denoise again without a target) does not make more like the cell.
    """
    options = options or SampleOptions()
    plain = dataclasses.replace(options, restarts=0)
    rows = []
    z = int(cells[0].structure.numbers[0]) if cells else 6
    names, head = descriptors.fraction_names(z), headline_fraction(z)
    for k, cell in enumerate(cells):
        ref = cell.structure
        target = cell.mean_spectrum
        ref_m = structure_metrics(ref)
        ref_rdf, ref_adf = _rdf(ref), _adf(ref)
        row: dict[str, Any] = {
            "name": cell.name,
            "atoms": len(ref),
            "density": ref.density,
            "reference": ref_m,
            "reference_spectrum_misfit": float(spectrum_misfit(surrogate, [ref], target)[0]),
        }
        template = ref.replace(frac=np.zeros_like(ref.frac))
        for label, guidance in (
            ("guided", xanes_guidance(surrogate, target, strength, mode, sigma_start)),
            ("unguided", None),
        ):
            t0 = time.perf_counter()
            chosen = options if guidance is not None else plain
            out = sample_cells(model, template, samples, chosen, seed + 1000 * k, guidance)
            metrics = [structure_metrics(s) for s in out]
            row[label] = {
                **{name: [m[name] for m in metrics] for name in names},
                f"{head}_error": float(np.mean([abs(m[head] - ref_m[head]) for m in metrics])),
                "rdf_distance": float(np.mean([_rms(_rdf(s), ref_rdf) for s in out])),
                "adf_distance": float(np.mean([_rms(_adf(s), ref_adf) for s in out])),
                "spectrum_misfit": float(np.mean(spectrum_misfit(surrogate, out, target))),
                "min_distance": float(min(m["min_distance"] for m in metrics)),
                "seconds": time.perf_counter() - t0,
            }
            if progress is not None:
                progress("test cells", k + 1, len(cells))
        rows.append(row)
    summary = {}
    for label in ("guided", "unguided"):
        for key in (f"{head}_error", "rdf_distance", "adf_distance", "spectrum_misfit"):
            summary[f"{label}_{key}"] = float(np.mean([r[label][key] for r in rows]))
    summary["reference_spectrum_misfit"] = float(np.mean([r["reference_spectrum_misfit"] for r in rows]))
    return {"cells": rows, "summary": summary}


def steering(
    model: AmorphousDiffusion,
    surrogate: XanesSurrogate,
    low: np.ndarray,
    high: np.ndarray,
    template: Structure,
    fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    samples: int = STEER_SAMPLES,
    options: SampleOptions | None = None,
    strength: float = STEER_GUIDANCE,
    mode: str = "tweedie",
    seed: int = 0,
    progress: Progress | None = None,
    sigma_start: float | None = XANES_START,
) -> dict[str, Any]:
    """Headline fraction (sp3 for carbon, :func:`headline_fraction`) of samples guided by ``(1 − f)·low +
    f·high`` for each ``f``, with the trend's statistics (:func:`steering_statistics`), and of as many unguided
    samples of the same seed (``unguided``: where the prior itself stands at this density, no restarts).

    Both ends are first rescaled to the surrogate's mean area (:meth:`XanesSurrogate.match_area`).
    """
    options = options or SampleOptions()
    low, high = surrogate.match_area(low), surrogate.match_area(high)
    head = headline_fraction(int(template.numbers[0]))
    rows = []
    for k, f in enumerate(fractions):
        target = (1.0 - f) * low + f * high
        guidance = xanes_guidance(surrogate, target, strength, mode, sigma_start)
        out = sample_cells(model, template, samples, options, seed, guidance)
        values = [structure_metrics(s)[head] for s in out]
        misfit = float(np.mean(spectrum_misfit(surrogate, out, target)))
        rows.append({"fraction_high": float(f), **_fraction_row(values, head), "spectrum_misfit": misfit})
        if progress is not None:
            progress("steering", k + 1, len(fractions) + 1)
    out = sample_cells(model, template, samples, dataclasses.replace(options, restarts=0), seed, None)
    unguided = _fraction_row([structure_metrics(s)[head] for s in out], head)
    if progress is not None:
        progress("steering", len(fractions) + 1, len(fractions) + 1)
    result = {"density": template.density, "atoms": len(template), "fraction": head, "targets": rows}
    return result | {"unguided": unguided} | steering_statistics(rows, head)


def _fraction_row(values: Sequence[float], head: str) -> dict[str, Any]:
    return {f"{head}_mean": float(np.mean(values)), f"{head}_std": float(np.std(values)), head: list(values)}


def steering_statistics(rows: Sequence[dict[str, Any]], head: str = "sp3") -> dict[str, Any]:
    """How the headline fraction moves with the target, from each target's samples (``rows[k][head]``, targets in
    order of ``fraction_high``).

    ``monotonic``: the sample means never fall from one target to the next. Each 216-atom cell's sp3 scatters by
    0.02–0.05, so where the true curve flattens (near the prior's limit at the diamond-like end) a mean can fall
    by chance; the rest says how far the trend is from noise: for each step the difference of the means with its
    standard error (Welch's, samples of different targets counted as independent: the steering samples of one
    seed share their noise, but their sp3 correlate by −0.3 to 0.4, ~0.1 on average over seeds 0–4),
    ``significant_fall`` where one falls by more than 2 standard errors, and Spearman's rank correlation of every
    sample's fraction with its target's position (``rank_correlation``, ``rank_p_value``: two-sided; ``None``
    where every sample has one value).
    """
    from scipy.stats import spearmanr

    samples = [np.asarray(r[head], dtype=float) for r in rows]
    means = [float(v.mean()) for v in samples]
    steps = []
    for a, b in zip(samples, samples[1:], strict=False):
        se = float(np.sqrt(_variance(a) / len(a) + _variance(b) / len(b)))
        difference = float(b.mean() - a.mean())
        steps.append({"difference": difference, "standard_error": se, "significant_fall": difference < -2.0 * se})
    position = np.concatenate([np.full(len(v), k) for k, v in enumerate(samples)])
    values = np.concatenate(samples) if samples else np.zeros(0)
    defined = len(set(position.tolist())) > 1 and np.ptp(values) > 0  # else the rank correlation is undefined
    rho, p_value = spearmanr(position, values) if defined else (None, None)
    return {
        "monotonic": bool(all(b >= a for a, b in zip(means, means[1:], strict=False))),
        "steps": steps,
        "significant_fall": bool(any(s["significant_fall"] for s in steps)),
        "rank_correlation": None if rho is None else float(rho),
        "rank_p_value": None if p_value is None else float(p_value),
    }


def pool_steering(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several steering results (runs with other seeds, same targets, density and atom count) as one, each
    target's samples put together, with :func:`steering_statistics` of the pool."""
    if not results:
        raise InputError("nothing to pool: give at least one steering result")
    first = results[0]

    def signature(r: dict[str, Any]) -> tuple:
        return r["density"], r["atoms"], r["fraction"], [t["fraction_high"] for t in r["targets"]]

    for r in results[1:]:
        if signature(r) != signature(first):
            raise InputError(
                "steering results to pool must share density, atom count, fraction and targets; got "
                f"{signature(first)} and {signature(r)}"
            )
    head = first["fraction"]
    rows = []
    for k, target in enumerate(first["targets"]):
        values = [v for r in results for v in r["targets"][k][head]]
        misfits = [r["targets"][k]["spectrum_misfit"] for r in results]
        rows.append(
            {
                "fraction_high": target["fraction_high"],
                **_fraction_row(values, head),
                "spectrum_misfit": float(np.mean(misfits)),
            }
        )
    pooled = {"density": first["density"], "atoms": first["atoms"], "fraction": head, "targets": rows}
    if all("unguided" in r for r in results):  # runs before session 38 have no unguided samples
        pooled["unguided"] = _fraction_row([v for r in results for v in r["unguided"][head]], head)
    pooled["runs"] = len(results)
    pooled["runs_monotonic"] = sum(bool(steering_statistics(r["targets"], head)["monotonic"]) for r in results)
    return pooled | steering_statistics(rows, head)


def _variance(values: np.ndarray) -> float:
    return float(values.var(ddof=1)) if len(values) > 1 else 0.0


def density_trend(
    model: AmorphousDiffusion,
    references: Sequence[Structure],
    samples: int = 3,
    options: SampleOptions | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Unconditional samples in each reference cell (its density and atom count) and their headline fraction
    (sp3 for carbon, :func:`headline_fraction`). Restarts in ``options`` are not applied (they are for guided
    samples, see :func:`evaluate_test_cells`)."""
    options = dataclasses.replace(options or SampleOptions(), restarts=0)
    head = headline_fraction(int(references[0].numbers[0])) if references else "sp3"
    rows = []
    for k, ref in enumerate(references):
        out = sample_cells(model, ref.replace(frac=np.zeros_like(ref.frac)), samples, options, seed + k, None)
        values = [structure_metrics(s)[head] for s in out]
        rows.append(
            {
                "density": ref.density,
                f"reference_{head}": structure_metrics(ref)[head],
                f"{head}_mean": float(np.mean(values)),
                f"{head}_std": float(np.std(values)),
                "label": str(ref.info.get("label", k)),
            }
        )
        if progress is not None:
            progress("densities", k + 1, len(references))
    err = [abs(r[f"{head}_mean"] - r[f"reference_{head}"]) for r in rows]
    return {"points": rows, "fraction": head, f"mean_abs_{head}_difference": float(np.mean(err)) if err else None}


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination over all points, against the per-bin mean of ``y``."""
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def surrogate_scores(surrogate: XanesSurrogate, items: Sequence[SpectrumLabelled]) -> dict[str, Any]:
    """Per-atom and per-structure (mean over absorbers) MSE and R² of the surrogate on labelled structures."""
    per_atom_true, per_atom_pred, mean_true, mean_pred = [], [], [], []
    with torch.no_grad():
        for item in items:
            batch = StructureBatch.from_structures([item.structure], dtype=torch.float32)
            idx, spectra = surrogate.per_atom(batch)
            pred = spectra.double().numpy()
            order = {int(a): k for k, a in enumerate(idx)}
            pred = pred[[order[int(a)] for a in item.absorbers]]
            per_atom_true.append(item.spectra)
            per_atom_pred.append(pred)
            mean_true.append(item.spectra.mean(0))
            mean_pred.append(pred.mean(0))
    ya, pa = np.concatenate(per_atom_true), np.concatenate(per_atom_pred)
    ys, ps = np.array(mean_true), np.array(mean_pred)
    return {
        "structures": len(items),
        "atoms": int(ya.shape[0]),
        "per_atom_mse": float(((ya - pa) ** 2).mean()),
        "per_atom_r2": _r2(ya, pa),
        "per_structure_mse": float(((ys - ps) ** 2).mean()),
        "per_structure_r2": _r2(ys, ps) if len(items) > 1 else None,
        "per_structure": [
            {"name": it.name, "density": it.structure.density, "mse": float(((t - p) ** 2).mean())}
            for it, t, p in zip(items, ys, ps, strict=True)
        ],
    }
