"""Amorphous (position) diffusion: training loss, reproducible sampling inside the cell, the density cell,
overlap removal, and spectral guidance lowering the misfit to a target in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.diffusion.amorphous import (
    AmorphousDiffusion,
    SampleOptions,
    density_cell,
    mass_density,
    separate,
    with_positions,
    wrap,
)
from atomdiff.diffusion.guidance.spectra import (
    SpectralGuidance,
    SpectrumTerm,
    clip_atoms,
    relative_misfit,
    spatial_domains,
)
from atomdiff.errors import InputError
from atomdiff.models.local import LocalNetConfig
from atomdiff.physics.descriptors import min_distance
from atomdiff.physics.total_scattering import PDFForwardModel
from atomdiff.structure import Structure, StructureBatch


def _model(seed: int = 0) -> AmorphousDiffusion:
    torch.manual_seed(seed)
    return AmorphousDiffusion(LocalNetConfig(hidden=16, layers=2, cutoff=3.0), elements=[6]).eval()


def _template(n: int = 40, density: float = 2.0, copies: int = 2) -> StructureBatch:
    cell = density_cell(np.full(n, 6), density)
    s = Structure(np.full(n, 6), np.zeros((n, 3)), cell)
    return StructureBatch.from_structures([s] * copies, dtype=torch.float32)


def _reference(n: int = 40, density: float = 2.0, seed: int = 3) -> Structure:
    """A random cell with no pair closer than 1.3 Å (random sequential addition)."""
    rng = np.random.default_rng(seed)
    cell = density_cell(np.full(n, 6), density)
    frac: list[np.ndarray] = []
    while len(frac) < n:
        f = rng.random(3)
        d = np.array(frac) - f if frac else np.zeros((0, 3))
        d -= np.round(d)
        if not len(frac) or np.linalg.norm(d @ cell, axis=1).min() > 1.3:
            frac.append(f)
    return Structure(np.full(n, 6), np.array(frac), cell)


def test_density_cell_and_mass_density_agree():
    cell = density_cell(np.full(216, 6), 2.5)
    s = Structure(np.full(216, 6), np.random.default_rng(0).random((216, 3)), cell)
    assert s.density == pytest.approx(2.5, rel=1e-9)
    assert float(mass_density(StructureBatch.from_structures([s]))[0]) == pytest.approx(2.5, rel=1e-9)
    with pytest.raises(InputError, match="density"):
        density_cell(np.full(4, 6), 0.0)


def test_loss_is_finite_and_training_lowers_it():
    model = AmorphousDiffusion(LocalNetConfig(hidden=16, layers=2, cutoff=3.0))
    batch = StructureBatch.from_structures([_reference()] * 4, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def mean_loss(seed: int) -> float:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return float(np.mean([float(model.loss(batch, g)["loss"]) for _ in range(8)]))

    before = mean_loss(123)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = model.loss(batch, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(before)
    assert mean_loss(123) < before


def test_sampling_is_reproducible_and_stays_in_the_cell():
    model, template = _model(), _template()
    opts = SampleOptions(steps=6)
    a = model.sample(template, opts, torch.Generator().manual_seed(5))
    b = model.sample(template, opts, torch.Generator().manual_seed(5))
    c = model.sample(template, opts, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    frac = with_positions(template, a).frac
    assert bool(((frac >= -1e-5) & (frac < 1 + 1e-5)).all())
    ode = model.sample(
        template, SampleOptions(steps=6, sampler="ode", restarts=1, restart_steps=3), torch.Generator().manual_seed(5)
    )
    assert ode.shape == a.shape and torch.isfinite(ode).all()


def test_generate_returns_structures_of_the_template():
    model, template = _model(), _template(copies=3)
    calls = []
    out = model.generate(
        template, SampleOptions(steps=4), torch.Generator().manual_seed(0), progress=lambda k, n: calls.append((k, n))
    )
    assert len(out) == 3 and all(len(s) == 40 for s in out)
    assert calls[-1] == (4, 4)
    np.testing.assert_allclose(out[0].cell, template.cell[0].numpy(), atol=1e-6)


def test_finish_iterates_the_denoiser_at_the_finish_level():
    """``finish_steps`` k equals k applications of ``x ← x̂₀(x, finish_sigma)`` (wrapped into the cell) to the
    sample without a finish, and counts in the progress total."""
    model, template = _model(), _template()
    plain = model.sample(template, SampleOptions(steps=5), torch.Generator().manual_seed(2))
    calls = []
    finished = model.sample(
        template,
        SampleOptions(steps=5, finish_steps=3, finish_sigma=0.2),
        torch.Generator().manual_seed(2),
        progress=lambda k, n: calls.append((k, n)),
    )
    x = plain
    with torch.no_grad():
        for _ in range(3):
            x = wrap(template, model.denoise(template, x, torch.full((len(template),), 0.2)))
    torch.testing.assert_close(finished, x, atol=1e-5, rtol=0)
    assert not torch.allclose(finished, plain)
    assert calls[-1] == (8, 8)


def test_separate_pushes_close_pairs_apart():
    s = _reference()
    frac = s.frac.copy()
    frac[1] = frac[0] + np.array([0.3, 0.0, 0.0]) / s.cell[0, 0]  # 0.3 Å from atom 0
    s = s.replace(frac=frac)
    batch = StructureBatch.from_structures([s], dtype=torch.float64)
    moved = separate(batch, batch.cart, 1.0)
    out = s.replace(frac=with_positions(batch, moved).frac.numpy())
    assert min_distance(out) > 0.98


def test_sample_options_are_checked():
    with pytest.raises(InputError, match="sampler"):
        SampleOptions(sampler="euler").validate()
    with pytest.raises(InputError, match="steps"):
        SampleOptions(steps=0).validate()
    with pytest.raises(InputError, match="finish"):
        SampleOptions(finish_steps=-1).validate()
    with pytest.raises(InputError, match="finish"):
        SampleOptions(finish_sigma=0.0).validate()
    with pytest.raises(InputError, match="finish"):
        SampleOptions(finish_guidance=-0.1).validate()


def _pdf_term() -> SpectrumTerm:
    """G(r) misfit term whose target is the G(r) of :func:`_reference`."""
    pdf = PDFForwardModel(np.linspace(0.5, 6.0, 111), sigma=0.1)
    with torch.no_grad():
        target = pdf(StructureBatch.from_structures([_reference()], dtype=torch.float32)).y[0]
    return SpectrumTerm("pdf", lambda b: pdf(b).y, target)


@pytest.mark.parametrize("mode", ["tweedie", "dps", "noisy"])
def test_pdf_guidance_lowers_the_misfit(mode):
    """Same seed, same prior: the guided sample fits the target G(r) better than the unguided one."""
    term = _pdf_term()
    model, template = _model(), _template(copies=2)
    opts = SampleOptions(steps=20)
    free = model.sample(template, opts, torch.Generator().manual_seed(1))
    guidance = SpectralGuidance([term], strength=1.0, mode=mode)
    guided = model.sample(template, opts, torch.Generator().manual_seed(1), guidance=guidance)
    with torch.no_grad():
        m_free = term.misfit(with_positions(template, free))
        m_guided = term.misfit(with_positions(template, guided))
    assert bool((m_guided < 0.7 * m_free).all()), (m_free, m_guided)
    assert len(guidance.history) == 20


def test_finish_is_guided_by_the_given_fraction_of_the_strength():
    """``finish_guidance`` 0 finishes with the prior alone; a positive fraction guides each finish iteration
    (one more guided step per iteration, at the finish level)."""
    term = _pdf_term()
    model, template = _model(), _template(copies=2)
    finished, history = {}, {}
    for fraction in (0.0, 1.0):
        guidance = SpectralGuidance([term], strength=1.0)
        opts = SampleOptions(steps=10, finish_steps=5, finish_sigma=0.1, finish_guidance=fraction)
        finished[fraction] = model.sample(template, opts, torch.Generator().manual_seed(1), guidance=guidance)
        history[fraction] = [s for s, _ in guidance.history]
    assert len(history[0.0]) == 10 and len(history[1.0]) == 15
    assert history[1.0][10:] == pytest.approx([0.1] * 5)
    assert not torch.allclose(finished[0.0], finished[1.0])


def test_guidance_rejects_bad_settings():
    term = SpectrumTerm("x", lambda b: torch.zeros(len(b), 3), torch.zeros(3))
    with pytest.raises(InputError, match="mode"):
        SpectralGuidance([term], mode="posterior")
    with pytest.raises(InputError, match="target"):
        SpectralGuidance([])
    bad = SpectrumTerm("x", lambda b: torch.zeros(len(b), 3), torch.zeros(4))
    with pytest.raises(InputError, match="points"):
        bad.misfit(_template())


def _grid_cell(n: int = 4, a: float = 8.0) -> StructureBatch:
    """``n³`` carbon atoms on a simple-cubic grid (cell edge ``a``), shifted off the domain walls."""
    frac = (np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.25) / n
    return StructureBatch.from_structures([Structure(np.full(n**3, 6), frac, np.eye(3) * a)], dtype=torch.float64)


def _position_term() -> SpectrumTerm:
    """A per-atom "spectrum" (x, y, 1) of fractional coordinates, averaged over the cell by ``forward``."""

    def per_atom(batch: StructureBatch) -> tuple[torch.Tensor, torch.Tensor]:
        curves = torch.cat([batch.frac[:, :2], torch.ones_like(batch.frac[:, :1])], -1)
        return torch.arange(len(batch.frac)), curves

    def forward(batch: StructureBatch) -> torch.Tensor:
        _, curves = per_atom(batch)
        return torch.zeros(len(batch), 3, dtype=curves.dtype).index_add(0, batch.batch_idx, curves) / batch.n_atoms[
            :, None
        ].to(curves.dtype)

    return SpectrumTerm("xy", forward, torch.tensor([0.4375, 0.4375, 1.0], dtype=torch.float64), per_atom=per_atom)


def test_spatial_domains_cut_a_cell_into_boxes_of_about_the_asked_size():
    batch = _grid_cell(4)
    atoms = torch.arange(64)
    domain, owner = spatial_domains(batch, atoms, 8)  # 64 atoms / 8 → 2 × 2 × 2 boxes
    assert owner.tolist() == [0] * 8
    assert torch.bincount(domain, minlength=8).tolist() == [8] * 8
    frac = batch.frac.numpy()
    for d in range(8):  # a box is one half along each axis
        inside = frac[(domain == d).numpy()]
        assert np.ptp(np.floor(inside * 2), axis=0).max() == 0
    assert spatial_domains(batch, atoms, 64)[1].tolist() == [0]  # one box when the cell is about the domain size
    with pytest.raises(InputError, match="domain"):
        spatial_domains(batch, atoms, 0)


def test_domain_misfit_averages_the_domains_and_bounds_the_whole_cell():
    """The cell's mean (x, y) matches the target (0.4375, 0.4375) exactly, its halves do not: the whole-cell misfit
    is zero, the domain misfit is the atom-weighted mean of the boxes' misfits, computed here by hand."""
    batch, term = _grid_cell(4), _position_term()
    assert float(term.misfit(batch)[0]) == pytest.approx(0.0, abs=1e-12)
    domain, _ = spatial_domains(batch, torch.arange(64), 8)
    _, curves = term.per_atom(batch)
    by_hand = sum(
        relative_misfit(curves[domain == d].mean(0), term.target) * float((domain == d).sum()) / 64 for d in range(8)
    )
    assert float(term.misfit(batch, 8)[0]) == pytest.approx(float(by_hand), rel=1e-10)
    assert float(by_hand) > 0.01
    assert float(term.misfit(batch, 64)[0]) == pytest.approx(0.0, abs=1e-12)
    guidance = SpectralGuidance([term], domain_atoms=8)
    assert float(guidance.misfit(batch)[0]) == pytest.approx(float(by_hand), rel=1e-10)  # what guidance descends
    assert float(guidance.misfits(batch)["xy"][0]) == pytest.approx(0.0, abs=1e-12)  # what it reports
    with pytest.raises(InputError, match="domain"):
        SpectralGuidance([term], domain_atoms=0)


