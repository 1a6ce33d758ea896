"""A local, E(3)-equivariant message-passing network on Cartesian positions in a periodic cell.

Used as the score network of amorphous diffusion (vector output per atom) and as the structure → spectrum
surrogate (invariant output per atom). Every atom only sees neighbours within ``cutoff`` (periodic images
included), so a model trained on 200-atom cells runs on cells of any size at a cost linear in the number of
atoms.

Architecture: polarizable atom interaction (PaiNN, Schütt et al., ICML 2021) — scalar features ``s`` and
vector features ``v`` (``(n, 3, F)``) updated by messages that are built from scalar filters of the distance
and the unit pair vector. Only l ≤ 1 features are carried, so no Clebsch–Gordan tensor products are needed.
Written here rather than with e3nn's ``FullyConnectedTensorProduct`` because the l ≤ 1 messages are
elementwise products: measured on this machine, an e3nn tensor product with per-edge weights costs ~333 µs
per atom at a 5 Å cutoff against ~50 µs for a scalar distance filter (``../shared/FACTS.md``), and the
10⁵-atom cells of the amorphous task need the cheap one. Equivariance (rotations and reflections of positions
and cell together), invariance to translations and wrap-around, and permutation equivariance are checked
numerically in the tests with :func:`atomdiff.testing.assert_symmetric`.

Per-structure conditioning (noise level, density, ...) enters as a vector ``cond`` that is mapped to a shift
of the scalar features before every interaction.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.neighbors import neighbor_list

_MAX_Z = 100
_EDGE_CHUNK = 2048  # edges per chunk of message passing (a chunk's (E, 3F) temporaries stay in the L2 cache)
_RECOMPUTE_EDGES = 100_000  # above this many edges under autograd, messages are recomputed in the backward pass
# Rows are gathered with ``index_select``: on this CPU it gathers a chunk's (2048, 192) features 5–7× faster than
# advanced indexing (``phi[j]``: 371 against 52 µs, one thread), which had been a quarter of a guided step.


@dataclasses.dataclass(frozen=True)
class LocalNetConfig:
    """Shape of a :class:`LocalEquivariantNet`.

    Attributes:
        hidden: feature width ``F`` of scalars and vectors.
        layers: interaction blocks (receptive field ``layers × cutoff``).
        cutoff: neighbour cutoff in Å.
        n_rbf: radial basis functions (sine/Bessel basis with a smooth cosine envelope).
        n_cond: length of the per-structure conditioning vector (0: none).
        out_scalars: invariant outputs per atom (0: none).
        out_vector: whether to output one equivariant vector per atom.
        avg_neighbors: messages are divided by this constant so that feature sizes do not grow with density.
        distance_floor: the radial basis sees pair distances no shorter than this (Å; 0: none). Messages grow
            as pairs close up and the feature updates are products of them, so a structure with pairs far closer
            than any in the training data overflows to inf/NaN through the layers (the XANES surrogate on the
            denoised estimate of an amorphous sample at σ > 0.35 Å, measured); unit vectors are not floored.
    """

    hidden: int = 64
    layers: int = 4
    cutoff: float = 3.0
    n_rbf: int = 16
    n_cond: int = 0
    out_scalars: int = 0
    out_vector: bool = True
    avg_neighbors: float = 10.0
    distance_floor: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Graph:
    """Pairs ``i ← j`` within the cutoff with their Cartesian vectors (``cart[j] + shift·cell − cart[i]``)."""

    i: torch.Tensor
    j: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def build(cls, batch: StructureBatch, cart: torch.Tensor, cutoff: float) -> Graph:
        """Neighbour pairs of ``batch`` (found by vesin) with vectors differentiable with respect to ``cart``."""
        nb = neighbor_list(batch, cutoff)
        offset = torch.einsum("pi,pij->pj", nb.shift.to(cart.dtype), batch.cell[nb.batch_idx].to(cart.dtype))
        vectors = cart.index_select(0, nb.j) - cart.index_select(0, nb.i) + offset
        return cls(nb.i, nb.j, vectors)


def radial_basis(d: torch.Tensor, cutoff: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rbf (n_pairs, n), envelope (n_pairs,))``: sin(kπd/rc)/d and a cosine cutoff (zero with zero slope)."""
    k = torch.arange(1, n + 1, dtype=d.dtype, device=d.device)
    dd = d.clamp_min(1e-6).unsqueeze(-1)
    rbf = torch.sin(k * math.pi * dd / cutoff) / dd
    env = torch.where(d < cutoff, 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0), torch.zeros_like(d))
    return rbf, env


