"""Least-squares refinement of structures against measured data."""

from atomdiff.refine.rietveld import DEFAULT_STAGES, Refinement, RefinementStage, RietveldRefiner

__all__ = ["DEFAULT_STAGES", "Refinement", "RefinementStage", "RietveldRefiner"]
