"""Periodic structures: the :class:`Structure` type, batching, neighbour lists and file I/O."""

from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.io import read_structure, read_structures, write_structures
from atomdiff.structure.neighbors import Neighbors, neighbor_list
from atomdiff.structure.structure import Structure

__all__ = [
    "Neighbors",
    "Structure",
    "StructureBatch",
    "neighbor_list",
    "read_structure",
    "read_structures",
    "write_structures",
]