def test_model_round_trips_through_safetensors(tmp_path):
    model = _model()
    model.save(tmp_path / "m")
    loaded = AmorphousDiffusion.load(tmp_path / "m")
    template = _template()
    opts = SampleOptions(steps=3)
    a = model.sample(template, opts, torch.Generator().manual_seed(2))
    b = loaded.sample(template, opts, torch.Generator().manual_seed(2))
    assert torch.allclose(a, b)
    assert loaded.elements == [6]


def test_denoiser_moves_are_bounded_outside_training_only():
    model = _model()
    batch = _template(copies=1)
    sigma = torch.tensor([0.05])

    def wild(numbers, cart, graph, batch_idx, cond):
        out = torch.full_like(cart, 1e6)
        out[0] = float("nan")
        return out, None

    model.net.forward = wild
    model.eval()
    moved = model.denoise(batch, batch.cart, sigma) - batch.cart
    assert torch.isfinite(moved).all()
    assert torch.equal(moved[0], torch.zeros(3))  # a non-finite move is no move
    np.testing.assert_allclose(moved[1:].norm(dim=-1).numpy(), 1.0, rtol=1e-6)  # max(6σ, 1 Å) = 1 Å
    model.train()
    assert (model.denoise(batch, batch.cart, sigma) - batch.cart)[1:].abs().min() > 1e3  # training sees the truth


