"""The update scored in length buckets (`tapo.update_buckets`, tapo.engine.buckets): fewest padded tokens, the
same log-probs and gradients as TRL's one padded pass, and the same training step."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from conftest import ROOT
from tapo.engine.buckets import completion_lengths, length_buckets, score_by_length


def padded_tokens(lengths, groups):
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


def every_split(n, k):
    """Every partition of range(n) into exactly k non-empty groups (brute force, small n)."""
    for labels in itertools.product(range(k), repeat=n):
        if len(set(labels)) == k:
            yield [[i for i in range(n) if labels[i] == g] for g in range(k)]


@pytest.mark.parametrize("seed", range(20))
def test_length_buckets_waste_the_fewest_padded_tokens_of_any_grouping(seed):
    rng = random.Random(seed)
    n, k = rng.randint(1, 6), rng.randint(1, 3)
    lengths = [rng.randint(1, 150) for _ in range(n)]
    groups = length_buckets(lengths, buckets=k)
    assert len(groups) == min(n, k) and all(groups)  # the pass count depends only on the row count
    assert sorted(i for g in groups for i in g) == list(range(n))
    best = min(padded_tokens(lengths, split) for split in every_split(n, min(n, k)))
    assert padded_tokens(lengths, groups) == best


def test_completion_lengths_end_at_the_last_attended_position_and_are_never_zero():
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0]])  # 2 prompt + 4 completion
    assert completion_lengths(mask, 4) == [2, 3, 1]


def _plain_score(model):
    def score(input_ids, attention_mask, width):  # log-probs of the last `width` tokens, one forward pass
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -width - 1 : -1]
        logps = logits.log_softmax(-1).gather(-1, input_ids[:, -width:].unsqueeze(-1)).squeeze(-1)
        return logps, -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1), None
    return score


def test_scores_by_length_equal_one_padded_pass_with_their_gradients():
    from tapo.models import load_policy

    model, _ = load_policy("builtin:tiny", seed=0)
    torch.manual_seed(0)
    prompt, width, rows = 5, 12, 6
    ids = torch.randint(3, 50, (rows, prompt + width))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    for row, length in enumerate([3, 12, 4, 11, 2, 5]):  # completions right-padded to 12
        mask[row, prompt + length :] = 0
    completion_mask = mask[:, prompt:]
    score = _plain_score(model)

    whole, whole_entropy, _ = score(ids, mask, width)
    (whole * completion_mask).sum().backward()
    whole_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    groups = length_buckets(completion_lengths(mask, width), buckets=2)
    assert groups == [[4, 0, 2, 5], [3, 1]]
    split, split_entropy = score_by_length(score, ids, mask, width, buckets=2, batch_size=None, compute_entropy=True)
    (split * completion_mask).sum().backward()

    kept = completion_mask.bool()
    assert torch.allclose(split[kept], whole[kept], atol=1e-5)
    assert torch.allclose(split_entropy[kept], whole_entropy[kept], atol=1e-5)
    after = ~completion_mask.bool()  # here every row's padding is trailing: all of it is after its completion
    assert (split[after] == 0).all() and (split_entropy[after] == 0).all()  # in every call alike: ratios of 1
    for p, g in zip(model.parameters(), whole_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-5)


def _first_step(tmp_path, buckets: int) -> dict:
    from tapo.config import load_config
    from tapo.engine.run import run_training

    run = tmp_path / f"buckets{buckets}"
    config = load_config(ROOT / "recipes/tiny-tapo.yaml",
                         ["trainer.max_steps=1", 'trainer.save_strategy="no"', f"tapo.update_buckets={buckets}"])
    run_training(config, output_dir=str(run))
    [row] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return row


def test_a_training_step_in_buckets_is_trls_one_padded_pass(tmp_path):
    """The whole TAPO step (rollouts + aligned constructions, TRL's loss, OTS): same loss and gradient norm."""
    one, two = _first_step(tmp_path, 1), _first_step(tmp_path, 2)
    assert one["tapo/pairs"] > 0  # constructions were in the batch
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4, abs=1e-6)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)
    assert two["tapo/ots_w_mean"] == pytest.approx(one["tapo/ots_w_mean"], rel=1e-4)


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_update_buckets_must_be_a_positive_integer(tmp_path, value):
    from tapo.engine.trainer import TAPOConfig

    with pytest.raises(ValueError, match="update_buckets must be a positive integer"):
        TAPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], update_buckets=value)
