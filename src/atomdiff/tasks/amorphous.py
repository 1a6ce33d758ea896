"""Generate amorphous structures at a given density, unconditionally or guided by spectra.

The prior (:class:`~atomdiff.diffusion.amorphous.AmorphousDiffusion`) is local, so the cell may hold any number
of atoms; the targets are a mean XANES (through a surrogate), a reduced PDF G(r) and/or a structure factor S(Q)
(through the exact forward models of :mod:`atomdiff.physics.total_scattering`), weighted against each other.
Outputs: all samples in one extxyz, and a report folder with RDF, bond-angle, coordination and target-vs-achieved
plots, a CSV of descriptors per sample and ``report.html``.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomdiff.data.patterns import read_pattern
from atomdiff.data.spectra import read_target_spectrum
from atomdiff.diffusion.amorphous import AmorphousDiffusion, SampleOptions, density_cell
from atomdiff.diffusion.guidance.spectra import STEP_CLIP, SpectralGuidance, SpectrumTerm, relative_misfit
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.physics import descriptors
from atomdiff.physics.total_scattering import PDFForwardModel, ScatteringForwardModel
from atomdiff.report.html import block_of, image_uri, structure_section, table_html, write_report
from atomdiff.report.plots import plot_curves
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import atomic_masses, atomic_number, chemical_symbols
from atomdiff.structure.io import write_structures
from atomdiff.structure.structure import Structure

_AVOGADRO = 6.02214076e23
_VIEWER_MAX_ATOMS = 1500
SUMMARY_COLUMNS = ("sample", "atoms", "density_g_cm3", "sp", "sp2", "sp3", "mean_cn", "min_distance_A")


def summary_columns(element: int) -> tuple[str, ...]:
    """Columns of ``summary.csv``: carbon's hybridisation (sp, sp2, sp3), else fractions of 3-, 4-, 5-fold atoms."""
    names = descriptors.fraction_names(element)
    return ("sample", "atoms", "density_g_cm3", *names, "mean_cn", "min_distance_A")


def default_min_distance(element: str) -> float:
    """Closest approach enforced on generated cells, Å: 1.1 for carbon (0.6 of its 1.85 Å bond cutoff), else
    0.6 of the element's bond cutoff (Si: 1.71 Å)."""
    z = atomic_number(element)
    return 1.1 if z == 6 else round(0.6 * descriptors.bond_cutoff(z, z), 2)


XANES_START = 0.3
"""Noise level (Å) below which a XANES target guides by default. Above ~0.35 Å the shipped prior's denoised
estimate has pairs closer than 0.6 Å; the surrogate, trained on relaxed cells (closest pair 1.19 Å), overflowed
there before it had a distance floor, so guidance acted from about 0.4 Å in effect; with the floor and guidance
at every level a 2.5 g/cm³ test cell ran away (misfit 0.16), and starting at 0.3 Å gave the test cells' lowest
misfit (docs/amorphous.md "Where XANES guidance starts")."""

SQ_GUIDANCE_STEP = 0.002
"""Grid step (Å) of the Debye sum of an S(Q) target (:class:`ScatteringForwardModel` ``r_step``): each pair is
shared between two grid points, 1.5e-5 from the pair-by-pair sum in S and ~75× cheaper for a 200-atom a-C cell,
which had made S(Q)-guided sampling impractical (five 216-atom cells had not finished in 15 minutes)."""

GUIDED_RESTARTS = 2
"""Restarts a guided run makes unless told otherwise: each re-noises the sample to
:attr:`SampleOptions.restart_sigma` (0.2 Å) and denoises it again, guided, in :attr:`SampleOptions.restart_steps`
(20) levels. On the a-C test cells (XANES, 5 samples each, seed 0) they took the guided misfit from 0.0020 to
0.0013 and |Δsp3| from 0.059 to 0.038; on the six cells of the RMC benchmark (G(r)) Rw from 0.200 to 0.170
(docs/amorphous.md "Restarts from 0.2 Å"). Restarts from 0.5 Å had made XANES-guided samples run away, since the
surrogate's distance floor hides pairs that close up."""