def test_guided_sampling_is_the_same_on_two_threads():
    from atomdiff.weights import load_amorphous_model, load_xanes_surrogate

    model, surrogate = load_amorphous_model("amorphous_carbon"), load_xanes_surrogate("xanes_carbon_k")
    batch = StructureBatch.from_structures(
        [Structure(np.full(216, 6), np.zeros((216, 3)), density_cell(np.full(216, 6), 3.5))], dtype=torch.float32
    )
    guidance = SpectralGuidance([SpectrumTerm("xanes", surrogate, torch.as_tensor(surrogate.mean))])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [
            model.sample(batch, SampleOptions(steps=40, min_distance=1.1), torch.Generator().manual_seed(0), guidance)
            for _ in range(2)
        ]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0], runs[1])


def test_shipped_surrogate_is_finite_on_a_denoised_estimate_with_overlapping_atoms():
    """At high noise the denoised estimate has pairs far closer than any a-C bond; without its distance floor the
    shipped surrogate overflows to inf/NaN there (and guidance took a random or no step), with it it is finite."""
    import dataclasses

    from atomdiff.weights import load_xanes_surrogate

    surrogate = load_xanes_surrogate("xanes_carbon_k")
    assert surrogate.net_config.distance_floor > 0.8
    rng = np.random.default_rng(0)
    gas = Structure(np.full(216, 6), rng.random((216, 3)), density_cell(np.full(216, 6), 2.5))
    assert min_distance(gas) < 0.4
    batch = StructureBatch.from_structures([gas], dtype=torch.float32)
    with torch.no_grad():
        assert torch.isfinite(surrogate(batch)).all()
        surrogate.net.config = dataclasses.replace(surrogate.net_config, distance_floor=0.0)
        assert not torch.isfinite(surrogate(batch)).all()


