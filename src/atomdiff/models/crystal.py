"""A periodic message-passing score network for crystals (lattice, fractional coordinates, species).

Symmetries, by construction:
- rotations and reflections of the crystal: the network sees the cell only through the rotation-invariant
  log-Gram parameterisation and interatomic distances, and predicts scores of fractional coordinates and of
  that parameterisation, which are themselves invariant;
- rigid translations, including wrap-around: only differences of fractional coordinates enter, through
  periodic Fourier features and minimum-image distances;
- permutations of atoms: messages are averaged over all atoms of a structure.
A change of cell basis by a unimodular matrix is *not* an invariance of this design (the outputs are
expressed in the given basis).

Edges connect every pair of atoms of a structure (the cells of interest hold tens of atoms), so every atom
sees the whole cell.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from atomdiff.errors import InputError
from atomdiff.models.pattern_encoder import PatternEncoder, PatternEncoderConfig
from atomdiff.structure.neighbors import all_pairs


@dataclasses.dataclass
class CrystalNetConfig:
    """Hyper-parameters of :class:`CrystalScoreNet` (stored as JSON next to the weights)."""

    hidden: int = 256
    layers: int = 4
    n_frequencies: int = 8
    n_rbf: int = 32
    r_max: float = 8.0
    vocab: int = 101
    cond_dim: int = 0
    #: settings of a :class:`~atomdiff.models.pattern_encoder.PatternEncoder` (a pattern-conditioned model),
    #: whose ``cond_dim`` must equal the network's; kept inside the network so that EMA and export cover it
    encoder: dict | None = None


class _Layer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int):
        super().__init__()
        self.edge = nn.Sequential(
            nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, i, j, edge_feat, inv_degree):
        m = self.edge(torch.cat([h[i], h[j], edge_feat], -1))
        agg = torch.zeros_like(h).index_add(0, i, m) * inv_degree
        return h + self.node(torch.cat([self.norm(h), agg], -1))


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = 1000.0 * t.unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], -1)


class CrystalScoreNet(nn.Module):
    """``forward(tokens, frac, lattice_x, gram, batch_idx, t, condition)`` →
    ``(frac_score (N, 3), lattice_eps (B, 6), species_logits (N, vocab))``.

    Args (of forward):
        tokens: ``(N,)`` atomic numbers, 0 for a masked species.
        frac: ``(N, 3)`` noisy fractional coordinates.
        lattice_x: ``(B, 6)`` noisy standardised log-Gram vector.
        gram: ``(B, 3, 3)`` the Gram matrix ``L Lᵀ`` (Å²) it decodes to.
        batch_idx: ``(N,)``.
        t: ``(B,)`` diffusion time in [0, 1].
        condition: ``(B, cond_dim)`` optional conditioning vector (e.g. a pattern embedding).
    """

    def __init__(self, config: CrystalNetConfig | None = None):
        super().__init__()
        self.config = c = config or CrystalNetConfig()
        self.embed = nn.Embedding(c.vocab, c.hidden)
        self.time = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.lattice_in = nn.Sequential(nn.Linear(6, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.cond = nn.Linear(c.cond_dim, c.hidden) if c.cond_dim else None
        self.pattern_encoder = None
        if c.encoder is not None:
            encoder = PatternEncoderConfig(**c.encoder)
            if encoder.cond_dim != c.cond_dim:
                raise InputError(f"pattern encoder cond_dim {encoder.cond_dim} differs from the network's {c.cond_dim}")
            self.pattern_encoder = PatternEncoder(encoder)
        edge_dim = 6 * c.n_frequencies + c.n_rbf + 6
        self.layers = nn.ModuleList(_Layer(c.hidden, edge_dim) for _ in range(c.layers))
        self.out_norm = nn.LayerNorm(c.hidden)
        self.frac_out = nn.Linear(c.hidden, 3, bias=False)
        self.species_out = nn.Linear(c.hidden, c.vocab)
        self.lattice_out = nn.Sequential(nn.Linear(2 * c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, 6))
        self.register_buffer("rbf_centres", torch.linspace(0.0, c.r_max, c.n_rbf), persistent=False)

    def forward(
        self,
        tokens: torch.Tensor,
        frac: torch.Tensor,
        lattice_x: torch.Tensor,
        gram: torch.Tensor,
        batch_idx: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        dtype = self.embed.weight.dtype
        n_structures = lattice_x.shape[0]
        frac, lattice_x, gram, t = frac.to(dtype), lattice_x.to(dtype), gram.to(dtype), t.to(dtype)
        g = self.time(sinusoidal_embedding(t, c.hidden)) + self.lattice_in(lattice_x)
        if self.cond is not None:
            if condition is None:
                condition = lattice_x.new_zeros(n_structures, c.cond_dim)
            g = g + self.cond(condition.to(dtype))
        h = self.embed(tokens) + g[batch_idx]

        i, j = all_pairs(batch_idx, n_structures)
        dfrac = frac[j] - frac[i]
        k = torch.arange(1, c.n_frequencies + 1, dtype=dtype, device=frac.device)
        ang = 2 * math.pi * dfrac.unsqueeze(-1) * k  # (E, 3, K)
        fourier = torch.cat([torch.sin(ang), torch.cos(ang)], -1).flatten(1)
        dmin = dfrac - torch.round(dfrac)  # minimum image in fractional coordinates
        d2 = torch.einsum("ea,eab,eb->e", dmin, gram[batch_idx[i]], dmin)
        dist = torch.sqrt(d2.clamp_min(1e-12))
        width = c.r_max / c.n_rbf
        rbf = torch.exp(-((dist.unsqueeze(-1) - self.rbf_centres) ** 2) / (2 * width**2))
        lat = lattice_x[batch_idx[i]]
        edge_feat = torch.cat([fourier, rbf, lat], -1)
        degree = torch.bincount(i, minlength=h.shape[0]).clamp_min(1).to(dtype).unsqueeze(-1)
        for layer in self.layers:
            h = layer(h, i, j, edge_feat, 1.0 / degree)
        h = self.out_norm(h)
        counts = torch.bincount(batch_idx, minlength=n_structures).clamp_min(1).to(dtype).unsqueeze(-1)
        pooled = torch.zeros(n_structures, c.hidden, dtype=dtype, device=h.device).index_add(0, batch_idx, h) / counts
        lattice_eps = self.lattice_out(torch.cat([pooled, g], -1))
        return self.frac_out(h), lattice_eps, self.species_out(h)