@dataclasses.dataclass
class AmorphousSettings:
    """What to generate and how (see ``atomdiff amorphous --help`` for each option)."""

    element: str = "C"
    density: float | None = None
    atoms: int | None = None
    samples: int = 1
    steps: int = 100
    sampler: str = "sde"
    restarts: int | None = None  #: None: GUIDED_RESTARTS when a target guides, else 0 (see :meth:`resolved`)
    restart_sigma: float = SampleOptions.restart_sigma
    restart_steps: int = SampleOptions.restart_steps
    finish_steps: int = 0
    finish_sigma: float = 0.1
    finish_guidance: float = 0.1
    min_distance: float | None = None
    guidance: float = 1.0
    guidance_mode: str = "tweedie"
    guidance_start: float | None = None
    xanes_start: float | None = XANES_START  #: the XANES term guides only for σ ≤ this (Å); see XANES_START
    #: XANES guided per domain of about this many atoms (None: the whole cell's mean). 216, the cells the
    #: surrogate and the targets were made from; measured in docs/amorphous.md (a 13,824-atom cell: misfit
    #: 0.0051 per domain against 0.0083 whole-cell); cells below ~730 atoms are one domain either way
    guidance_domain: int | None = 216
    #: cap of an atom's guidance gradient in medians of its cell (None: unclipped); see spectra.clip_atoms
    guidance_clip: float | None = STEP_CLIP
    weight_xanes: float = 1.0
    xanes_scale: str = "area"
    weight_pdf: float = 1.0
    weight_sq: float = 1.0
    pdf_radiation: str = "xray"
    pdf_sigma: float = 0.05
    pdf_qmax: float | None = None
    sq_radiation: str = "xray"
    sq_rmax: float = 10.0
    seed: int = 0

    def resolved(self, guided: bool) -> AmorphousSettings:
        """These settings with ``restarts`` chosen where it is ``None``: :data:`GUIDED_RESTARTS` when a target
        guides the run, else 0 (a restart without a target only re-samples the prior)."""
        if self.restarts is not None:
            return self
        return dataclasses.replace(self, restarts=GUIDED_RESTARTS if guided else 0)

    def sample_options(self) -> SampleOptions:
        """Sampler options; ``min_distance`` ``None`` means the element's :func:`default_min_distance`; settings
        not :meth:`resolved` (``restarts`` ``None``) make no restart."""
        closest = self.min_distance if self.min_distance is not None else default_min_distance(self.element)
        return SampleOptions(
            steps=self.steps,
            sampler=self.sampler,
            restarts=self.restarts or 0,
            restart_sigma=self.restart_sigma,
            restart_steps=self.restart_steps,
            finish_steps=self.finish_steps,
            finish_sigma=self.finish_sigma,
            finish_guidance=self.finish_guidance,
            min_distance=closest,
        )


@dataclasses.dataclass
class Targets:
    """Target curves: a mean spectrum on the surrogate's bins, and ``(x, y)`` curves for G(r) and S(Q)."""

    xanes: np.ndarray | None = None
    pdf: tuple[np.ndarray, np.ndarray] | None = None
    sq: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def any(self) -> bool:
        return self.xanes is not None or self.pdf is not None or self.sq is not None


def read_targets(xanes: Path | None, pdf: Path | None, sq: Path | None, n_bins: int | None) -> Targets:
    """Read target files (XANES: see :func:`read_target_spectrum`; G(r) and S(Q): two-column pattern files)."""
    out = Targets()
    if xanes is not None:
        if n_bins is None:
            raise InputError("a XANES target needs a surrogate model")
        out.xanes = read_target_spectrum(xanes, n_bins)
    if pdf is not None:
        p = read_pattern(pdf, axis="r")
        out.pdf = (np.asarray(p.x, dtype=float), np.asarray(p.y, dtype=float))
    if sq is not None:
        p = read_pattern(sq, axis="q")
        out.sq = (np.asarray(p.x, dtype=float), np.asarray(p.y, dtype=float))
    return out


