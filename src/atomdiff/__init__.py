"""atomdiff: atomic structures of materials from what a scientist measures.

The package flows one way: ``structure`` → ``physics`` → (``models``, ``diffusion``) → ``tasks`` → ``cli``.
"""

from atomdiff.errors import AtomdiffError, InputError
from atomdiff.structure import Structure, StructureBatch

__all__ = ["AtomdiffError", "InputError", "Structure", "StructureBatch"]
__version__ = "0.1.0"