class _Interaction(nn.Module):
    """Message (neighbours → atom) followed by an update mixing scalar and vector channels."""

    def __init__(self, hidden: int, n_rbf: int):
        super().__init__()
        f = hidden
        self.phi = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, 3 * f))
        self.filter = nn.Linear(n_rbf, 3 * f)
        self.u = nn.Linear(f, f, bias=False)
        self.v = nn.Linear(f, f, bias=False)
        self.mix = nn.Sequential(nn.Linear(2 * f, f), nn.SiLU(), nn.Linear(f, 3 * f))
        self.hidden = f

    def forward(
        self,
        s: torch.Tensor,
        v: torch.Tensor,
        g: Graph,
        rbf: torch.Tensor,
        env: torch.Tensor,
        unit: torch.Tensor,
        scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.phi(s)
        ds, dv = torch.zeros_like(s), torch.zeros_like(v)
        # Edges in chunks: the per-edge temporaries stay a few MB whatever the cell size (whole-graph temporaries
        # of a 16,000-atom cell are ~170 MB each and made a step cost 2.4x more per atom than at 4,000 atoms).
        # Under autograd on very large graphs each chunk's messages are recomputed in the backward pass, so that
        # what is kept per chunk is its slice of the inputs, not its per-edge temporaries (10⁵-atom guidance).
        if torch.is_grad_enabled() and g.i.shape[0] > _RECOMPUTE_EDGES:
            w, bias = self.filter.weight, self.filter.bias
            ds, dv = _RecomputedMessages.apply(phi, v, rbf, env, unit, w, bias, g.i, g.j, scale, self.hidden)
        else:
            for start in range(0, g.i.shape[0], _EDGE_CHUNK):
                part = slice(start, start + _EDGE_CHUNK)
                i, j = g.i[part], g.j[part]
                phi_j, v_j = phi.index_select(0, j), v.index_select(0, j)
                a, b = _messages(phi_j, v_j, self.filter(rbf[part]), env[part], unit[part], scale, self.hidden)
                ds.index_add_(0, i, a)
                dv.index_add_(0, i, b)
        s = s + ds
        v = v + dv
        uv, vv = self.u(v), self.v(v)
        norm = torch.sqrt((vv * vv).sum(1) + 1e-8)
        a_vv, a_sv, a_ss = self.mix(torch.cat([s, norm], dim=-1)).split(self.hidden, dim=-1)
        v = v + a_vv.unsqueeze(1) * uv
        s = s + a_sv * (uv * vv).sum(1) + a_ss
        return s, v


def _messages(
    phi_j: torch.Tensor,
    v_j: torch.Tensor,
    filt: torch.Tensor,
    env: torch.Tensor,
    unit: torch.Tensor,
    scale: float,
    hidden: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar ``(E, F)`` and vector ``(E, 3, F)`` messages of edges from their sending atoms' features."""
    x = phi_j * filt * (env * scale).unsqueeze(-1)
    a, b, c = x.split(hidden, dim=-1)
    return a, b.unsqueeze(1) * v_j + c.unsqueeze(1) * unit.unsqueeze(-1)


class _RecomputedMessages(torch.autograd.Function):
    """Messages summed onto receiving atoms, chunk by chunk, keeping no per-edge tensor for the backward pass.

    Autograd through the plain loop keeps ~5 kB per edge and block (every gather, filter and product of every
    chunk; ``index_add`` alone keeps its source), 9 GB for a guided 16,000-atom cell and more than the machine
    has at 10⁵ atoms. Here the forward pass keeps only its inputs (per atom, or per edge with ≤ 16 numbers) and
    the backward pass recomputes each chunk's products and applies their derivatives, written out.
    """

    @staticmethod
    def forward(ctx, phi, v, rbf, env, unit, weight, bias, i, j, scale, hidden):
        ds = phi.new_zeros((phi.shape[0], hidden))
        dv = v.new_zeros(v.shape)
        with torch.no_grad():
            for start in range(0, i.shape[0], _EDGE_CHUNK):
                part = slice(start, start + _EDGE_CHUNK)
                filt = torch.nn.functional.linear(rbf[part], weight, bias)
                jj = j[part]
                a, b = _messages(
                    phi.index_select(0, jj), v.index_select(0, jj), filt, env[part], unit[part], scale, hidden
                )
                ds.index_add_(0, i[part], a)
                dv.index_add_(0, i[part], b)
        ctx.save_for_backward(phi, v, rbf, env, unit, weight, bias, i, j)
        ctx.scale, ctx.hidden = scale, hidden
        return ds, dv

    @staticmethod
    def backward(ctx, g_ds, g_dv):
        # The derivatives of _messages written out (rather than autograd through a recomputed chunk): the chunk's
        # forward products are needed anyway, and a graph per chunk cost more than the arithmetic.
        phi, v, rbf, env, unit, weight, bias, i, j = ctx.saved_tensors
        need = ctx.needs_input_grad
        f, scale = ctx.hidden, ctx.scale
        g_phi, g_v, g_rbf, g_env, g_unit, g_w, g_b = (
            torch.zeros_like(t) if wanted else None
            for t, wanted in zip((phi, v, rbf, env, unit, weight, bias), need[:7], strict=True)
        )
        for start in range(0, i.shape[0], _EDGE_CHUNK):
            part = slice(start, start + _EDGE_CHUNK)
            ii, jj = i[part], j[part]
            gs, gv = g_ds.index_select(0, ii), g_dv.index_select(0, ii)  # (E, F), (E, 3, F)
            phi_j, v_j, u = phi.index_select(0, jj), v.index_select(0, jj), unit[part]
            filt = torch.nn.functional.linear(rbf[part], weight, bias)  # (E, 3F)
            ew = (env[part] * scale).unsqueeze(-1)
            pf = phi_j * filt
            b, c = (pf[:, f:] * ew).split(f, dim=-1)  # the vector messages' factors (the scalar part is not needed)
            # messages: a = x₁, vector b ⊗ v_j + c ⊗ unit, with x = φ_j · filter · envelope · scale
            g_x = torch.cat([gs, (gv * v_j).sum(1), (gv * u.unsqueeze(-1)).sum(1)], dim=-1)
            if g_v is not None:
                g_v.index_add_(0, jj, b.unsqueeze(1) * gv)
            if g_unit is not None:
                g_unit[part] = (gv * c.unsqueeze(1)).sum(-1)
            if g_env is not None:
                g_env[part] = (g_x * pf).sum(-1) * scale
            g_xe = g_x * ew
            if g_phi is not None:
                g_phi.index_add_(0, jj, g_xe * filt)
            if g_rbf is not None or g_w is not None or g_b is not None:
                g_filt = g_xe * phi_j
                if g_rbf is not None:
                    g_rbf[part] = g_filt @ weight
                if g_w is not None:
                    g_w += g_filt.T @ rbf[part]
                if g_b is not None:
                    g_b += g_filt.sum(0)
        return g_phi, g_v, g_rbf, g_env, g_unit, g_w, g_b, None, None, None, None


class LocalEquivariantNet(nn.Module):
    """PaiNN-style network: per-atom invariant outputs and/or one equivariant vector per atom."""

    def __init__(self, config: LocalNetConfig):
        super().__init__()
        self.config = config
        f = config.hidden
        self.embed = nn.Embedding(_MAX_Z + 1, f)
        self.blocks = nn.ModuleList([_Interaction(f, config.n_rbf) for _ in range(config.layers)])
        self.cond = (
            nn.ModuleList(
                [nn.Sequential(nn.Linear(config.n_cond, f), nn.SiLU(), nn.Linear(f, f)) for _ in range(config.layers)]
            )
            if config.n_cond
            else None
        )
        self.scalar_head = (
            nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, config.out_scalars)) if config.out_scalars else None
        )
        self.gate = nn.Sequential(nn.Linear(f, f), nn.SiLU(), nn.Linear(f, f)) if config.out_vector else None

    def forward(
        self,
        numbers: torch.Tensor,
        cart: torch.Tensor,
        graph: Graph,
        batch_idx: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(vector (n, 3) or None, scalars (n, out_scalars) or None)``.

        Args:
            numbers: ``(n,)`` atomic numbers.
            cart: ``(n, 3)`` positions (only used for its dtype; geometry comes from ``graph.vectors``).
            graph: neighbour pairs built from these positions.
            batch_idx: ``(n,)`` structure of each atom.
            cond: ``(n_structures, n_cond)`` conditioning, required when the network was built with ``n_cond``.
        """
        cfg = self.config
        if numbers.numel() and int(numbers.max()) > _MAX_Z:
            raise ValueError(f"atomic number above {_MAX_Z}")
        s = self.embed(numbers).to(cart.dtype)
        v = s.new_zeros((s.shape[0], 3, cfg.hidden))
        d = torch.sqrt((graph.vectors * graph.vectors).sum(-1) + 1e-12)
        unit = graph.vectors / d.unsqueeze(-1)
        rbf, env = radial_basis(d.clamp_min(cfg.distance_floor) if cfg.distance_floor > 0 else d, cfg.cutoff, cfg.n_rbf)
        scale = 1.0 / cfg.avg_neighbors
        for k, block in enumerate(self.blocks):
            if self.cond is not None:
                if cond is None:
                    raise ValueError("this network needs a conditioning vector")
                s = s + self.cond[k](cond.to(s.dtype))[batch_idx]
            s, v = block(s, v, graph, rbf, env, unit, scale)
        vector = None
        if self.gate is not None:
            vector = (self.gate(s).unsqueeze(1) * v).sum(-1) / math.sqrt(cfg.hidden)
        scalars = self.scalar_head(s) if self.scalar_head is not None else None
        return vector, scalars
