"""Refinement of structures against measured data: Rietveld least squares, reverse Monte Carlo against G(r)."""

from atomdiff.refine.rietveld import DEFAULT_STAGES, Refinement, RefinementStage, RietveldRefiner
from atomdiff.refine.rmc import PDFReverseMonteCarlo, RMCStatus, random_start
from atomdiff.refine.symmetry import SymmetryConstraints, symmetrised, symmetry_constraints

__all__ = [
    "DEFAULT_STAGES",
    "PDFReverseMonteCarlo",
    "RMCStatus",
    "Refinement",
    "RefinementStage",
    "RietveldRefiner",
    "SymmetryConstraints",
    "random_start",
    "symmetrised",
    "symmetry_constraints",
]
