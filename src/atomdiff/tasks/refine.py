"""Rietveld refinement of given structures against a measured powder pattern (``atomdiff refine``).

The structures a user already has (a CIF from a database, a candidate from ``atomdiff solve``, two models of the
same compound to choose between) are refined with the solve's least squares — lattice, zero shift, profile,
isotropic B per element and coordinates — by default in each structure's own space group
(:mod:`atomdiff.refine.symmetry`), ranked by Rwp and, when the weights are counts or given uncertainties,
compared by ΔAIC. Written to the output folder:

- ``01_<formula>_<space group>.cif`` …: the refined structures (symmetrised CIF), best Rwp first;
- ``01_fit.png`` …: observed, calculated, difference and reflection ticks of each;
- ``refined.csv``: one row per structure (rank, input file, space group, Rwp, parameters, ΔAIC, lattice, B);
- ``report.html``: the fits, a 3D view of each structure (offline), Rexp, the ΔAIC verdict on rank 2 and the table.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.descriptors import min_distance
from atomdiff.physics.profile import Profile
from atomdiff.refine import DEFAULT_STAGES, RietveldRefiner
from atomdiff.report.html import write_refine_report
from atomdiff.structure.structure import Structure
from atomdiff.tasks.solve import (
    LATTICE_COLUMNS,
    MIN_DISTANCE,
    Candidate,
    SolveSettings,
    build_target,
    candidate_row,
    compare_candidates,
    symmetry_of,
    write_ranked,
)

REFINED_COLUMNS = ("rank", "source", "formula", "space_group", "rwp", "n_parameters", "delta_aic", "b_iso")
_LATTICE_AND_MORE = (*LATTICE_COLUMNS, "volume", "min_distance", "zero_shift", "file", "rejected")


@dataclasses.dataclass
class RefineResult:
    ranked: list[Candidate]
    """The refined structures, best Rwp first (``index``: position in the input)."""
    expected_rwp: float | None
    plots: list[Path]
    in_group: bool = True
    """Refined in each structure's space group (else in P1)."""


def refine_structures(
    pattern: MeasuredPattern,
    structures: Sequence[Structure],
    folder: str | Path,
    *,
    sources: Sequence[str] | None = None,
    radiation: str = "xray",
    wavelength: str | float = "CuKa1",
    symprec: float | None = 0.01,
    profile: Profile | None = None,
    texture: Sequence[float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RefineResult:
    """Refine every structure against ``pattern`` (in its space group found within ``symprec`` Å, or in P1
    when ``symprec`` is ``None``), rank by Rwp and write the output folder (module docstring)."""
    if not structures:
        raise InputError("no structure to refine")
    sources = list(sources) if sources is not None else [f"structure {i + 1}" for i in range(len(structures))]
    if len(sources) != len(structures):
        raise InputError(f"{len(sources)} source names for {len(structures)} structures")
    settings = SolveSettings(top=len(structures), texture=None if texture is None else tuple(texture))
    if profile is not None:
        settings = dataclasses.replace(settings, profile=profile)
    target = build_target(pattern, radiation, wavelength, settings.profile, settings.background_order)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("output must be a folder, and this is a file", path=str(folder))
    refiner = RietveldRefiner(target, settings.profile, stages=DEFAULT_STAGES, texture=texture, symmetry=symprec)
    results = refiner.refine(list(structures), progress=progress)
    candidates = []
    for i, (structure, r) in enumerate(zip(structures, results, strict=True)):
        dmin = min_distance(r.structure)
        reason = "refinement failed" if not math.isfinite(r.rwp) else ""
        if not reason and dmin < MIN_DISTANCE:
            reason = f"atoms {dmin:.2f} Å apart"
        group = r.space_group or symmetry_of(r.structure, settings.symprec)[0]
        candidates.append(Candidate(i, structure, r, dmin, reason, space_group=group))
    ranked = sorted(candidates, key=lambda c: c.refinement.rwp if math.isfinite(c.refinement.rwp) else math.inf)
    for k, c in enumerate(ranked, 1):
        c.rank = k
    compare_candidates(ranked, target)
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_ranked(ranked, target, pattern, folder, settings)
    rows = []
    for c in ranked:
        row = candidate_row(c)
        rows.append(
            {
                "source": sources[c.index],
                "b_iso": ";".join(f"{k}={v:.3f}" for k, v in c.refinement.b_iso.items()),
                **{k: row[k] for k in REFINED_COLUMNS if k in row},
                **{k: row[k] for k in _LATTICE_AND_MORE},
            }
        )
    columns = (*REFINED_COLUMNS, *_LATTICE_AND_MORE)
    with atomic_path(folder / "refined.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    result = RefineResult(ranked, target.expected_rwp(), plots, in_group=symprec is not None)
    write_refine_report(folder / "report.html", pattern, result, rows, columns)
    return result
