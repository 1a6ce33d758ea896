"""Noise processes, one per field of a crystal: fractional coordinates, lattice, species."""

from atomdiff.diffusion.noise.categorical import MASK, MaskedSpeciesNoise
from atomdiff.diffusion.noise.lattice import LatticeNoise
from atomdiff.diffusion.noise.wrapped import WrappedNormalNoise, wrapped_normal_score

__all__ = ["MASK", "LatticeNoise", "MaskedSpeciesNoise", "WrappedNormalNoise", "wrapped_normal_score"]
