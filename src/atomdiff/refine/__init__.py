"""Least-squares refinement of structures against measured data."""

from atomdiff.refine.rietveld import DEFAULT_STAGES, Refinement, RefinementStage, RietveldRefiner
from atomdiff.refine.symmetry import SymmetryConstraints, symmetrised, symmetry_constraints

__all__ = [
    "DEFAULT_STAGES",
    "Refinement",
    "RefinementStage",
    "RietveldRefiner",
    "SymmetryConstraints",
    "symmetrised",
    "symmetry_constraints",
]