def test_a_term_guides_only_below_its_start():
    import dataclasses

    batch = _grid_cell()
    target = torch.tensor([0.3, 0.5, 1.0], dtype=torch.float64)
    late = dataclasses.replace(_position_term(), name="late", target=target, sigma_start=0.5)
    always = dataclasses.replace(_position_term(), name="always", target=target, weight=2.0)
    m_late, m_always = late.misfit(batch), always.misfit(batch)
    assert float(m_late) > 0
    guidance = SpectralGuidance([late, always])
    torch.testing.assert_close(guidance.misfit(batch, 1.0), 2 * m_always)
    torch.testing.assert_close(guidance.misfit(batch, 0.5), m_late + 2 * m_always)
    torch.testing.assert_close(guidance.misfit(batch), m_late + 2 * m_always)
    assert guidance.active(1.0) and not SpectralGuidance([late]).active(0.6) and SpectralGuidance([late]).active(0.5)


def test_a_guided_step_is_scale_times_strength_times_sigma():
    """The step a guided level takes is ``scale · strength · σ`` Å RMS per atom (``scale``: e.g. the finish's
    fraction of the strength), whatever the misfit's units."""
    model, template = _model(), _template(copies=1)
    x = model.noise.sample_prior(template.cell, template.batch_idx, torch.Generator().manual_seed(2))
    sigma = torch.full((1,), 0.2)
    guidance = SpectralGuidance([_pdf_term()], strength=1.0)
    with torch.no_grad():
        x0 = model.denoise(template, x, sigma)
    for scale in (1.0, 3.0):
        moved = guidance.guide(model, template, x, sigma, scale) - x0
        rms = float(torch.sqrt((moved * moved).sum(-1).mean()))
        assert rms == pytest.approx(0.2 * scale, rel=1e-4)


