"""Quantitative phase analysis: which phases a powder pattern needs, refined jointly, with weight fractions.

Candidate phases are the user's known structures (CIFs) and, for each composition the user names, the best
structure that :mod:`atomdiff.tasks.solve` generates and refines for it alone — against the pattern less the
peaks of the known phases refined first (:func:`residual_pattern`), or, with none known, of the first (main)
generated phase (:func:`generated_phases`); with the element list alone the compositions come from the model's
training cells (:func:`search_compositions`). All phases are then refined together against the pattern (one
scale each, common background and zero shift; each phase its own
lattice, peak widths and displacement parameters; each lattice only as its space group allows, found within
``symprec``, so that a minor phase's few peaks do not have to fix six strains; the coordinates of the main
phases, those above ``positions_above`` of the weight, in their space groups too, the minor phases' fixed).
Weight fractions follow Hill & Howard (1987):

    w_p = S_p (Z M V)_p / Σ_q S_q (Z M V)_q

with S the Rietveld scale of the phase, Z M the mass of its cell and V the cell volume. Their standard
uncertainties propagate the covariance of the scale factors from the final linear least squares (scaled by
the reduced χ²); correlations with the non-linear parameters are not included, so they are lower bounds.
A phase is not reported when the data do not need it. A phase with a negative scale, or a fraction below
``min_fraction``, is dropped and the rest refined again; then, by backward elimination, the phase whose removal
raises χ² least (relative to the fit's reduced χ², so that a fit that is not at its noise level does not
count its misfit as evidence) is dropped while that rise is below its Bayesian-information-criterion penalty,
k ln n for its k parameters (scale, lattice, widths, B, ...) and the n points of the pattern. The penalty is
what a generated phase has to beat: each brings ~10 parameters, and wrong structures of the given elements
can take up a few per cent of a pattern's intensity each (measured: 3 σ kept four wrong phases of 1–3 wt%).
Every removal is judged by refining without the phase, not by its fraction's uncertainty: in a 7-phase fit of
kesterite + 5 wt% ZnS a wrong Cu2S held 1.8 ± 0.3 wt% (6 σ) and the fit without it was *better* (the joint
least squares had stalled), so a fraction-based rule drops the wrong phases in the wrong order.
``selection="sigma"`` keeps the earlier rule (the weakest phase dropped while below 3 σ of its fraction).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.diffusion.constraints import parse_formula
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.agreement import counting_weights
from atomdiff.physics.diffraction import PowderDiffractionModel, peak_table
from atomdiff.physics.profile import Profile
from atomdiff.physics.target import PatternTarget
from atomdiff.refine import Refinement, RefinementStage, RietveldRefiner
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import atomic_masses, chemical_symbols
from atomdiff.structure.structure import Structure
from atomdiff.tasks.solve import LATTICE_COLUMNS, build_target, lattice_row, symmetrised_cif, symmetry_of

#: joint refinement of known phases (their cells are close): peak shapes and zero, then lattices, then B
MIXTURE_STAGES = (
    RefinementStage(("zero_shift", "profile"), extra_fwhm=0.0, iterations=4),
    RefinementStage(("lattice", "zero_shift", "profile"), extra_fwhm=0.0, iterations=4),
    RefinementStage(("lattice", "zero_shift", "profile", "b_iso"), extra_fwhm=0.0, iterations=3),
)
#: then, for the main phases (``analyse_phases(positions_above=...)``), their coordinates as well
POSITION_STAGE = RefinementStage(
    ("lattice", "zero_shift", "profile", "b_iso", "positions"), extra_fwhm=0.0, iterations=4
)
PHASE_COLUMNS = (
    "phase",
    "formula",
    "space_group",
    "weight_percent",
    "sigma_percent",
    "own_lines_percent",
    "scale",
    *LATTICE_COLUMNS,
    "file",
)


@dataclasses.dataclass
class Phase:
    name: str
    refinement: Refinement
    weight_fraction: float
    sigma: float
    space_group: str = ""
    file: str = ""
    y_calc: np.ndarray | None = None  # this phase's contribution on the grid
    own_lines: float = 1.0  # share of its intensity in lines that stand above the other phases' (own_line_shares)
    buried_under: str = ""  # the phase whose lines cover most of its other intensity


#: how a phase the pattern does not need is told apart: ``bic`` (backward elimination by the Bayesian
#: information criterion, the default) or ``sigma`` (the weakest phase dropped while below 3 σ of its fraction)
SELECTIONS = ("bic", "sigma")

#: (Rwp / Rexp)² above which the phases found leave part of the pattern unexplained (a phase missing or wrong)
UNEXPLAINED_GOF = 2.0

#: a phase with less than this share of its intensity in lines of its own is reported as not confirmed
OWN_LINES_MIN = 0.2


@dataclasses.dataclass
class PhaseAnalysis:
    phases: list[Phase]
    dropped: list[tuple[str, str]]  # (name, reason)
    rwp: float
    y_calc: np.ndarray
    background: np.ndarray
    rexp: float | None = None  # what counting noise alone leaves (None for intensities in arbitrary units)

    @property
    def gof(self) -> float | None:
        """Goodness of fit (Rwp / Rexp)²: about 1 when the phases explain the pattern to its noise."""
        return None if not self.rexp else (self.rwp / self.rexp) ** 2

    def warning(self) -> str | None:
        """What a user must know: the phases found do not explain the pattern (the fractions are then biased:
        a missing or wrong phase's intensity goes to the others), or a phase has (almost) no line of its own."""
        notes = []
        if self.gof is not None and self.gof > UNEXPLAINED_GOF:
            notes.append(
                f"the phases found leave the pattern unexplained: Rwp {100 * self.rwp:.2f} % against "
                f"{100 * self.rexp:.2f} % from counting noise ((Rwp/Rexp)² = {self.gof:.1f}); a phase is missing "
                "or its structure is wrong, and the weight fractions are biased"
            )
        for ph in self.phases:
            if ph.own_lines < OWN_LINES_MIN:
                notes.append(
                    f"{ph.name} is not confirmed by this pattern: {100 * (1 - ph.own_lines):.0f} % of its "
                    f"intensity lies in lines of {ph.buried_under}, so its presence and its "
                    f"{100 * ph.weight_fraction:.2f} wt% rest on the intensity ratios of shared lines, which texture, "
                    f"B values or a detail of {ph.buried_under}'s structure also change; check it by another "
                    "measurement (e.g. Raman spectroscopy, or another radiation)"
                )
        return "; ".join(notes) or None


def cell_mass(structure: Structure) -> float:
    """Mass of the cell content (ZM), atomic mass units."""
    return float(sum(atomic_masses[int(z)] for z in structure.numbers))


def hill_howard(scales: np.ndarray, cov: np.ndarray, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
    """Weight fractions and their standard uncertainties from scales ``S`` with covariance ``cov``."""
    c = np.array([cell_mass(s) * s.volume for s in structures])
    m = scales * c
    total = m.sum()
    w = m / total
    jac = (np.diag(c) * total - np.outer(m, c)) / total**2  # ∂w_p/∂S_q
    sigma = np.sqrt(np.clip(np.diag(jac @ cov @ jac.T), 0.0, None))
    return w, sigma


def _phase_model(target: PatternTarget, r: Refinement) -> tuple[PowderDiffractionModel, torch.Tensor]:
    """The target's model with a refined phase's own profile and zero shift, and its atoms' B values."""
    base = target.model
    model = PowderDiffractionModel(
        base.radiation,
        base.wavelength,
        base.x,
        base.axis,
        r.profile,
        r.zero_shift,
        form_factors=base.form_factors,
        neutron_lengths=base.neutron_lengths,
    )
    return model, torch.tensor([r.b_iso.get(chemical_symbols[int(z)], 0.0) for z in r.structure.numbers])


def _phase_patterns(target: PatternTarget, results: Sequence[Refinement]) -> torch.Tensor:
    """Unscaled pattern of each refined phase with its own profile, zero shift and B values; ``(P, n)``."""
    rows = []
    for r in results:
        model, b_iso = _phase_model(target, r)
        with torch.no_grad():
            rows.append(model(StructureBatch.from_structures([r.structure]), b_iso=b_iso).y[0])
    return torch.stack(rows)


def own_line_shares(target: PatternTarget, phases: Sequence[Phase]) -> list[tuple[float, str]]:
    """For each phase, the share of its integrated intensity (in the pattern's range) in reflections where it
    stands above the other phases — at the reflection's position its own calculated intensity exceeds the sum of
    the others' — and the phase whose lines cover most of the rest (``""`` when nothing is covered).

    A phase whose reflections all fall on stronger lines of another phase (sphalerite ZnS or cubic Cu2SnS3 in
    kesterite: kesterite is a superstructure of sphalerite) adds no line of its own; the pattern then tells its
    presence only through intensity ratios, which texture, displacement parameters or a detail of the other
    phase's structure (a site occupancy) also change."""
    x = target.model.x.numpy()
    shares = []
    for p, ph in enumerate(phases):
        others = [q for q in range(len(phases)) if q != p and phases[q].y_calc is not None]
        if ph.y_calc is None or not others:
            shares.append((1.0, ""))
            continue
        model, b_iso = _phase_model(target, ph.refinement)
        with torch.no_grad():
            peaks = model.peaks(StructureBatch.from_structures([ph.refinement.structure]), b_iso=b_iso)
        centre, area = peaks.centre.numpy(), peaks.area.numpy()
        inside = (centre >= x[0]) & (centre <= x[-1]) & (area > 0)
        centre, area = centre[inside], area[inside]
        if not area.sum() > 0:
            shares.append((1.0, ""))
            continue
        own = np.interp(centre, x, ph.y_calc)
        cover = np.stack([np.interp(centre, x, phases[q].y_calc) for q in others])  # (others, lines)
        standing = own > cover.sum(0)
        share = float(area[standing].sum() / area.sum())
        covered = (cover[:, ~standing] * area[~standing]).sum(-1)
        shares.append((share, phases[others[int(np.argmax(covered))]].name if (~standing).any() else ""))
    return shares


def _scale_covariance(target: PatternTarget, patterns: torch.Tensor, n_nonlinear: int) -> tuple[np.ndarray, ...]:
    """Weighted linear least squares of scales + background on fixed phase patterns, with covariance."""
    basis = target._basis
    design = torch.cat([patterns, basis], 0).T.numpy()  # (n, P + K)
    w = target.weights.numpy()
    y = target.y_obs.numpy()
    aw = design * w[:, None]
    normal = design.T @ aw
    coef = np.linalg.solve(normal, aw.T @ y)
    resid = y - design @ coef
    dof = max(len(y) - design.shape[1] - n_nonlinear, 1)
    chi2 = float((w * resid * resid).sum() / dof)
    cov = np.linalg.inv(normal) * chi2
    p = patterns.shape[0]
    return coef[:p], cov[:p, :p], design @ coef, design[:, p:] @ coef[p:]


def residual_pattern(pattern: MeasuredPattern, analysis: PhaseAnalysis) -> MeasuredPattern:
    """The pattern less the peaks of the phases in ``analysis`` (background kept), to solve a further phase
    against: in a mixture the major phases' peaks would otherwise decide how a minor phase's candidates rank.

    The uncertainties stay those of the measured pattern (its own, or counting statistics of the measured
    counts), since subtracting a calculated pattern adds no counts; the residual can go below zero where a
    known phase is fitted slightly off."""
    peaks = sum(ph.y_calc for ph in analysis.phases if ph.y_calc is not None)
    sigma = pattern.sigma
    if sigma is None:
        sigma = 1.0 / np.sqrt(counting_weights(torch.as_tensor(pattern.y, dtype=torch.float64)).numpy())
    meta = {**pattern.meta, "residual_of": [ph.name for ph in analysis.phases]}
    return dataclasses.replace(pattern, y=np.asarray(pattern.y, dtype=float) - peaks, sigma=sigma, meta=meta)


def generated_phase(
    model,
    pattern: MeasuredPattern,
    formula: dict[int, int],
    *,
    radiation: str = "xray",
    wavelength: str | float = "CuKa1",
    candidates: int = 20,
    seed: int = 0,
    progress: Callable[[str, float, float], None] | None = None,
    label: str = "",
) -> Structure | None:
    """The best refined structure that :mod:`atomdiff.tasks.solve` finds for ``formula`` against the pattern,
    made exactly symmetric in the space group the solve reports for it (within ``SolveSettings.symprec``, as in
    its CIF), so that the joint refinement refines it in that group. Refined in P1 by the solve, it is a few
    hundredths of an Å off its symmetry; refined jointly like that (every strain free, positions fixed), a
    generated kesterite with 5 wt% of generated ZnS fitted to Rwp 8.9 % and 5.93 wt% ZnS, symmetrised
    7.2 % and 5.03 wt% (true 5; measured, docs/solve.md)."""
    from atomdiff.diffusion.constraints import CompositionConstraint
    from atomdiff.tasks.solve import Solver, SolveSettings

    settings = SolveSettings(candidates=candidates, seed=seed)
    target = build_target(pattern, radiation, wavelength, settings.profile)
    solver = Solver(model, target, CompositionConstraint(formula=formula), settings)

    def tick(stage: str, done: float, total: float) -> None:
        if progress is not None:
            progress(f"{label}: {stage}", done, total)

    found = solver.run(tick)
    ranked = solver.with_orderings(solver.rank(found), found, tick)  # e.g. kesterite when the samples were stannite
    if not ranked:
        return None
    best = ranked[0].refinement.structure
    group, ideal = symmetry_of(best, settings.symprec)
    return best if group == "P1 (1)" else ideal


def search_compositions(
    cells: Mapping[str, int], elements: Sequence[int], given: Sequence[dict[int, int]] = ()
) -> list[tuple[str, dict[int, int]]]:
    """The compositions to generate phases for when the user names none: the reduced compositions of a model's
    training cells (``DataStatistics.cells``) made of ``elements`` only and not already ``given``, as
    ``(label, composition)`` with the elements in the order of ``elements`` (``Cu,Zn,Sn,S`` → ``Cu2ZnSnS4``) —
    the compound of the most elements first (the likely main phase, generated first by
    :func:`generated_phases`), then the commonest in the training data."""
    rank = {int(z): k for k, z in enumerate(elements)}

    def reduced(comp: Mapping[int, int]) -> tuple[tuple[int, int], ...]:
        g = math.gcd(*comp.values())
        return tuple(sorted(((int(z), int(n) // g) for z, n in comp.items()), key=lambda t: rank.get(t[0], -1)))

    seen = {tuple(sorted(reduced(c))) for c in given}
    found: dict[tuple[tuple[int, int], ...], int] = {}
    for text, count in cells.items():
        key = reduced(parse_formula(text))
        if all(z in rank for z, _ in key) and tuple(sorted(key)) not in seen:
            found[key] = found.get(key, 0) + int(count)
    labels = {key: "".join(f"{chemical_symbols[z]}{n if n > 1 else ''}" for z, n in key) for key in found}
    order = sorted(found, key=lambda key: (-len(key), -found[key], labels[key]))
    return [(labels[key], dict(key)) for key in order]


def generated_phases(
    pattern: MeasuredPattern,
    known: Sequence[tuple[str, Structure]],
    formulas: Sequence[tuple[str, dict[int, int]]],
    model_for: Callable[[str], object],
    *,
    radiation: str = "xray",
    wavelength: str | float = "CuKa1",
    candidates: int = 20,
    seed: int = 0,
    texture: Sequence[float] | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> list[tuple[str, Structure]]:
    """A generated phase for each of ``formulas`` (``(label, composition)``; the model ``model_for(label)``),
    each solved against what the ``known`` phases, refined first, leave unexplained (:func:`residual_pattern`).
    Without known phases the first formula is taken as the main phase: solved against the whole pattern, it is
    then what the others are solved against the residual of.

    The minor phases are not taken out one after the other: a minor phase generated first can take up the
    peaks of another (measured: with kesterite known, a SnS generated before ZnS came out in ZnS's own zinc-blende
    structure and explained away the ZnS of the sample), so every one sees the same residual."""
    out: list[tuple[str, Structure]] = []
    residuals: dict[tuple[str, ...], MeasuredPattern] = {}
    for k, (text, comp) in enumerate(formulas):
        explained = list(known) if known else out[:1]
        key = tuple(name for name, _ in explained)
        against = residuals.get(key, pattern)
        if explained and key not in residuals:
            try:
                fit = analyse_phases(
                    pattern,
                    explained,
                    radiation=radiation,
                    wavelength=wavelength,
                    min_fraction=0.0,
                    texture=texture,
                    progress=progress,
                )
                against = residual_pattern(pattern, fit)
            except InputError:  # none of them is in the pattern: nothing to take out
                pass
            residuals[key] = against
        best = generated_phase(
            model_for(text),
            against,
            comp,
            radiation=radiation,
            wavelength=wavelength,
            candidates=candidates,
            seed=seed + k,
            progress=progress,
            label=text,
        )
        if best is not None:
            out.append((f"generated {text}", best))
    return out


@dataclasses.dataclass
class _JointFit:
    """One joint refinement of a set of phases, with its scales' covariance and χ² (counting weights)."""

    results: list[Refinement]
    patterns: torch.Tensor
    scales: np.ndarray
    cov: np.ndarray
    y_calc: np.ndarray
    background: np.ndarray
    chi2: float
    n_parameters: list[int]  # of each phase: its scale, lattice, profile, B, positions (no shared background)

    @classmethod
    def of(cls, target: PatternTarget, results: list[Refinement]) -> _JointFit:
        patterns = _phase_patterns(target, results)
        scales, cov, y_calc, background = _scale_covariance(target, patterns, results[0].n_parameters)
        chi2 = float((target.weights.numpy() * (target.y_obs.numpy() - y_calc) ** 2).sum())
        own = [r.n_parameters - target.background_order for r in results]
        return cls(results, patterns, scales, cov, y_calc, background, chi2, own)

    def fractions(self) -> tuple[np.ndarray, np.ndarray]:
        return hill_howard(self.scales, self.cov, [r.structure for r in self.results])


def analyse_phases(
    pattern: MeasuredPattern,
    candidates: Sequence[tuple[str, Structure]],
    *,
    radiation: str = "xray",
    wavelength: str | float = "CuKa1",
    profile: Profile | None = None,
    min_fraction: float = 0.005,
    stages: Sequence[RefinementStage] = MIXTURE_STAGES,
    texture: Sequence[float] | None = None,
    symprec: float | None = 0.01,
    selection: str = "bic",
    positions_above: float | None = 0.2,
    progress: Callable[[str, float, float], None] | None = None,
) -> PhaseAnalysis:
    """Refine the candidate phases jointly and keep those the pattern needs (see the module docstring).

    ``positions_above``: the phases holding at least this weight fraction in a first joint fit of every
    candidate (coordinates fixed) then have their coordinates refined too, in their space groups, in a last
    stage (:data:`POSITION_STAGE`) of every fit; the minor phases' stay where they are (their few peaks cannot
    fix them). A main phase generated against the whole mixture pattern has coordinates that took up some of
    the minor phases' intensity; refined jointly, they give it back. ``None`` keeps every phase's fixed."""
    if not candidates:
        raise InputError("no candidate phases: give --known CIFs and/or --formula compositions")
    if selection not in SELECTIONS:
        raise InputError(f"phase selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    profile = profile or Profile(u=0.0, v=0.0, w=0.01, eta=0.5, cutoff=20.0)
    target = build_target(pattern, radiation, wavelength, profile)
    if positions_above is not None and not 0 < positions_above <= 1:
        raise InputError(f"positions_above must be a weight fraction in (0, 1], got {positions_above}")
    fits: dict[tuple[tuple[str, ...], tuple[str, ...]], _JointFit] = {}
    main: set[str] = set()  # the phases whose coordinates are refined

    def fit_of(phases: list[tuple[str, Structure]]) -> _JointFit:
        names = tuple(name for name, _ in phases)
        free = tuple(name for name in names if name in main)
        key = (names, free)
        if key not in fits:
            # each lattice refined only as its space group allows (a minor phase's peaks cannot fix six strains)
            refiner = RietveldRefiner(
                target,
                profile,
                stages=(*stages, POSITION_STAGE) if free else stages,
                volume_scan=None,
                mixture=True,
                texture=texture,
                symmetry=symprec,
                fixed_positions=[name not in main for name in names],
            )

            def tick(done: int, total: int) -> None:
                if progress is not None:
                    progress(f"refine {len(key)} phases", done, total)

            fits[key] = _JointFit.of(target, refiner.refine([x for _, x in phases], progress=tick))
        return fits[key]

    active = list(candidates)
    dropped: list[tuple[str, str]] = []
    n_points = len(target.y_obs)
    if positions_above is not None:
        first = fit_of(active)
        scales = np.clip(first.scales, 0.0, None)  # a phase not in the pattern holds nothing
        if scales.sum() > 0:
            w_first = hill_howard(scales, first.cov, [r.structure for r in first.results])[0]
            main.update(name for (name, _), w in zip(active, w_first, strict=True) if w >= positions_above)
    while True:
        fit = fit_of(active)
        if np.any(fit.scales <= 0):
            k = int(np.argmin(fit.scales))
            dropped.append((active[k][0], "negative or zero scale: not in the pattern"))
            active.pop(k)
            if not active:
                raise InputError("none of the candidate phases explains the pattern")
            continue
        w, sigma = fit.fractions()
        if len(active) == 1:
            break

        def share(k: int, w: np.ndarray = w, sigma: np.ndarray = sigma) -> str:
            return f"{100 * w[k]:.2f} ± {100 * sigma[k]:.2f} wt%: not needed"

        smallest, weakest = int(np.argmin(w)), int(np.argmin(w / np.maximum(sigma, 1e-30)))
        drop = None
        if w[smallest] < min_fraction:  # the smallest fraction, whatever its uncertainty
            drop = smallest
        elif selection == "sigma" and w[weakest] < 3 * sigma[weakest]:
            drop = weakest
        if drop is not None:
            dropped.append((active[drop][0], share(drop)))
            active.pop(drop)
            continue
        if selection == "bic":
            # backward elimination: the phase whose removal costs the fit least against what it brings
            reduced = fit.chi2 / max(n_points - int(sum(fit.n_parameters)) - target.background_order, 1)
            best = None
            for k in range(len(active)):
                penalty = fit.n_parameters[k] * math.log(n_points)
                if (w[k] / max(sigma[k], 1e-30)) ** 2 > 4 * penalty:  # far too strong to be dropped
                    continue
                gain = (fit_of(active[:k] + active[k + 1 :]).chi2 - fit.chi2) / reduced
                if gain < penalty and (best is None or gain - penalty < best[0]):
                    best = (gain - penalty, k, gain, penalty)
            if best is not None:
                _, k, gain, penalty = best
                effect = (
                    "the fit is better without it"
                    if gain <= 0
                    else f"without it χ²/χ²ᵥ rises by {gain:.0f}, below the BIC penalty {penalty:.0f} of its "
                    f"{fit.n_parameters[k]} parameters"
                )
                dropped.append((active[k][0], f"{share(k)} ({effect})"))
                active.pop(k)
                continue
        break
    results, patterns, scales, y_calc, background = fit.results, fit.patterns, fit.scales, fit.y_calc, fit.background
    yo = target.y_obs.numpy()
    wts = target.weights.numpy()
    rwp = float(np.sqrt((wts * (yo - y_calc) ** 2).sum() / (wts * yo * yo).sum()))
    phases = []
    for (name, _), r, wf, sg, pat, sc in zip(active, results, w, sigma, patterns.numpy(), scales, strict=True):
        group = r.space_group or symmetry_of(r.structure, 0.1)[0]
        phases.append(Phase(name, r, float(wf), float(sg), group, y_calc=sc * pat))
    for ph, (share, under) in zip(phases, own_line_shares(target, phases), strict=True):
        ph.own_lines, ph.buried_under = share, under
    return PhaseAnalysis(phases, dropped, rwp, y_calc, background, target.expected_rwp())


def write_phase_outputs(
    analysis: PhaseAnalysis,
    pattern: MeasuredPattern,
    target_axis: str,
    folder: str | os.PathLike,
    radiation: str,
    wavelength,
) -> None:
    """``phases.csv``, one refined CIF per phase, ``fit.png`` (all phases) and ``report.html``."""
    from atomdiff.report.html import structure_section, table_html, write_report
    from atomdiff.report.plots import plot_phases

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    ticks = []
    for k, ph in enumerate(analysis.phases, start=1):
        s = ph.refinement.structure
        ph.file = f"{k:02d}_{s.formula}.cif"
        with atomic_path(folder / ph.file) as tmp:
            tmp.write_text(symmetrised_cif(s, 0.1))
        rows.append(
            {
                "phase": ph.name,
                "formula": s.formula,
                "space_group": ph.space_group,
                "weight_percent": round(100 * ph.weight_fraction, 3),
                "sigma_percent": round(100 * ph.sigma, 3),
                "own_lines_percent": round(100 * ph.own_lines, 1),
                "scale": f"{ph.refinement.scale:.6g}",
                **lattice_row(s),
                "file": ph.file,
            }
        )
        model = PowderDiffractionModel(
            radiation, wavelength, torch.as_tensor(pattern.x), target_axis, ph.refinement.profile
        )
        t = [row["two_theta"] + ph.refinement.zero_shift for row in peak_table(model, s)]
        if target_axis == "q":
            lam = model.wavelength.primary
            t = [4 * math.pi * math.sin(math.radians(v / 2)) / lam for v in t]
        ticks.append((ph.name, t))
    with atomic_path(folder / "phases.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=PHASE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    plot_phases(
        folder / "fit.png",
        pattern.x,
        pattern.y,
        analysis.y_calc,
        [(ph.name, ph.y_calc + analysis.background) for ph in analysis.phases],
        ticks,
        axis=target_axis,
        title=f"{len(analysis.phases)} phase(s), Rwp = {100 * analysis.rwp:.2f} %",
    )
    expected = f" (Rexp {100 * analysis.rexp:.2f} %)" if analysis.rexp else ""
    sections = [
        f"<p>Joint Rietveld refinement of {len(analysis.phases)} phase(s): Rwp {100 * analysis.rwp:.2f} %{expected}. "
        "Weight fractions by Hill–Howard; σ from the scale-factor covariance (lower bounds).</p>",
        table_html(rows, PHASE_COLUMNS),
    ]
    if analysis.warning():
        sections.insert(1, f"<p><b>Warning:</b> {html.escape(analysis.warning())}.</p>")
    if analysis.dropped:
        sections.append(
            "<h2>Not needed</h2>"
            + table_html([{"phase": n, "reason": r} for n, r in analysis.dropped], ("phase", "reason"))
        )
    for k, ph in enumerate(analysis.phases, start=1):
        image = folder / "fit.png" if k == 1 else None
        sections.append(
            structure_section(
                f"p{k}",
                f"{ph.name}: {ph.refinement.structure.formula} — {ph.space_group}",
                ph.refinement.structure,
                image,
                f"{100 * ph.weight_fraction:.2f} ± {100 * ph.sigma:.2f} wt%",
            )
        )
    write_report(folder / "report.html", "atomdiff phases", sections)
