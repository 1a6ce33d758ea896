"""Reverse Monte Carlo (RMC) against a reduced PDF G(r): the classic baseline for disordered structures.

Plain RMC as McGreevy & Pusztai (1988) introduced it: move one atom at a time by a random displacement, refuse
moves that bring two atoms closer than a closest approach, and accept a move with probability
``min(1, exp(−Δχ²/2))`` where ``χ² = Σ_k (G(r_k) − G_target(r_k))² / σ²``. Nothing but the data and the
closest approach constrains the structure, which is what makes it a baseline: the fit can be excellent while
the local chemistry is not (1- and 5-fold carbon, three-membered rings).

G(r) is :class:`~atomdiff.physics.total_scattering.PDFForwardModel` applied to a weighted histogram of pair
distances (:meth:`~atomdiff.physics.total_scattering.PDFForwardModel.histogram_operator`), kept up to date one
atom at a time: a move changes the distances of one atom to all others (and their periodic images), so a step
costs O(N) instead of the O(N²) of recomputing G(r). Written here because fullrmc 4.1, the Python RMC package,
does not import on Python 3.11 (its dependency pdbparser imports the removed ``parser`` module) and RMCProfile is
not a Python package; the incremental G(r) is tested against the forward model.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from atomdiff.errors import InputError
from atomdiff.physics.total_scattering import PDFForwardModel
from atomdiff.structure.structure import Structure

_RESYNC_EVERY = 20_000  # accepted moves between exact recomputations of the histogram (rounding drift)


@dataclasses.dataclass
class RMCStatus:
    """Where a run stands: proposals tried, moves accepted, fit ``Rw`` and seconds spent in :meth:`run` so far."""

    proposed: int
    accepted: int
    rw: float
    seconds: float

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class PDFReverseMonteCarlo:
    """Reverse Monte Carlo of a periodic cell (fixed cell, fixed atoms) against a target G(r).

    Args:
        structure: the starting cell (positions are moved, species and cell kept).
        model: the forward model whose grid ``model.r`` the target lives on.
        target: ``(n_r,)`` G(r) to fit (Å⁻²).
        sigma: the χ² width in units of G (Å⁻²): smaller fits harder and accepts fewer uphill moves.
        closest: closest approach (Å) enforced on every pair; the start must already satisfy it.
        max_step: largest displacement of a move (Å; uniform in a ball).
        bin_width: histogram spacing (Å); a pair is shared linearly between the two nearest grid distances, an
            error of order ``(bin_width / model.sigma)²``.
        seed: the moves' random stream (same seed, same structure).
    """

    def __init__(
        self,
        structure: Structure,
        model: PDFForwardModel,
        target: np.ndarray,
        sigma: float,
        closest: float = 0.0,
        max_step: float = 0.2,
        bin_width: float = 0.005,
        seed: int = 0,
    ):
        target = np.asarray(target, dtype=np.float64)
        if target.shape != tuple(model.r.shape):
            raise InputError(f"the target has {target.size} points; the forward model's grid has {model.r.numel()}")
        if not np.isfinite(target).all():
            raise InputError("the target G(r) has non-finite values")
        if not sigma > 0 or not max_step > 0 or not bin_width > 0 or closest < 0:
            raise InputError(
                f"need sigma > 0, max_step > 0, bin_width > 0 and closest >= 0; got sigma={sigma}, "
                f"max_step={max_step}, bin_width={bin_width}, closest={closest}"
            )
        if len(structure) < 2:
            raise InputError("reverse Monte Carlo needs at least two atoms")
        self.structure0, self.target = structure, target
        self.sigma, self.closest = float(sigma), float(closest)
        self.max_step, self.bin_width = float(max_step), float(bin_width)
        self.cell = np.asarray(structure.cell, dtype=np.float64)
        self.frac = np.mod(np.asarray(structure.frac, dtype=np.float64), 1.0)
        self.weights = model.atom_weights(structure.numbers)
        self.cutoff = model.histogram_range
        self.n_bins = int(math.ceil(self.cutoff / bin_width)) + 2
        volume = abs(float(np.linalg.det(self.cell)))
        self.op, self.baseline = model.histogram_operator(np.arange(self.n_bins) * bin_width, len(structure), volume)
        self.shifts = self._image_shifts()
        self.shift_cart = self.shifts @ self.cell
        self.shift_sq = np.einsum("sk,sk->s", self.shift_cart, self.shift_cart)[None, :]
        self.rng = np.random.default_rng(seed)
        self.status = RMCStatus(0, 0, math.nan, 0.0)
        self._since_sync = 0
        self._sync()
        if self.closest > 0 and self._shortest() < self.closest:
            raise InputError(
                f"the starting cell has atoms {self._shortest():.3f} Å apart, closer than the closest approach "
                f"{self.closest} Å"
            )

    def _image_shifts(self) -> np.ndarray:
        """Integer lattice translations that can bring a minimum-image pair within the cutoff."""
        faces = np.cross(self.cell[[1, 2, 0]], self.cell[[2, 0, 1]])  # a = b × c etc.: heights are V / |face|
        heights = abs(np.linalg.det(self.cell)) / np.linalg.norm(faces, axis=1)
        reach = np.floor(self.cutoff / heights + 0.5).astype(int)
        axes = [np.arange(-m, m + 1) for m in reach]
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)

    def _distances(self, frac_i: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Å) from an atom at ``frac_i`` to every other atom's images within the cutoff, and the partner."""
        df = self.frac - frac_i
        df -= np.round(df)
        vec = df @ self.cell
        # |v + t|² = |v|² + 2 v·t + |t|² for every atom v and image translation t: one small matrix product
        d2 = np.einsum("nk,nk->n", vec, vec)[:, None] + 2.0 * (vec @ self.shift_cart.T) + self.shift_sq
        d2[i] = np.inf  # the atom's own images do not move relative to it
        near = d2 < self.cutoff**2
        return np.sqrt(np.maximum(d2[near], 0.0)), np.nonzero(near)[0]

    def _histogram(self, d: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Each pair's weight shared between the two nearest bin centres in proportion to its distance (linear
        interpolation: the binning error is second order in the bin width)."""
        x = d / self.bin_width
        k = x.astype(np.int64)
        t = x - k
        return np.bincount(k, weights=w * (1.0 - t), minlength=self.n_bins) + np.bincount(
            k + 1, weights=w * t, minlength=self.n_bins
        )

    def _sync(self) -> None:
        """Histogram and G(r) recomputed from scratch (each unordered pair counted twice: ordered pairs)."""
        h = np.zeros(self.n_bins)
        for i in range(len(self.frac)):
            d, j = self._distances(self.frac[i], i)
            h += self._histogram(d, self.weights[i] * self.weights[j])
        own = np.sqrt(self.shift_sq[0])
        own = own[(own > 0) & (own < self.cutoff)]
        for w in self.weights:  # an atom and its own images
            h += self._histogram(own, np.full(own.shape, w * w))
        self.hist = h
        self.g = h @ self.op - self.baseline
        self.chi2 = float(np.sum((self.g - self.target) ** 2)) / self.sigma**2
        self.status.rw = self.rw
        self._since_sync = 0

    def _shortest(self) -> float:
        return min(float(self._distances(self.frac[i], i)[0].min(initial=np.inf)) for i in range(len(self.frac)))

    @property
    def rw(self) -> float:
        """``sqrt(Σ (G − G_target)² / Σ G_target²)`` of the current cell."""
        return math.sqrt(float(np.sum((self.g - self.target) ** 2)) / max(float(np.sum(self.target**2)), 1e-300))

    @property
    def structure(self) -> Structure:
        return self.structure0.replace(frac=self.frac.copy())

    def step(self) -> bool:
        """Propose one move; returns whether it was accepted."""
        i = int(self.rng.integers(len(self.frac)))
        direction = self.rng.normal(size=3)
        move = direction / np.linalg.norm(direction) * self.max_step * self.rng.random() ** (1.0 / 3.0)
        new = np.mod(self.frac[i] + np.linalg.solve(self.cell.T, move), 1.0)
        threshold = self.rng.random()  # drawn every proposal so the stream does not depend on earlier outcomes
        self.status.proposed += 1
        d_new, j_new = self._distances(new, i)
        if self.closest > 0 and d_new.size and d_new.min() < self.closest:
            return False
        d_old, j_old = self._distances(self.frac[i], i)
        wi = 2.0 * self.weights[i]  # ordered pairs: (i, j) and (j, i)
        dh = self._histogram(d_new, wi * self.weights[j_new]) - self._histogram(d_old, wi * self.weights[j_old])
        nz = np.flatnonzero(dh)
        g = self.g + dh[nz] @ self.op[nz]
        chi2 = float(np.sum((g - self.target) ** 2)) / self.sigma**2
        if chi2 > self.chi2 and threshold >= math.exp(-0.5 * (chi2 - self.chi2)):
            return False
        self.frac[i], self.g, self.chi2 = new, g, chi2
        self.hist[nz] += dh[nz]
        self.status.accepted += 1
        self._since_sync += 1
        if self._since_sync >= _RESYNC_EVERY:
            self._sync()
        return True

    def run(
        self, proposals: int | None = None, seconds: float | None = None, until_rw: float | None = None
    ) -> RMCStatus:
        """Propose moves until ``proposals`` more were tried, ``seconds`` passed or ``Rw ≤ until_rw`` (whichever
        comes first; at least one limit is needed). Returns the status (also in ``self.status``)."""
        if proposals is None and seconds is None and until_rw is None:
            raise InputError("give a number of proposals, a time or a target Rw")
        start, done = time.perf_counter(), 0
        while True:
            if proposals is not None and done >= proposals:
                break
            if until_rw is not None and self.rw <= until_rw:
                break
            if seconds is not None and done % 64 == 0 and time.perf_counter() - start >= seconds:
                break
            self.step()
            done += 1
        self.status.seconds += time.perf_counter() - start
        self.status.rw = self.rw
        return dataclasses.replace(self.status)


def random_start(structure: Structure, closest: float, seed: int = 0, attempts: int = 10_000) -> Structure:
    """``structure``'s cell and species with positions drawn uniformly at random, no two atoms closer than
    ``closest`` Å (random sequential addition). :class:`InputError` when an atom finds no place."""
    rng = np.random.default_rng(seed)
    cell = np.asarray(structure.cell, dtype=np.float64)
    frac = np.empty((len(structure), 3))
    for k in range(len(structure)):
        for _ in range(attempts):
            f = rng.random(3)
            df = frac[:k] - f
            df -= np.round(df)
            if k == 0 or np.einsum("nk,nk->n", df @ cell, df @ cell).min() >= closest**2:
                frac[k] = f
                break
        else:
            raise InputError(f"no room for atom {k + 1} of {len(structure)} at a closest approach of {closest} Å")
    return structure.replace(frac=frac)
