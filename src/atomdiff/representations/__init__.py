"""Representations of periodic structures other than point clouds (voxel fields per species)."""

from atomdiff.representations.voxel import VoxelGrid, decode, encode

__all__ = ["VoxelGrid", "decode", "encode"]
