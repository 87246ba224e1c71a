"""OOD token suppression weights, their metrics, and token entropies."""

import math

import pytest
import torch

from tapo.core import masked_mean_and_low_frac, ots_weights, token_entropy_from_logits


def test_weights_are_exp_of_logp_plus_entropy():
    weights = ots_weights(torch.tensor([-1.0, -0.5, -2.0, 0.0]), torch.tensor([0.5, 0.2, 2.5, 0.0]))
    expected = [math.exp(-0.5), math.exp(-0.3), math.exp(0.5), 1.0]  # 0.6065307, 0.7408182, 1.6487213, 1
    assert weights.tolist() == pytest.approx(expected, abs=1e-6)
    assert weights.tolist() == pytest.approx([0.6065307, 0.7408182, 1.6487213, 1.0], abs=1e-6)


def test_clamps_at_both_ends():
    weights = ots_weights([-10.0, 0.0, float("-inf"), -1e-3], [0.0, 3.0, 1.0, 1e4])
    assert weights.tolist() == pytest.approx([0.01, 10.0, 0.01, 10.0])  # exp(-10) = 4.5e-5, exp(3) = 20.1
    custom = ots_weights([-1.0, 0.0, -0.1], [0.0, 1.0, 0.0], w_min=0.5, w_max=2.0)
    assert custom.tolist() == pytest.approx([0.5, 2.0, math.exp(-0.1)])  # 0.3679 -> 0.5, 2.718 -> 2


def test_weights_are_detached_and_pass_no_gradient():
    logps = torch.tensor([-1.0, -0.2, -3.0], requires_grad=True)
    entropies = torch.tensor([0.5, 0.1, 1.0], requires_grad=True)
    weights = ots_weights(logps, entropies)
    assert not weights.requires_grad
    (weights * logps).sum().backward()  # the gradient w.r.t. logps is w itself: nothing flows through w
    assert torch.allclose(logps.grad, weights)
    assert entropies.grad is None


def test_shape_preserved_for_2d_and_lists_accepted():
    logps = torch.full((2, 3), -1.0)  # [B, T]
    entropies = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.5, 1.0]])  # [B, T]
    weights = ots_weights(logps, entropies)
    assert weights.shape == (2, 3)
    assert weights[0].tolist() == pytest.approx([1.0, math.exp(-1), math.exp(1)])
    from_lists = ots_weights([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]], entropies.tolist())
    assert isinstance(from_lists, torch.Tensor) and torch.equal(from_lists, weights)


def test_half_precision_inputs_are_computed_in_float32():
    weights = ots_weights(torch.tensor([-1.0], dtype=torch.bfloat16), torch.tensor([0.5], dtype=torch.bfloat16))
    assert weights.dtype == torch.float32
    assert weights.item() == pytest.approx(math.exp(-0.5), abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"w_min": 2.0, "w_max": 1.0}, "w_min must be <= w_max"),
        ({"w_min": -0.1}, "w_min must be >= 0"),
    ],
)
def test_bad_bounds_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ots_weights([0.0], [0.0], **kwargs)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        ots_weights([0.0, 0.0], [0.0, 0.0, 0.0])


def test_masked_mean_and_low_frac():
    weights = torch.tensor([[0.01, 1.0, 2.0], [3.0, 0.01, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the 5.0 is padding
    mean, low = masked_mean_and_low_frac(weights, mask, w_min=0.01)
    assert mean == pytest.approx((0.01 + 1 + 2 + 3 + 0.01) / 5, abs=1e-6)  # 1.204
    assert low == pytest.approx(2 / 5)


def test_low_frac_counts_weights_clamped_to_the_floor():
    weights = ots_weights([-20.0, -20.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0])  # two at the floor
    mean, low = masked_mean_and_low_frac(weights, torch.ones(4, dtype=torch.bool), w_min=0.01)
    assert low == 0.5
    assert mean == pytest.approx((0.01 + 0.01 + 1.0 + math.exp(-1)) / 4, abs=1e-6)


def test_masked_stats_edge_cases():
    assert masked_mean_and_low_frac(torch.ones(3), torch.zeros(3), w_min=0.01) == (0.0, 0.0)
    with pytest.raises(ValueError, match="weights and mask must have the same shape"):
        masked_mean_and_low_frac(torch.ones(3), torch.ones(2), w_min=0.01)


def test_entropy_of_known_distributions():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("-inf"), float("-inf")]])
    entropy = token_entropy_from_logits(logits)
    assert entropy.tolist() == pytest.approx([math.log(4), 0.0, math.log(2)], abs=1e-6)
    assert not torch.isnan(entropy).any()


def test_entropy_matches_the_definition_and_keeps_leading_shape():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11, dtype=torch.float64) * 3  # [B, T, V]
    p = torch.softmax(logits, dim=-1)
    expected = -(p * p.log()).sum(-1)  # [B, T]
    entropy = token_entropy_from_logits(logits)
    assert entropy.shape == (2, 3)
    assert torch.allclose(entropy, expected, atol=1e-12)
    assert torch.allclose(token_entropy_from_logits(logits, chunk_rows=1), entropy, atol=1e-12)


def test_entropy_of_bfloat16_logits_is_float32_and_bad_shapes_are_named():
    assert token_entropy_from_logits(torch.zeros(3, 8, dtype=torch.bfloat16)).dtype == torch.float32
    assert token_entropy_from_logits(torch.zeros(0, 8)).shape == (0,)
    with pytest.raises(ValueError, match="non-empty last"):
        token_entropy_from_logits(torch.zeros(3, 0))
