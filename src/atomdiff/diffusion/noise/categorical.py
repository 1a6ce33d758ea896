"""Absorbing-state (masked) discrete diffusion of species.

Tokens are atomic numbers 1..``vocab-1``; token 0 is MASK. At time t each atom is masked with probability t.
Reverse: from t to s < t, each masked atom is revealed with probability (t − s)/t, its species drawn from
the network's (constrained) distribution; revealed atoms stay fixed.
"""

from __future__ import annotations

import torch

MASK = 0


class MaskedSpeciesNoise:
    def __init__(self, vocab: int = 101):
        self.vocab = int(vocab)

    def sample_marginal(self, numbers: torch.Tensor, t_atom: torch.Tensor, generator=None) -> torch.Tensor:
        u = torch.rand(numbers.shape, generator=generator, dtype=torch.float64).to(numbers.device)
        return torch.where(u < t_atom.double(), torch.full_like(numbers, MASK), numbers)

    def reveal_probability(self, t: float, t_prev: float) -> float:
        return 1.0 if t_prev <= 0 else (t - t_prev) / t
