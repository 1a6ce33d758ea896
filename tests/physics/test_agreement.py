"""Pattern agreement figures against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from atomdiff.physics import agreement


def test_values_on_a_small_example():
    yo = torch.tensor([10.0, 20.0, 40.0, 10.0], dtype=torch.float64)
    yc = torch.tensor([12.0, 18.0, 40.0, 9.0], dtype=torch.float64)
    w = 1 / yo
    expected_rwp = math.sqrt(float((w * (yo - yc) ** 2).sum() / (w * yo**2).sum()))
    assert float(agreement.rwp(yo, yc)) == pytest.approx(expected_rwp)
    assert float(agreement.rp(yo, yc)) == pytest.approx(5 / 80)
    assert float(agreement.chi2(yo, yc, n_params=1)) == pytest.approx(float((w * (yo - yc) ** 2).sum()) / 3)
    assert float(agreement.rexp(yo)) == pytest.approx(math.sqrt(4 / float((w * yo**2).sum())))
    cos = float((yo * yc).sum() / (yo.norm() * yc.norm()))
    assert float(agreement.cosine_similarity(yo, yc)) == pytest.approx(cos)


def test_perfect_fit_and_scale():
    yo = torch.rand(3, 50, dtype=torch.float64) * 100 + 1
    assert torch.allclose(agreement.rwp(yo, yo), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(agreement.cosine_similarity(yo, 2 * yo), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(agreement.optimal_scale(yo, yo / 4), torch.full((3,), 4.0, dtype=torch.float64))


def test_sigma_weights():
    yo = torch.tensor([4.0, 9.0])
    sigma = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(agreement.counting_weights(yo, sigma), torch.tensor([0.25, 1 / 9]))
    torch.testing.assert_close(agreement.counting_weights(torch.tensor([0.0, 4.0])), torch.tensor([1.0, 0.25]))
