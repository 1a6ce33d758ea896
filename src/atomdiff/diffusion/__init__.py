"""Diffusion over periodic structures: noise processes, constraints, the crystal model and its samplers."""
