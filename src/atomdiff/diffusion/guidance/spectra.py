"""Spectral guidance of amorphous diffusion: steer positions towards a target XANES, G(r) or S(Q).

Each :class:`SpectrumTerm` holds a differentiable forward model (structure batch → ``(n_structures, n_points)``)
and a target curve; its misfit is the mean squared difference relative to the target's mean square, so terms
of different units can be weighted against each other. :class:`SpectralGuidance` adds the weighted misfits and,
at every sampler step, moves the denoised estimate ``x̂₀`` down the misfit gradient. Where the gradient is taken
is the ``mode``:

``tweedie`` (default)
    the forward model is evaluated on the denoised estimate ``x̂₀(x_σ)`` and differentiated with respect to
    ``x̂₀`` (the denoiser's Jacobian approximated by the identity: no back-propagation through the network, so
    the cost is one forward + backward pass of the forward model).
``dps``
    as ``tweedie`` but differentiated with respect to the noisy positions through the network (diffusion
    posterior sampling, Chung et al. 2023): exact gradient, about three times the network cost.
``noisy``
    the forward model is evaluated on the noisy positions ``x_σ`` themselves (what the XANES-guided a-C study
    did); at high noise it sees a structure with no chemistry in it.

The gradient is normalised per structure (RMS over atoms) and the step is ``strength · σ`` Å RMS: its size
follows the noise level, so one strength works at every step, for any cell size and for any target units.
A term can start late (:attr:`SpectrumTerm.sigma_start`): a learned forward model (the XANES surrogate) says
nothing useful about a high-noise estimate whose atoms still overlap, and guiding by it there made samples run
away (docs/amorphous.md).

**Domains.** A target that is a mean over atoms (XANES) can be asked of the whole cell or of every part of it.
With ``domain_atoms`` the guiding misfit is that of each domain — the cell cut into k × k × k boxes along its
fractional axes, k chosen so that a box holds about ``domain_atoms`` atoms — averaged over the domains with
their atom counts as weights. A small cell (one domain) is guided as before; a large one is guided like that many
small cells side by side. Since the squared misfit is convex, the whole cell's mean spectrum then misfits by no
more than its domains do on average. The misfit reported (:meth:`SpectralGuidance.misfits`) stays the whole
cell's. Terms without a per-atom forward model (G(r), S(Q)) are always the whole cell's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from atomdiff.diffusion.guidance.determinism import deterministic
from atomdiff.errors import InputError
from atomdiff.structure.batch import StructureBatch

MODES = ("tweedie", "dps", "noisy")
STEP_CLIP = 5.0  #: default cap of an atom's gradient, in medians of its structure (see :func:`clip_atoms`)


def relative_misfit(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the last axis divided by the target's mean square."""
    scale = (target * target).mean(-1).clamp_min(1e-12)
    return ((pred - target) ** 2).mean(-1) / scale