def test_clip_atoms_caps_each_atom_at_a_multiple_of_its_structures_median():
    """Structure 0 has one atom 1000× its median: capped at 5 medians; structure 1's atoms are all within 5
    medians of its own (larger) median and stay; a structure whose median gradient is zero is not touched."""
    direction = torch.tensor([0.6, 0.0, 0.8])
    norms = torch.tensor([1.0, 1.0, 1.0, 1.0, 1000.0, 2.0, 2.0, 2.0, 2.0, 9.0, 0.0, 0.0, 0.0, 0.0, 7.0])
    grad = norms.unsqueeze(-1) * direction
    batch_idx = torch.arange(3).repeat_interleave(5)
    clipped = clip_atoms(grad, batch_idx, 3, 5.0)
    got = torch.linalg.vector_norm(clipped, dim=-1)
    expected = norms.clone()
    expected[4] = 5.0
    assert torch.allclose(got, expected)
    assert torch.allclose(clipped[4] / got[4], direction)  # capped, not turned
    assert torch.equal(clip_atoms(grad, batch_idx, 3, None), grad)
    with pytest.raises(InputError, match="clip"):
        SpectralGuidance([_pdf_term()], step_clip=0.0)


def test_one_atom_with_a_huge_gradient_does_not_take_the_whole_step():
    """A misfit that one atom dominates (its coordinate weighted 10⁴×): unclipped, that atom takes nearly the
    whole ``strength · σ`` RMS step and the others barely move; clipped, every other atom moves a fair share
    and the RMS step is unchanged."""
    model, template = _model(), _template(copies=1)
    x = model.noise.sample_prior(template.cell, template.batch_idx, torch.Generator().manual_seed(2))
    sigma = torch.full((1,), 0.2)
    weights = torch.ones(len(x))
    weights[0] = 1e4

    def lopsided(b: StructureBatch) -> torch.Tensor:
        return (b.cart.sum(-1) * weights).sum().reshape(1, 1) / len(weights)

    term = SpectrumTerm("toy", lopsided, torch.ones(1))
    with torch.no_grad():
        x0 = model.denoise(template, x, sigma)
    moved = {}
    for clip in (None, 5.0):
        step = SpectralGuidance([term], strength=1.0, step_clip=clip).guide(model, template, x, sigma) - x0
        assert float(torch.sqrt((step * step).sum(-1).mean())) == pytest.approx(0.2, rel=1e-4)
        moved[clip] = torch.linalg.vector_norm(step, dim=-1)
    assert float(moved[None][1:].max()) < 0.01
    assert float(moved[5.0][1:].median()) > 0.05
    assert float(moved[5.0][0]) == pytest.approx(5 * float(moved[5.0][1:].median()), rel=1e-3)
