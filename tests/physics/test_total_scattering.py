"""Total scattering against independent numpy references (explicit loops over lattice translations), analytic
limits, invariances, gradients, and PDFfit2 when it is installed."""

from __future__ import annotations

import math
import os

import numpy as np
import periodictable
import pytest
import torch
import xraydb
from scipy.integrate import quad

import atomdiff.physics.total_scattering as ts
from atomdiff.errors import InputError
from atomdiff.physics.total_scattering import (
    PDFForwardModel,
    ScatteringForwardModel,
    partial_rdfs,
    reduced_pdf,
    termination_kernel,
    uniform_term,
)
from atomdiff.structure import Structure, StructureBatch

SIGMA = 0.05
R_GRID = np.arange(0.01, 8.0 + 1e-9, 0.01)


# --- structures -----------------------------------------------------------------------------------------
def _rocksalt(a: float = 5.64) -> Structure:
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return Structure([11] * 4 + [17] * 4, np.vstack([fcc, fcc + [0.5, 0, 0]]), np.eye(3) * a)


def _fcc_cu(a: float = 3.615) -> Structure:
    return Structure([29] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], np.eye(3) * a)


def _cell(a, b, c, alpha, beta, gamma) -> np.ndarray:
    al, be, ga = np.radians([alpha, beta, gamma])
    cx = np.cos(be)
    cy = (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    return np.array([[a, 0, 0], [b * np.cos(ga), b * np.sin(ga), 0], [c * cx, c * cy, c * np.sqrt(1 - cx**2 - cy**2)]])


def _triclinic(seed: int = 1) -> Structure:
    rng = np.random.default_rng(seed)
    return Structure([8, 8, 8, 22, 22, 56], rng.random((6, 3)), _cell(5.1, 5.6, 6.2, 78.0, 96.0, 107.0))


def _batch(*structures: Structure) -> StructureBatch:
    return StructureBatch.from_structures(list(structures))


# --- independent references -----------------------------------------------------------------------------
def _pairs(s: Structure, cutoff: float):
    """``(i, j, d)`` for every atom pair and periodic image closer than ``cutoff``, by brute force."""
    cart = s.frac @ s.cell
    heights = 1.0 / np.linalg.norm(np.linalg.inv(s.cell).T, axis=1)
    reach = [int(np.ceil(cutoff / h)) + 1 for h in heights]
    out_i, out_j, out_d = [], [], []
    for n1 in range(-reach[0], reach[0] + 1):
        for n2 in range(-reach[1], reach[1] + 1):
            for n3 in range(-reach[2], reach[2] + 1):
                shift = n1 * s.cell[0] + n2 * s.cell[1] + n3 * s.cell[2]
                d = np.linalg.norm(cart[None, :, :] + shift - cart[:, None, :], axis=-1)
                i, j = np.nonzero((d < cutoff) & (d > 1e-9))
                out_i.append(i)
                out_j.append(j)
                out_d.append(d[i, j])
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def _weights(s: Structure, radiation: str, q: float = 0.0) -> np.ndarray:
    if radiation == "neutron":
        return np.array([periodictable.elements[int(z)].neutron.b_c for z in s.numbers])
    return np.array([float(xraydb.f0(sym, q / (4 * np.pi))[0]) for sym in s.symbols])


def _reference_pdf(s: Structure, r: np.ndarray, radiation: str, sigma: float = SIGMA) -> np.ndarray:
    i, j, d = _pairs(s, r.max() + 12 * sigma)
    w = _weights(s, radiation)
    pw = w[i] * w[j] / w.mean() ** 2
    gauss = np.exp(-((r[None, :] - d[:, None]) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    n = len(s)
    return (pw[:, None] * gauss).sum(0) / (n * r) - 4 * np.pi * r * n / s.volume


def _uniform_quad(q: float, r_max: float, win) -> float:
    """``∫_0^r_max 4πr² sin(qr)/(qr) W(r) dr`` by adaptive quadrature."""

    def integrand(x: float) -> float:
        return 4 * np.pi * x * x * np.sinc(q * x / np.pi) * float(win(np.array(x)))

    return quad(integrand, 0, r_max, limit=400, epsabs=1e-11, epsrel=1e-12)[0]


def _reference_sq(s: Structure, q: np.ndarray, radiation: str, r_max: float, window: str) -> np.ndarray:
    i, j, d = _pairs(s, r_max)
    win = (lambda x: np.sinc(x / r_max)) if window == "lorch" else (lambda x: np.ones_like(x))
    rho0 = len(s) / s.volume
    out = []
    for qq in q:
        w = _weights(s, radiation, qq)
        debye = np.sum(w[i] * w[j] / w.mean() ** 2 * np.sinc(qq * d / np.pi) * win(d)) / len(s)
        out.append(1.0 + debye - rho0 * _uniform_quad(qq, r_max, win))
    return np.array(out)


def _assert_close(ours, ref, rel: float):
    ours = ours.detach().numpy() if torch.is_tensor(ours) else ours
    np.testing.assert_allclose(ours, ref, rtol=rel, atol=rel * np.abs(ref).max())


# --- G(r) -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("radiation", ["xray", "neutron"])
@pytest.mark.parametrize("make", [_rocksalt, _triclinic])
def test_pdf_matches_brute_force(make, radiation):
    s = make()
    y = PDFForwardModel(torch.tensor(R_GRID), radiation, sigma=SIGMA)(_batch(s)).y[0]
    _assert_close(y, _reference_pdf(s, R_GRID, radiation), 1e-8)


def test_pdf_batch_equals_single_structures():
    model = PDFForwardModel(R_GRID, "xray")
    both = model(_batch(_rocksalt(), _triclinic(), _fcc_cu())).y
    for k, s in enumerate((_rocksalt(), _triclinic(), _fcc_cu())):
        torch.testing.assert_close(both[k], model(_batch(s)).y[0], rtol=1e-12, atol=1e-12)


def test_fcc_cu_first_peak_and_coordination():
    a = 3.615
    r = np.arange(0.001, 5.0, 0.001)
    g = PDFForwardModel(r, "xray", sigma=SIGMA)(_batch(_fcc_cu(a))).y[0].numpy()
    first = (r > 2.0) & (r < 3.1)
    assert abs(r[first][np.argmax(g[first])] - a / np.sqrt(2)) < 0.01
    rho0 = 4 / a**3
    rdf = r * g + 4 * np.pi * r**2 * rho0  # R(r) = 4πr²ρ(r)
    below = r < 3.1
    assert np.trapezoid(rdf[below], r[below]) == pytest.approx(12.0, abs=1e-3)
    g_cu = partial_rdfs(_batch(_fcc_cu(a)), r)[(29, 29)][0].numpy()
    assert np.trapezoid((4 * np.pi * r**2 * rho0 * g_cu)[below], r[below]) == pytest.approx(12.0, abs=1e-3)


def test_xray_equals_neutron_for_one_element():
    b = _batch(_fcc_cu())
    torch.testing.assert_close(PDFForwardModel(R_GRID, "xray")(b).y, PDFForwardModel(R_GRID, "neutron")(b).y)
    q = torch.linspace(0.5, 12.0, 40, dtype=torch.float64)
    sq_x = ScatteringForwardModel(q, "xray", r_max=10.0)(b).y
    torch.testing.assert_close(sq_x, ScatteringForwardModel(q, "neutron", r_max=10.0)(b).y)


def _rotation() -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.mark.parametrize("lorch", [None, True])
def test_pdf_invariances(lorch):
    s = _triclinic()
    kwargs = {} if lorch is None else {"qmax": 20.0, "lorch": True}
    model = PDFForwardModel(np.arange(0.05, 6.0, 0.05), "xray", **kwargs)
    ref = model(_batch(s)).y
    perm = np.random.default_rng(5).permutation(len(s))
    variants = [
        s.repeat((2, 2, 2)),
        s.replace(cell=s.cell @ _rotation().T),
        s.replace(numbers=s.numbers[perm], frac=s.frac[perm] + [1, 0, -2]),
    ]
    for other in variants:
        torch.testing.assert_close(model(_batch(other)).y, ref, rtol=1e-10, atol=1e-10)


def test_pdf_gradcheck():
    s = Structure([8, 22], [[0.1, 0.2, 0.3], [0.55, 0.45, 0.6]], _cell(3.1, 3.3, 3.6, 80.0, 95.0, 100.0))
    b = _batch(s)
    frac = b.frac.clone().requires_grad_()
    cell = b.cell.clone().requires_grad_()
    uiso = torch.tensor([0.004, 0.007], dtype=torch.float64, requires_grad=True)
    plain = PDFForwardModel([1.9, 2.4, 3.0, 3.5], "xray", sigma=0.25)
    terminated = PDFForwardModel([1.9, 2.4, 3.0], "neutron", sigma=0.3, qmax=8.0, lorch=True, qdamp=0.05)
    for model in (plain, terminated):

        def fn(f, c, u, m=model):
            return m(b.replace(frac=f, cell=c), uiso=u).y

        assert torch.autograd.gradcheck(fn, (frac, cell, uiso))


def test_chunked_evaluation_matches(monkeypatch):
    b = _batch(_triclinic())
    frac = b.frac.clone().requires_grad_()
    model = PDFForwardModel(R_GRID[::5], "xray")
    sq = ScatteringForwardModel(np.linspace(0.5, 10, 30), "xray", r_max=8.0)

    def run():
        frac.grad = None
        bb = b.replace(frac=frac)
        y = model(bb).y.pow(2).sum() + sq(bb).y.pow(2).sum()
        y.backward()
        return y.detach(), frac.grad.clone()

    y0, g0 = run()
    monkeypatch.setattr(ts, "_CHUNK_ELEMENTS", 1000)
    y1, g1 = run()
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-10)


def test_uiso_widens_pairs_like_sigma():
    s = _rocksalt()
    wide = PDFForwardModel(R_GRID, "neutron", sigma=0.1)(_batch(s)).y
    u = torch.full((len(s),), (0.1**2 - SIGMA**2) / 2, dtype=torch.float64)
    torch.testing.assert_close(PDFForwardModel(R_GRID, "neutron", sigma=SIGMA)(_batch(s), uiso=u).y, wide)


def test_qdamp_envelope():
    b = _batch(_rocksalt())
    plain = PDFForwardModel(R_GRID, "xray")(b).y
    damped = PDFForwardModel(R_GRID, "xray", qdamp=0.06)(b).y
    torch.testing.assert_close(damped, plain * torch.exp(-0.5 * (0.06 * torch.tensor(R_GRID)) ** 2))


# --- Q-range termination --------------------------------------------------------------------------------
@pytest.mark.parametrize("lorch", [False, True])
@pytest.mark.parametrize("qmin", [0.0, 1.2])
def test_termination_kernel_matches_quadrature(lorch, qmin):
    qmax = 18.0
    window = (lambda q: np.sinc(q / qmax)) if lorch else (lambda q: 1.0)
    for x in (0.0, 0.07, 0.9, -2.3, np.pi / qmax, 7.5):
        ref = quad(lambda q, x=x: window(q) * np.cos(q * x), qmin, qmax, limit=200)[0] / np.pi
        assert termination_kernel(np.array([x]), qmin, qmax, lorch)[0] == pytest.approx(ref, abs=1e-10)


def test_termination_equals_round_trip_through_fq():
    """Lorch-terminated G(r) against an explicit sine transform to F(Q) and back (numpy, trapezoid rule)."""
    s, qmax, ext = _rocksalt(), 20.0, 25.0
    r = np.arange(0.05, 6.0, 0.05)
    ours = PDFForwardModel(r, "neutron", qmax=qmax, lorch=True, r_extension=ext)(_batch(s)).y[0].numpy()
    rf = np.arange(0.0, r.max() + ext, 0.01)
    g_full = reduced_pdf(_batch(s), rf, "neutron")[0].numpy()
    q = np.arange(0.0, qmax + 1e-9, 0.002)
    fq = np.trapezoid(g_full[None, :] * np.sin(q[:, None] * rf[None, :]), rf, axis=1)
    integrand = (np.sinc(q / qmax) * fq)[None, :] * np.sin(r[:, None] * q[None, :])
    ref = 2 / np.pi * np.trapezoid(integrand, q, axis=1)
    assert np.abs(ours - ref).max() < 2e-3 * np.abs(ref).max()


def test_termination_at_high_qmax_is_identity():
    b = _batch(_triclinic())
    r = np.arange(0.05, 6.0, 0.02)
    plain = PDFForwardModel(r, "xray")(b).y
    torch.testing.assert_close(PDFForwardModel(r, "xray", qmax=160.0)(b).y, plain, rtol=0, atol=1e-6)


def test_bad_options():
    with pytest.raises(InputError):
        PDFForwardModel(R_GRID, "electron")
    with pytest.raises(InputError):
        PDFForwardModel(R_GRID, lorch=True)
    with pytest.raises(InputError):
        PDFForwardModel(R_GRID[::-1])
    with pytest.raises(InputError):
        ScatteringForwardModel([1.0, 2.0], quantity="I(Q)")
    with pytest.raises(InputError):
        ScatteringForwardModel([1.0, 2.0], window="hann")


# --- S(Q) -----------------------------------------------------------------------------------------------
SQ_CASES = [(_rocksalt, "neutron", "lorch"), (_triclinic, "xray", "lorch"), (_triclinic, "xray", "none")]


@pytest.mark.parametrize(("make", "radiation", "window"), SQ_CASES)
def test_sq_matches_debye_sum(make, radiation, window):
    s, r_max = make(), 9.0
    q = np.sort(np.concatenate([[0.0], np.linspace(0.3, 15.0, 25), [np.pi / r_max]]))
    model = ScatteringForwardModel(torch.tensor(q), radiation, r_max=r_max, window=window)
    _assert_close(model(_batch(s)).y[0], _reference_sq(s, q, radiation, r_max, window), 1e-8)
    fq = ScatteringForwardModel(q, radiation, "F(Q)", r_max=r_max, window=window)(_batch(s)).y
    torch.testing.assert_close(fq, torch.tensor(q) * (model(_batch(s)).y - 1.0))


@pytest.mark.parametrize(("radiation", "window"), [("xray", "lorch"), ("neutron", "none")])
def test_binned_sq_agrees_with_the_full_debye_sum_and_its_gradient(radiation, window):
    """``r_step``: each pair shared between two grid points; S(Q) within 1e-4 of the pair-by-pair sum (a random
    two-element cell at about a-C's density, Q to 25 Å⁻¹) and the gradient with respect to positions within 3 %."""
    rng = np.random.default_rng(4)
    s = Structure([6] * 40 + [14] * 8, rng.random((48, 3)), np.eye(3) * 7.5 + rng.normal(0, 0.2, (3, 3)))
    q = np.linspace(0.5, 25.0, 200)
    values, grads = [], []
    for step in (None, 0.002):
        model = ScatteringForwardModel(q, radiation, r_max=10.0, window=window, r_step=step)
        b = _batch(s)
        frac = b.frac.clone().requires_grad_()
        y = model(b.replace(frac=frac)).y
        (g,) = torch.autograd.grad((y * y).sum(), frac)
        values.append(y.detach())
        grads.append(g)
    assert float((values[1] - values[0]).abs().max()) < 1e-4
    assert float(torch.linalg.norm(grads[1] - grads[0]) / torch.linalg.norm(grads[0])) < 0.03
    with pytest.raises(InputError, match="r_step"):
        ScatteringForwardModel(q, r_max=10.0, r_step=0.0)


def test_uniform_term_near_singular_points():
    r_max = 7.0
    q = np.concatenate([[0.0, 1e-6, 0.2], np.pi / r_max + np.array([-1e-6, -1e-9, 0.0, 1e-9, 1e-6]), [5.0]])
    for window in ("lorch", "none"):
        win = (lambda x: np.sinc(x / r_max)) if window == "lorch" else (lambda x: np.ones_like(x))
        ref = [_uniform_quad(qq, r_max, win) for qq in q]
        np.testing.assert_allclose(uniform_term(q, r_max, window), ref, rtol=1e-9, atol=1e-9)
    assert uniform_term(np.array([0.0]), r_max, "none")[0] == pytest.approx(4 / 3 * np.pi * r_max**3)
    assert uniform_term(np.array([0.0]), r_max, "lorch")[0] == pytest.approx(4 * r_max**3 / np.pi)


def test_sq_invariances_and_gradcheck():
    s = _triclinic()
    q = np.linspace(0.5, 12.0, 30)
    model = ScatteringForwardModel(q, "xray", r_max=8.0)
    ref = model(_batch(s)).y
    torch.testing.assert_close(model(_batch(s.repeat((2, 1, 2)))).y, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(_batch(s.replace(cell=s.cell @ _rotation().T))).y, ref)
    small = _batch(Structure([8, 22], [[0.1, 0.2, 0.3], [0.55, 0.45, 0.6]], _cell(3.1, 3.3, 3.6, 80, 95, 100)))
    frac, cell = small.frac.clone().requires_grad_(), small.cell.clone().requires_grad_()
    tiny = ScatteringForwardModel([0.7, 2.0, 4.5], "xray", "F(Q)", r_max=5.0)
    assert torch.autograd.gradcheck(lambda f, c: tiny(small.replace(frac=f, cell=c)).y, (frac, cell))


# --- partial g_ab(r) ------------------------------------------------------------------------------------
def test_partials_recombine_into_g():
    s = _rocksalt()
    b = _batch(s)
    partials = partial_rdfs(b, R_GRID)
    assert set(partials) == {(11, 11), (11, 17), (17, 17)}
    b_na, b_cl = periodictable.elements[11].neutron.b_c, periodictable.elements[17].neutron.b_c
    mean = (b_na + b_cl) / 2
    terms = {(11, 11): 0.25 * b_na * b_na, (11, 17): 0.5 * b_na * b_cl, (17, 17): 0.25 * b_cl * b_cl}
    rho0 = len(s) / s.volume
    combined = sum(4 * np.pi * R_GRID * rho0 * w / mean**2 * (partials[k][0].numpy() - 1) for k, w in terms.items())
    _assert_close(PDFForwardModel(R_GRID, "neutron")(b).y[0], combined, 1e-10)
    # six Cl around each Na at a/2
    r, g = R_GRID, partials[(11, 17)][0].numpy()
    n_cl = np.trapezoid((4 * np.pi * r**2 * 4 / s.volume * g)[r < 3.5], r[r < 3.5])
    assert n_cl == pytest.approx(6.0, abs=1e-3)


def test_partials_tend_to_one_for_random_atoms():
    rng = np.random.default_rng(7)
    s = Structure([14] * 200 + [8] * 200, rng.random((400, 3)), np.eye(3) * 16.0)
    r = np.arange(3.0, 7.0, 0.05)
    for g in partial_rdfs(_batch(s), r, sigma=0.2).values():
        assert abs(g[0].mean().item() - 1.0) < 0.05


# --- PDFfit2 --------------------------------------------------------------------------------------------
def _pdffit2_gr(s: Structure, radiation: str, sigma: float, qdamp: float, r: np.ndarray) -> np.ndarray:
    pdffit2 = pytest.importorskip("diffpy.pdffit2")
    from diffpy.structure import Atom, Lattice
    from diffpy.structure import Structure as DiffpyStructure

    pdffit2.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 - pdffit2 keeps writing to it
    lattice = Lattice(base=s.cell)
    atoms = [Atom(sym, xyz) for sym, xyz in zip(s.symbols, s.frac, strict=True)]
    for atom in atoms:
        atom.anisotropy = False
        atom.Uisoequiv = sigma**2 / 2  # σ_pair² = U_i + U_j for uncorrelated isotropic motion
    fit = pdffit2.PdfFit()
    fit.add_structure(DiffpyStructure(atoms, lattice=lattice))
    stype = "N" if radiation == "neutron" else "X"
    for z, sym in sorted({(int(z), sym) for z, sym in zip(s.numbers, s.symbols, strict=True)}):
        fit.set_scat(stype, sym, float(_weights(Structure([z], [[0, 0, 0]], np.eye(3)), radiation)[0]))
    dr = r[1] - r[0]
    fit.alloc(stype, 0.0, qdamp, float(r[0]), float(r[-1]), int(round((r[-1] - r[0]) / dr)) + 1)
    fit.calc()
    np.testing.assert_allclose(fit.getR(), r, atol=1e-9)
    return np.array(fit.getpdf_fit())


PDFFIT2_CASES = [
    (_rocksalt, "neutron", 0.1, 0.0),
    (_triclinic, "xray", 0.05, 0.0),
    (_triclinic, "xray", 0.05, 0.04),
]


@pytest.mark.parametrize(("make", "radiation", "sigma", "qdamp"), PDFFIT2_CASES)
def test_pdf_matches_pdffit2(make, radiation, sigma, qdamp):
    r = np.round(np.arange(0.01, 10.0 + 1e-9, 0.01), 10)
    s = make()
    ref = _pdffit2_gr(s, radiation, sigma, qdamp, r)
    ours = PDFForwardModel(r, radiation, sigma=sigma, qdamp=qdamp)(_batch(s)).y[0].numpy()
    assert np.abs(ours - ref).max() < 1e-5 * np.abs(ref).max()


def test_default_extension_documented_accuracy():
    """No window: ~1 % of the amplitude between default and a much longer extension; Lorch: ~1e-4."""
    b = _batch(_triclinic())
    r = np.arange(0.05, 8.0, 0.05)
    for lorch, tol in ((False, 0.02), (True, 5e-4)):
        default = PDFForwardModel(r, "xray", qmax=25.0, lorch=lorch)(b).y
        long = PDFForwardModel(r, "xray", qmax=25.0, lorch=lorch, r_extension=40.0)(b).y
        assert (default - long).abs().max() < tol * long.abs().max()
    assert math.isfinite(float(default.sum()))
