"""GRPO group advantages and TAPO's decoupled reflection-group advantages, to the number."""

import math

import pytest
import torch

from tapo.core import (
    group_advantages,
    is_degenerate,
    reflection_advantages,
    reflection_token_advantages,
)

MIXED = [1, 0, 0, 1, 0, 0, 0, 0]
# By hand: mean = 2/8 = 0.25; population variance = (2 * 0.75**2 + 6 * 0.25**2) / 8 = 0.1875;
# std = sqrt(0.1875) = 0.4330127; A(1) = 0.75 / (0.4330127 + 1e-6) = 1.7320468,
# A(0) = -0.25 / (0.4330127 + 1e-6) = -0.5773489.
STD = math.sqrt(0.1875)
A_RIGHT = 0.75 / (STD + 1e-6)
A_WRONG = -0.25 / (STD + 1e-6)


def test_mixed_group_hand_computed():
    assert STD == pytest.approx(0.4330127, abs=1e-7)
    assert A_RIGHT == pytest.approx(1.7320468, abs=1e-6)
    assert A_WRONG == pytest.approx(-0.5773489, abs=1e-6)
    expected = [A_RIGHT, A_WRONG, A_WRONG, A_RIGHT, A_WRONG, A_WRONG, A_WRONG, A_WRONG]
    assert group_advantages(MIXED) == pytest.approx(expected, abs=1e-6)
    assert sum(group_advantages(MIXED)) == pytest.approx(0.0, abs=1e-9)


def test_eps_zero_gives_exact_standardization():
    assert group_advantages(MIXED, eps=0.0)[:2] == pytest.approx([math.sqrt(3), -1 / math.sqrt(3)], abs=1e-12)


def test_population_not_sample_std():
    # [1, 0]: population std 0.5 -> +-1; the sample std (0.7071) would give +-0.7071.
    assert group_advantages([1.0, 0.0], eps=0.0) == [1.0, -1.0]


@pytest.mark.parametrize("rewards", [[1.0] * 8, [0.0] * 8, [0.1, 0.1, 0.1], [0.7] * 2])
def test_all_equal_gives_exact_zeros(rewards):
    assert group_advantages(rewards) == [0.0] * len(rewards)


@pytest.mark.parametrize("reward", [1.0, 0.0, 0.5])
def test_lone_sample_keeps_its_reward(reward):
    assert group_advantages([reward]) == [reward]


def test_empty_group_and_bad_inputs():
    assert group_advantages([]) == []
    with pytest.raises(ValueError, match=r"rewards\[2\] is nan"):
        group_advantages([1.0, 0.0, float("nan")])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        group_advantages([1.0, 0.0], eps=-1.0)


def test_reflection_baseline_is_paper_literal():
    assert reflection_advantages([1.0, 0.0], baseline="reflection") == pytest.approx([0.5 / 0.500001, -0.5 / 0.500001])
    assert reflection_advantages([1.0]) == [1.0]  # |G_ref| = 1 -> A = r
    assert reflection_advantages([0.0]) == [0.0]
    assert reflection_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # degenerate: no gradient
    # [1, 1, 0]: mean 2/3, population std sqrt(2/9) = 0.4714045
    std = math.sqrt(2 / 9)
    assert reflection_advantages([1, 1, 0]) == pytest.approx([(1 / 3) / (std + 1e-6)] * 2 + [(-2 / 3) / (std + 1e-6)])
    assert reflection_advantages([1, 1, 0])[0] == pytest.approx(0.7071053, abs=1e-6)


def test_original_baseline_hand_computed():
    ref = reflection_advantages([1.0, 1.0, 0.0], baseline="original", original_rewards=MIXED)
    assert ref == pytest.approx([1.7320468, 1.7320468, -0.5773489], abs=1e-6)
    # never degenerate: an all-right reflection group still gets a signal
    all_right = reflection_advantages([1.0, 1.0], baseline="original", original_rewards=MIXED)
    assert all_right == pytest.approx([A_RIGHT] * 2)


def test_original_baseline_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs original_rewards"):
        reflection_advantages([1.0], baseline="original")
    with pytest.raises(ValueError, match="original group with reward variance"):
        reflection_advantages([1.0], baseline="original", original_rewards=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"original_rewards\[1\] is inf"):
        reflection_advantages([1.0], baseline="original", original_rewards=[0.0, float("inf")])
    with pytest.raises(ValueError, match="baseline must be one of .* got 'mixed'"):
        reflection_advantages([1.0], baseline="mixed")


@pytest.mark.parametrize(
    ("rewards", "degenerate"),
    [([1.0, 1.0], True), ([0, 0, 0, 0], True), ([1.0, 0.0], False), ([1.0], False), ([0.0], False), ([], False)],
)
def test_degenerate_detection(rewards, degenerate):
    assert is_degenerate(rewards) is degenerate


def test_token_advantages_carry_weight_and_lambda():
    ots = torch.tensor([1.0, 0.01, 2.0])
    assert torch.allclose(reflection_token_advantages(0.5, ots), torch.tensor([0.5, 0.005, 1.0]))
    assert torch.allclose(reflection_token_advantages(-2.0, ots, loss_weight=0.5), torch.tensor([-1.0, -0.01, -2.0]))
