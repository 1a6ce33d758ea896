"""Training data made by us: random symmetric crystals relaxed with a universal interatomic potential."""

from atomdiff.data.generate.crystals import SYSTEMS, CrystalDataGenerator

__all__ = ["SYSTEMS", "CrystalDataGenerator"]
