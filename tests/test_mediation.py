"""The mediation estimator on linear structural models whose direct and indirect effects are known exactly."""

from __future__ import annotations

import pytest
import torch

from lit_xai.mediation import (
    bootstrap_pairwise_mediation,
    linear_mediation,
    mean_cosine_distance,
    mean_total_variation,
    pair_treatments,
    pairwise_mediation,
)


def orthogonal_noise(treatment: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise with zero sample mean and zero sample covariance with every treatment column.

    Least squares then recovers the structural coefficients exactly, so the test's answer is analytic rather than
    within a sampling tolerance.
    """
    noise = torch.randn(treatment.shape[0], generator=generator, dtype=torch.float64)
    design = torch.cat([torch.ones(treatment.shape[0], 1, dtype=torch.float64), treatment], dim=1)
    return noise - design @ torch.linalg.lstsq(design, noise.unsqueeze(1)).solution.squeeze(1)


def test_linear_structural_model_effects_are_recovered_exactly():
    # H -> Y -> E and H -> E with a = (2, -1, 0), b = 0.5, c' = (1, 0, 3): indirect a*b, total c' + a*b.
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    a, b, direct = torch.tensor([2.0, -1.0, 0.0]), 0.5, torch.tensor([1.0, 0.0, 3.0])
    y = 0.3 + h @ a.double() + orthogonal_noise(h, generator)
    e = -0.2 + h @ direct.double() + b * y + 0.1 * orthogonal_noise(torch.cat([h, y[:, None]], 1), generator)
    result = linear_mediation(h, y, e)
    torch.testing.assert_close(result.on_mediator, a.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(result.direct, direct.double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(result.indirect, a.double() * b, rtol=0, atol=1e-9)
    torch.testing.assert_close(result.total, direct.double() + a.double() * b, rtol=0, atol=1e-9)
    assert result.mediator_to_outcome == pytest.approx(b, abs=1e-9)
    assert result.intercepts["on_mediator"] == pytest.approx(0.3, abs=1e-9)
    assert result.intercepts["direct"] == pytest.approx(-0.2, abs=1e-9)
    assert result.intercepts["total"] == pytest.approx(-0.2 + 0.5 * 0.3, abs=1e-9)
    assert result.num_units == 500


def test_total_is_direct_plus_indirect_for_any_data():
    # The least-squares identity c = c' + a b holds for any data, not only for a linear truth.
    generator = torch.Generator().manual_seed(1)
    h = torch.rand(200, 4, generator=generator)
    y = (h**2).sum(1) + torch.rand(200, generator=generator)
    e = torch.sin(3 * h[:, 0]) * y + torch.rand(200, generator=generator)
    result = linear_mediation(h, y, e)
    torch.testing.assert_close(result.total, result.direct + result.indirect, rtol=0, atol=1e-10)


def test_full_mediation_has_no_direct_effect_and_partial_correlation_one():
    generator = torch.Generator().manual_seed(2)
    h = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = h @ torch.tensor([1.0, 2.0], dtype=torch.float64) + orthogonal_noise(h, generator)
    e = 4.0 * y  # E depends on H only through Y
    result = linear_mediation(h, y, e)
    torch.testing.assert_close(result.direct, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        result.indirect, torch.tensor([4.0, 8.0], dtype=torch.float64), rtol=0, atol=1e-9
    )
    assert result.partial_correlation == pytest.approx(1.0, abs=1e-9)
    assert result.standardized_mediator_to_outcome == pytest.approx(1.0, abs=1e-9)  # e is a rescaled y


def test_no_mediation_when_outcome_ignores_the_mediator():
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = h @ torch.tensor([1.0, -1.0], dtype=torch.float64) + orthogonal_noise(h, generator)
    e = h @ torch.tensor([0.5, 2.0], dtype=torch.float64) + orthogonal_noise(
        torch.cat([h, y[:, None]], 1), generator
    )
    result = linear_mediation(h, y, e)
    torch.testing.assert_close(result.indirect, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)
    assert result.partial_correlation == pytest.approx(0.0, abs=1e-9)


def test_pair_treatments_absolute_and_categorical_differences():
    h = torch.tensor([[0.0, 1.0], [2.0, 1.0], [5.0, 0.0]])
    pairs, treatment = pair_treatments(h, categorical=[False, True])
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert treatment.tolist() == [[2.0, 0.0], [5.0, 1.0], [3.0, 1.0]]


def test_pairwise_mediation_recovers_a_pairwise_linear_model():
    # Units with hyperparameters (continuous, categorical); distances built from the pair treatments:
    # d_Y = 0.1 + 2 |dh| + 0.5 [cat differs] + u_ij, d_E = 0.2 + 3 |dh| + 1.5 d_Y (no noise: exact recovery).
    generator = torch.Generator().manual_seed(4)
    m = 30
    h = torch.stack(
        [torch.rand(m, generator=generator), torch.randint(3, (m,), generator=generator).float()], 1
    )
    pairs, treatment = pair_treatments(h, [False, True])
    u = orthogonal_noise(treatment, generator) * 0.05
    d_y = torch.zeros(m, m, dtype=torch.float64)
    d_y[pairs[:, 0], pairs[:, 1]] = 0.1 + treatment @ torch.tensor([2.0, 0.5], dtype=torch.float64) + u
    d_y = d_y + d_y.T
    d_e = 0.2 + 3.0 * (h[:, None, 0] - h[None, :, 0]).abs().double() + 1.5 * d_y
    result = pairwise_mediation(h, [False, True], d_y, d_e)
    torch.testing.assert_close(
        result.on_mediator, torch.tensor([2.0, 0.5], dtype=torch.float64), rtol=0, atol=1e-9
    )
    torch.testing.assert_close(
        result.direct, torch.tensor([3.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-9
    )
    torch.testing.assert_close(
        result.indirect, torch.tensor([3.0, 0.75], dtype=torch.float64), rtol=0, atol=1e-9
    )
    assert result.num_units == m * (m - 1) // 2

    # Bootstrap over units: with a noise-free outcome model every resample recovers the direct effects exactly.
    draws = bootstrap_pairwise_mediation(
        h, [False, True], d_y, d_e, num_resamples=5, generator=torch.Generator()
    )
    for draw in draws:
        torch.testing.assert_close(
            draw.direct, torch.tensor([3.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-8
        )
        assert draw.mediator_to_outcome == pytest.approx(1.5, abs=1e-8)
        assert draw.num_units < result.num_units  # pairs of two copies of one unit are left out


def test_distances_on_known_cases():
    onehot = torch.eye(3).unsqueeze(1)  # three units, one input, disjoint predictions
    tv = mean_total_variation(onehot)
    torch.testing.assert_close(tv, 1.0 - torch.eye(3, dtype=torch.float64))
    maps = torch.tensor([[[1.0, 2.0, 0.0]], [[2.0, 4.0, 0.0]], [[-1.0, -2.0, 0.0]], [[0.0, 0.0, 1.0]]])
    cosine = mean_cosine_distance(maps)
    torch.testing.assert_close(cosine[0, 1], torch.tensor(0.0, dtype=torch.float64))  # scale is ignored
    torch.testing.assert_close(cosine[0, 2], torch.tensor(2.0, dtype=torch.float64))  # opposite
    torch.testing.assert_close(cosine[0, 3], torch.tensor(1.0, dtype=torch.float64))  # orthogonal
    torch.testing.assert_close(cosine, cosine.T)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="same rows"):
        linear_mediation(torch.zeros(10, 1), torch.zeros(9), torch.zeros(10))
    with pytest.raises(ValueError, match="use more units"):
        linear_mediation(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="one flag per column"):
        pair_treatments(torch.zeros(4, 2), [True])
