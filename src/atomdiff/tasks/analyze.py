"""Describe a structure: scalar descriptors and, optionally, RDF and bond-angle plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atomdiff.physics import descriptors
from atomdiff.report.plots import plot_curves
from atomdiff.structure.structure import Structure


def analyze_structure(
    structure: Structure, cutoff: float | None = None, plot_dir: Path | None = None
) -> dict[str, Any]:
    """JSON-ready descriptors of ``structure``; RDF and angle plots go to ``plot_dir`` when given."""
    result = descriptors.describe(structure, cutoff=cutoff)
    if plot_dir is not None:
        plot_dir = Path(plot_dir)
        plot_dir.mkdir(parents=True, exist_ok=True)
        r, g = descriptors.rdf(structure)
        plot_curves(plot_dir / "rdf.png", [(r, g, "g(r)")], "r (Å)", "g(r)", title=f"RDF of {structure.formula}")
        elements = sorted(set(structure.numbers.tolist()))
        bond = cutoff if cutoff is not None else max(descriptors.bond_cutoff(a, b) for a in elements for b in elements)
        angles, density = descriptors.bond_angle_distribution(structure, cutoff=bond)
        plot_curves(
            plot_dir / "bond_angles.png",
            [(angles, density, f"bonds < {bond:.2f} Å")],
            "bond angle (degrees)",
            "probability density",
            title=f"Bond angles of {structure.formula}",
        )
    return result
