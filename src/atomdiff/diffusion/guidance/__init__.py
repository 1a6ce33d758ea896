"""Terms that steer sampling towards data: physics guidance by a measured pattern (crystals), repulsion of
overlapping atoms (crystals) and spectral guidance by XANES, G(r) or S(Q) (amorphous positions)."""

from atomdiff.diffusion.guidance.determinism import deterministic
from atomdiff.diffusion.guidance.physics import PhysicsGuidance
from atomdiff.diffusion.guidance.repulsion import RepulsionGuidance
from atomdiff.diffusion.guidance.spectra import SpectralGuidance, SpectrumTerm

__all__ = ["PhysicsGuidance", "RepulsionGuidance", "SpectralGuidance", "SpectrumTerm", "deterministic"]