@dataclasses.dataclass
class SpectrumTerm:
    """One target curve and the forward model that predicts it.

    Attributes:
        name: label (``xanes``, ``pdf``, ``sq`` ...).
        forward: structure batch → ``(n_structures, n_points)``, differentiable with respect to ``batch.frac``.
        target: ``(n_points,)`` (same for every structure) or ``(n_structures, n_points)``.
        weight: weight of this term's relative misfit.
        per_atom: batch → ``(atom indices (k,), curves (k, n_points))`` when ``forward`` is the mean of these
            over each structure's atoms (XANES); lets the misfit be taken per domain.
        sigma_start: the term guides only for σ ≤ ``sigma_start`` Å (``None``: at every level) — for a learned
            forward model that is only valid on estimates that look like its training structures.
    """

    name: str
    forward: Callable[[StructureBatch], torch.Tensor]
    target: torch.Tensor
    weight: float = 1.0
    per_atom: Callable[[StructureBatch], tuple[torch.Tensor, torch.Tensor]] | None = None
    sigma_start: float | None = None

    def active(self, sigma: float) -> bool:
        return self.sigma_start is None or sigma <= self.sigma_start

    def misfit(self, batch: StructureBatch, domain_atoms: int | None = None) -> torch.Tensor:
        """``(n_structures,)`` mean squared difference divided by the target's mean square; with
        ``domain_atoms`` (and a ``per_atom`` model) the atom-weighted mean of the domains' misfits."""
        if domain_atoms is not None and self.per_atom is not None:
            return self._domain_misfit(batch, domain_atoms)
        pred = self.forward(batch)
        return relative_misfit(pred, self._target(pred))

    def _target(self, pred: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        target = self.target.to(dtype=pred.dtype, device=pred.device)
        if target.shape[-1] != pred.shape[-1]:
            raise InputError(f"{self.name} target has {target.shape[-1]} points, the forward model {pred.shape[-1]}")
        return target[rows] if target.dim() == 2 and rows is not None else target

    def _domain_misfit(self, batch: StructureBatch, domain_atoms: int) -> torch.Tensor:
        atoms, curves = self.per_atom(batch)
        domain, structure_of = spatial_domains(batch, atoms, domain_atoms)
        n_domains = len(structure_of)
        count = torch.bincount(domain, minlength=n_domains).to(curves.dtype)
        mean = curves.new_zeros((n_domains, curves.shape[-1])).index_add(0, domain, curves)
        mean = mean / count.clamp_min(1).unsqueeze(-1)
        per_domain = relative_misfit(mean, self._target(mean, structure_of))
        total = curves.new_zeros(len(batch)).index_add(0, structure_of, count)  # atoms of each structure
        return curves.new_zeros(len(batch)).index_add(0, structure_of, per_domain * count / total[structure_of])


def _check_domain(domain_atoms: int) -> None:
    if domain_atoms < 1:
        raise InputError(f"a guidance domain must hold at least one atom, got {domain_atoms}")


def spatial_domains(batch: StructureBatch, atoms: torch.Tensor, domain_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain of each of ``atoms`` and the structure of each domain: structure ``s`` with ``n`` of them is cut
    into ``k³`` equal boxes along its fractional axes, ``k = max(1, round((n / domain_atoms)^⅓))`` (empty boxes
    get an index and no atoms)."""
    _check_domain(domain_atoms)
    owner = batch.batch_idx[atoms]
    n = torch.bincount(owner, minlength=len(batch)).double()
    k = torch.clamp(torch.round((n / domain_atoms) ** (1.0 / 3.0)), min=1).long()  # (n_structures,)
    frac = batch.frac[atoms].detach()
    ko = k[owner]
    box = torch.minimum(torch.floor((frac - torch.floor(frac)) * ko.unsqueeze(-1)).long(), ko.unsqueeze(-1) - 1)
    local = (box[:, 0] * ko + box[:, 1]) * ko + box[:, 2]
    offset = torch.cumsum(k**3, 0) - k**3
    structure_of = torch.repeat_interleave(torch.arange(len(batch), device=k.device), k**3)
    return offset[owner] + local, structure_of


class SpectralGuidance:
    """Weighted sum of spectral misfits, applied to the denoised estimate at each sampler step.

    Args:
        terms: the targets.
        strength: RMS step per atom in units of the current noise level σ (0 switches guidance off).
        mode: ``tweedie``, ``dps`` or ``noisy`` (see the module docstring).
        sigma_start: guidance acts for σ ≤ ``sigma_start`` Å (``None``: at every level).
        domain_atoms: guide per-atom targets per domain of about this many atoms (``None``: the whole cell).
        step_clip: no atom's gradient counts for more than this many times the structure's median atom
            (``None``: unclipped), see :func:`clip_atoms`.
    """

    def __init__(
        self,
        terms: list[SpectrumTerm],
        strength: float = 1.0,
        mode: str = "tweedie",
        sigma_start: float | None = None,
        domain_atoms: int | None = None,
        step_clip: float | None = STEP_CLIP,
    ):
        if not terms:
            raise InputError("guidance needs at least one target")
        if mode not in MODES:
            raise InputError(f"guidance mode must be one of {', '.join(MODES)}, got {mode!r}")
        if strength < 0:
            raise InputError(f"guidance strength must not be negative, got {strength}")
        self.terms = list(terms)
        self.strength = float(strength)
        self.mode = mode
        self.sigma_start = sigma_start
        if domain_atoms is not None:
            _check_domain(domain_atoms)
        self.domain_atoms = domain_atoms
        if step_clip is not None and step_clip <= 0:
            raise InputError(f"the guidance step clip must be positive, got {step_clip}")
        self.step_clip = step_clip
        self.history: list[tuple[float, list[float]]] = []  # (σ, misfit per structure) at each guided step

    def active(self, sigma: float) -> bool:
        started = self.sigma_start is None or sigma <= self.sigma_start
        return self.strength > 0 and started and any(term.active(sigma) for term in self.terms)

    def misfit(self, batch: StructureBatch, sigma: float | None = None) -> torch.Tensor:
        """``(n_structures,)`` weighted sum of the relative misfits of the terms (those active at ``sigma``, all
        when ``None``), as guidance descends it (per domain where :attr:`domain_atoms` is set)."""
        terms = [term for term in self.terms if sigma is None or term.active(sigma)]
        return sum(term.weight * term.misfit(batch, self.domain_atoms) for term in terms)

    def misfits(self, batch: StructureBatch) -> dict[str, torch.Tensor]:
        """Each term's relative misfit, ``{name: (n_structures,)}``."""
        with torch.no_grad():
            return {term.name: term.misfit(batch) for term in self.terms}

    def guide(
        self, model, batch: StructureBatch, x: torch.Tensor, sigma: torch.Tensor, scale: float = 1.0
    ) -> torch.Tensor:
        """Denoised estimate of positions ``x`` at noise ``sigma`` (per structure), moved down the misfit by
        ``scale · strength · σ`` Å RMS per atom."""
        modules = [model, *(t.forward for t in self.terms if isinstance(t.forward, nn.Module))]
        with deterministic(), _frozen(modules):
            x0, loss, grad = self._gradient(model, batch, x, sigma)
        self.history.append((float(sigma[0]), [float(v) for v in loss.detach()]))
        grad = clip_atoms(torch.nan_to_num(grad.detach()), batch.batch_idx, len(batch), self.step_clip)
        n = len(batch)
        sq = torch.zeros(n, dtype=grad.dtype, device=grad.device).index_add(0, batch.batch_idx, (grad * grad).sum(-1))
        count = torch.bincount(batch.batch_idx, minlength=n).clamp_min(1).to(grad.dtype)
        rms = torch.sqrt(sq / count).clamp_min(1e-30)
        step = (scale * self.strength * sigma.to(grad.dtype) / rms)[batch.batch_idx].unsqueeze(-1)
        return x0 - step * grad

    def _gradient(self, model, batch: StructureBatch, x: torch.Tensor, sigma: torch.Tensor):
        """``(x̂₀, misfit per structure, gradient of the misfit)`` where :attr:`mode` takes the gradient."""
        from atomdiff.diffusion.amorphous import with_positions

        if self.mode == "dps":
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                x0 = model.denoise(batch, xg, sigma)
                loss = self.misfit(with_positions(batch, x0), float(sigma.max()))
                (grad,) = torch.autograd.grad(loss.sum(), xg)
            x0 = x0.detach()
        else:
            with torch.no_grad():
                x0 = model.denoise(batch, x, sigma)
            with torch.enable_grad():
                at = (x0 if self.mode == "tweedie" else x).detach().requires_grad_(True)
                loss = self.misfit(with_positions(batch, at), float(sigma.max()))
                (grad,) = torch.autograd.grad(loss.sum(), at)
        return x0, loss, grad


def clip_atoms(grad: torch.Tensor, batch_idx: torch.Tensor, n_structures: int, clip: float | None) -> torch.Tensor:
    """``grad`` ``(n_atoms, 3)`` with every atom's norm capped at ``clip`` times the median norm of its structure.

    The step is normalised by the RMS over atoms, and a learned forward model's gradient is heavy-tailed: on the
    denoised estimate of a large cell a few atoms in odd places (pairs near the surrogate's distance floor) have
    gradients 10³–10⁶ times the median one, carry nearly all of the RMS, and would take the whole step while
    every other atom stands still (measured, docs/amorphous.md "Clipped guidance steps").
    """
    if clip is None or grad.numel() == 0:
        return grad
    norm = torch.linalg.vector_norm(grad, dim=-1)
    cap = torch.zeros(n_structures, dtype=grad.dtype, device=grad.device)
    for s in range(n_structures):
        own = norm[batch_idx == s]
        median = own.median() if own.numel() else own.new_zeros(())
        cap[s] = clip * median if median > 0 else torch.inf  # a structure of (mostly) zero gradients: no cap
    limit = cap[batch_idx]
    factor = torch.where(norm > limit, limit / norm.clamp_min(1e-30), torch.ones_like(norm))
    return grad * factor.unsqueeze(-1)


@contextmanager
def _frozen(modules: list[nn.Module]) -> Iterator[None]:
    """Parameters that need no gradient for the duration of a block (restored afterwards).

    Guidance differentiates with respect to positions only, but a custom autograd function (the recomputed
    messages of :mod:`atomdiff.models.local`) computes the gradient of every input that requires one, its
    filter weights included, which is wasted work (a one-off timing of a 16,000-atom cell: 9.6 → 8.6 s per
    guided step on one thread; ``benchmarks/bench_amorphous.py`` shows no clear gain, docs/amorphous.md).
    """
    params = [p for m in modules for p in m.parameters()]
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, previous, strict=True):
            p.requires_grad_(flag)