def resolve_cell(
    element: int, density: float | None, atoms: int | None, cell: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """``(cell, n_atoms)`` from two of density, atom count and a fixed cell (all three must agree)."""
    mass = float(atomic_masses[element])
    if cell is None:
        if density is None or atoms is None:
            raise InputError("give --density and --atoms (or a fixed cell with --cell)")
        if atoms < 1:
            raise InputError(f"--atoms must be at least 1, got {atoms}")
        return density_cell(np.full(atoms, element), density), atoms
    volume = abs(float(np.linalg.det(cell)))
    if atoms is None:
        if density is None:
            raise InputError("with --cell give --density or --atoms")
        atoms = int(round(density * volume * 1e-24 * _AVOGADRO / mass))
        if atoms < 1:
            raise InputError(f"the cell holds no atom at density {density} g/cm³")
    elif density is not None:
        implied = atoms * mass / _AVOGADRO / (volume * 1e-24)
        if abs(implied - density) > 0.01 * density:
            raise InputError(
                f"--atoms {atoms} in this cell gives {implied:.3f} g/cm³, not --density {density}: "
                "give two of the three"
            )
    return np.asarray(cell, dtype=float), atoms


def build_guidance(
    settings: AmorphousSettings, targets: Targets, surrogate: XanesSurrogate | None
) -> SpectralGuidance | None:
    """The weighted spectral misfit of ``targets`` (``None`` when there is no target or strength 0)."""
    if not targets.any or settings.guidance <= 0:
        return None
    terms = []
    if targets.xanes is not None:
        if surrogate is None:
            raise InputError("a XANES target needs a surrogate model")
        if settings.xanes_scale not in ("area", "none"):
            raise InputError(f"--xanes-scale must be area or none, got {settings.xanes_scale!r}")
        target = surrogate.match_area(targets.xanes) if settings.xanes_scale == "area" else targets.xanes
        terms.append(
            SpectrumTerm(
                "xanes",
                surrogate,
                torch.as_tensor(target),
                settings.weight_xanes,
                per_atom=surrogate.per_atom,
                sigma_start=settings.xanes_start,
            )
        )
    if targets.pdf is not None:
        pdf = PDFForwardModel(targets.pdf[0], settings.pdf_radiation, qmax=settings.pdf_qmax, sigma=settings.pdf_sigma)
        terms.append(SpectrumTerm("pdf", lambda b, m=pdf: m(b).y, torch.as_tensor(targets.pdf[1]), settings.weight_pdf))
    if targets.sq is not None:
        sq = ScatteringForwardModel(
            targets.sq[0], settings.sq_radiation, r_max=settings.sq_rmax, r_step=SQ_GUIDANCE_STEP
        )
        terms.append(SpectrumTerm("sq", lambda b, m=sq: m(b).y, torch.as_tensor(targets.sq[1]), settings.weight_sq))
    return SpectralGuidance(
        terms,
        settings.guidance,
        settings.guidance_mode,
        settings.guidance_start,
        settings.guidance_domain,
        settings.guidance_clip,
    )


@dataclasses.dataclass
class AmorphousResult:
    """Generated structures with what they were asked to match and what they achieved."""

    structures: list[Structure]
    settings: AmorphousSettings
    curves: dict[str, dict[str, Any]]  # name → {"x", "target", "achieved" (n_samples, n), "misfit" (n_samples,)}
    history: list[tuple[float, list[float]]]
    notes: list[str]


def achieved_curves(
    structures: list[Structure], guidance: SpectralGuidance | None, targets: Targets
) -> dict[str, dict[str, Any]]:
    """Each target's curve for the generated structures (float64), with the relative misfit."""
    if guidance is None:
        return {}
    batch = StructureBatch.from_structures(structures, dtype=torch.float32)
    grids = {"pdf": targets.pdf[0] if targets.pdf else None, "sq": targets.sq[0] if targets.sq else None}
    out = {}
    with torch.no_grad():
        for term in guidance.terms:
            y = term.forward(batch).double().cpu()
            target = term.target.double().cpu()
            x = grids.get(term.name, np.arange(target.shape[-1], dtype=float))
            misfit = relative_misfit(y, target).numpy()
            out[term.name] = {"x": x, "target": target.numpy(), "achieved": y.numpy(), "misfit": misfit}
    return out


def generate_amorphous(
    model: AmorphousDiffusion,
    settings: AmorphousSettings,
    targets: Targets | None = None,
    surrogate: XanesSurrogate | None = None,
    cell: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AmorphousResult:
    """Sample ``settings.samples`` cells (same seed → same structures)."""
    targets = targets or Targets()
    z = atomic_number(settings.element)
    if model.elements and z not in model.elements:
        raise InputError(f"the model was trained on {model.elements} only, not Z = {z}")
    if settings.samples < 1:
        raise InputError(f"--samples must be at least 1, got {settings.samples}")
    if surrogate is not None and targets.xanes is not None and surrogate.absorber != z:
        raise InputError(
            f"the XANES surrogate computes the {chemical_symbols[surrogate.absorber]} {surrogate.edge} edge; "
            f"a cell of {settings.element} needs a surrogate for one of its own edges (atomdiff train xanes)"
        )
    box, n = resolve_cell(z, settings.density, settings.atoms, cell)
    structure = Structure(np.full(n, z), np.zeros((n, 3)), box)
    notes = []
    if model.densities is not None:
        lo, hi = model.densities
        if not lo - 0.05 <= structure.density <= hi + 0.05:
            notes.append(f"density {structure.density:.2f} g/cm³ is outside the training range {lo:.2f}–{hi:.2f}")
    template = StructureBatch.from_structures([structure] * settings.samples, dtype=torch.float32)
    guidance = build_guidance(settings, targets, surrogate)
    settings = settings.resolved(guidance is not None)
    generator = torch.Generator().manual_seed(settings.seed)
    structures = model.generate(template, settings.sample_options(), generator, guidance, progress)
    structures = [s.replace(info={"sample": k, "seed": settings.seed}) for k, s in enumerate(structures)]
    # an unguided run (strength 0) with targets is still measured against them: the baseline for a guided one
    measure = guidance or build_guidance(dataclasses.replace(settings, guidance=1.0), targets, surrogate)
    curves = achieved_curves(structures, measure, targets)
    notes += runaway_notes(guidance, curves)
    return AmorphousResult(structures, settings, curves, guidance.history if guidance else [], notes)


RUNAWAY_FACTOR = 10.0
"""A guided sample whose final misfit is this many times the lowest it had while guided by every term is reported
as run away. In a one-off check (a-C, 216 atoms, d2.5_5 XANES target, 5 samples) normal samples ended at
0.5–1.2× their lowest, and a sample that ran away under a guided finish (``finish_guidance`` 0.3) at 2.6·10⁵×."""


def runaway_notes(guidance: SpectralGuidance | None, curves: dict[str, dict[str, Any]]) -> list[str]:
    """A note for each sample whose final weighted misfit (from ``curves``) is :data:`RUNAWAY_FACTOR` times the
    lowest misfit of its denoised estimate along the guided steps at which every term was active."""
    if guidance is None or not guidance.history:
        return []
    starts = [t.sigma_start for t in guidance.terms if t.sigma_start is not None]
    if guidance.sigma_start is not None:
        starts.append(guidance.sigma_start)
    all_active = min(starts, default=float("inf"))
    values = [misfit for sigma, misfit in guidance.history if sigma <= all_active]
    if not values:
        return []
    lowest = np.min(np.asarray(values, dtype=float), axis=0)
    final = sum(term.weight * np.asarray(curves[term.name]["misfit"], dtype=float) for term in guidance.terms)
    return [
        f"sample {k + 1} ran away from the target: its misfit ended at {final[k]:.3g}, {final[k] / lowest[k]:.0f}× "
        f"the lowest it reached while guided ({lowest[k]:.3g}); try a lower --guidance, fewer --restarts or an "
        "unguided finish"
        for k in np.flatnonzero(final > RUNAWAY_FACTOR * lowest)
    ]


def summary_rows(structures: list[Structure]) -> list[dict[str, Any]]:
    """Per-sample descriptors: density, hybridisation of carbon (C–C bonds < 1.85 Å) or the fractions of 3-, 4-
    and 5-fold coordinated atoms of another element (bonds as :func:`~atomdiff.physics.descriptors.bond_cutoff`),
    mean coordination, shortest distance (see :func:`summary_columns`)."""
    rows = []
    for k, s in enumerate(structures):
        fractions = descriptors.network_fractions(s)
        cn = descriptors.coordination_numbers(s)
        rows.append(
            {
                "sample": k + 1,
                "atoms": len(s),
                "density_g_cm3": round(s.density, 4),
                **{name: round(value, 4) for name, value in fractions.items()},
                "mean_cn": round(float(np.mean(cn)), 4),
                "min_distance_A": round(descriptors.min_distance(s), 4),
            }
        )
    return rows


def write_amorphous_outputs(result: AmorphousResult, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``out`` (extxyz, every sample) and ``<stem>_report/``; returns the report folder and the summary."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(result.structures)
    structures = []
    for s, row in zip(result.structures, rows, strict=True):
        info = dict(s.info)
        info.update({k: v for k, v in row.items() if k != "sample"})
        for name, curve in result.curves.items():
            info[f"misfit_{name}"] = float(curve["misfit"][row["sample"] - 1])
        structures.append(s.replace(info=info))
    write_structures(structures, out, format="extxyz")
    report = out.with_name(out.stem + "_report")
    report.mkdir(exist_ok=True)
    with atomic_path(report / "summary.csv") as tmp, open(tmp, "w", newline="") as fh:
        columns = list(summary_columns(atomic_number(result.settings.element))) + [f"misfit_{n}" for n in result.curves]
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row, s in zip(rows, structures, strict=True):
            writer.writerow({**row, **{f"misfit_{n}": round(s.info[f"misfit_{n}"], 6) for n in result.curves}})
    plots = _plots(result, report)
    _html(result, rows, plots, report)
    with atomic_path(report / "settings.json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(result.settings), indent=2) + "\n")
    return report, rows


def _plots(result: AmorphousResult, report: Path) -> dict[str, Path]:
    plots: dict[str, Path] = {}
    label = [f"sample {k + 1}" for k in range(len(result.structures))]
    show = list(range(min(len(result.structures), 8)))
    z = atomic_number(result.settings.element)
    bond = descriptors.bond_cutoff(z, z)
    rdfs = [(*descriptors.rdf(result.structures[k], r_max=8.0), label[k]) for k in show]
    plots["rdf"] = report / "rdf.png"
    plot_curves(plots["rdf"], rdfs, "r (Å)", "g(r)", title="Radial distribution function")
    angles = [(*descriptors.bond_angle_distribution(result.structures[k], cutoff=bond), label[k]) for k in show]
    plots["angles"] = report / "bond_angles.png"
    plot_curves(
        plots["angles"],
        angles,
        "bond angle (degrees)",
        "probability density",
        title=f"Bond angles (bonds < {bond:g} Å)",
    )
    cns = []
    for k in show:
        cn = descriptors.coordination_numbers(result.structures[k])
        counts = np.bincount(cn.astype(int), minlength=7)[:7] / max(len(cn), 1)
        cns.append((np.arange(7, dtype=float), counts, label[k]))
    plots["coordination"] = report / "coordination.png"
    plot_curves(
        plots["coordination"],
        cns,
        "coordination number",
        "fraction of atoms",
        title=f"Coordination (bonds < {bond:g} Å)",
    )
    axes = {"xanes": ("bin", "absorption (arb. units)"), "pdf": ("r (Å)", "G(r) (Å⁻²)"), "sq": ("Q (Å⁻¹)", "S(Q)")}
    titles = {"xanes": "XANES", "pdf": "G(r)", "sq": "S(Q)"}
    for name, curve in result.curves.items():
        lines = [(curve["x"], curve["target"], "target")]
        lines += [(curve["x"], curve["achieved"][k], f"{label[k]} (misfit {curve['misfit'][k]:.3g})") for k in show]
        plots[name] = report / f"{name}.png"
        plot_curves(plots[name], lines, *axes[name], title=f"{titles[name]}: target and generated")
    if result.history:
        sig = np.array([h[0] for h in result.history])
        mis = np.array([h[1] for h in result.history])
        plots["guidance"] = report / "guidance.png"
        plot_curves(
            plots["guidance"],
            [(np.log10(sig), mis[:, k], label[k]) for k in show],
            "log10 σ (Å) — sampling runs right to left",
            "weighted relative misfit at x̂₀",
            title="Misfit during guided sampling",
            logy=True,  # from ~10² at the first guided level to ~10⁻³ at the end
        )
    return plots


def _xanes_guidance_note(st: AmorphousSettings) -> str:
    """`` from σ ≤ 0.3 Å, per domain of about 216 atoms`` (the parts that apply)."""
    parts = []
    if st.xanes_start is not None:
        parts.append(f" from σ ≤ {st.xanes_start:g} Å")
    if st.guidance_domain:
        parts.append(f" per domain of about {st.guidance_domain} atoms")
    return ",".join(parts)


def _html(result: AmorphousResult, rows: list[dict], plots: dict[str, Path], report: Path) -> None:
    st = result.settings
    first = result.structures[0]
    intro = (
        f"<p>{len(result.structures)} cell(s) of {len(first)} {html.escape(first.formula)} atoms at "
        f"{first.density:.3f} g/cm³ ({st.steps} {st.sampler} steps, "
        f"{st.restarts} restarts from σ {st.restart_sigma:g} Å, "
        f"{st.finish_steps} finish iterations at σ {st.finish_sigma:g} Å, seed {st.seed}). "
        + (
            f"Guidance {st.guidance:g} ({st.guidance_mode}) towards: {', '.join(result.curves)}"
            + (f" (XANES{_xanes_guidance_note(st)})." if "xanes" in result.curves and st.guidance > 0 else ".")
            if result.curves
            else "Unconditional (no target)."
        )
        + "</p>"
    )
    sections = [intro] + [f"<p><b>Note:</b> {html.escape(n)}</p>" for n in result.notes]
    sections.append("<h2>Samples</h2>" + table_html(rows, summary_columns(atomic_number(st.element))))
    for key in ("xanes", "pdf", "sq", "guidance", "rdf", "angles", "coordination"):
        if key in plots:
            sections.append(f"<img src='{image_uri(plots[key])}' alt='{key}'>")
    block, f = block_of(first, _VIEWER_MAX_ATOMS)
    if f == 1.0:
        sections.append(structure_section("1", "Sample 1", first, None, "drag to rotate"))
    else:
        note = (
            f"drag to rotate; sample 1 has {len(first)} atoms: shown is the corner block of {f:.3f} of each cell "
            f"edge ({len(block)} atoms, no periodic images); the whole cell is in the extxyz file"
        )
        sections.append(structure_section("1", "Sample 1 (a block)", block, None, note, images=False))
    write_report(report / "report.html", "atomdiff amorphous", sections)
