"""TAPO on the engine paths users train on (single process, HF generate): each test pins one defect class.

builtin:tiny-arith ends its answers with eos, and the checksum pseudo-reward of test_tapo_trainer makes
groups mixed whatever it answers, so selection fires on every step.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from trl import GRPOTrainer

from tapo.engine.batching import CONSTRUCTED, PADDING, ROLLOUT, ROW_KIND_KEY
from tapo.models import load_policy
from tests.test_tapo_trainer import first_inputs, make_trainer

K = 8


def augmented_batch(trainer, seed: int = 0) -> tuple[list[dict], dict]:
    inputs = first_inputs(trainer)
    trainer.model.train()
    torch.manual_seed(seed)
    return inputs, trainer._generate_and_score_completions([dict(x) for x in inputs])


def constructions(trainer) -> list[dict]:
    path = trainer.args.output_dir + "/constructions.jsonl"
    with open(path) as lines:
        return [json.loads(line) for line in lines]


def group_index(inputs: list[dict], query_id: str) -> int:
    return next(g for g in range(len(inputs) // K) if inputs[g * K]["query_id"] == query_id)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_original_baseline_shares_the_rollouts_scale(tmp_path, scale_rewards):
    """Under ref_baseline original, a construction with reward r gets exactly the advantage TRL gave a
    rollout of its group with reward r: one formula for both kinds of rows, scale_rewards honoured."""
    trainer = make_trainer(tmp_path, ref_baseline="original", scale_rewards=scale_rewards)
    inputs, batch = augmented_batch(trainer)
    rows = len(inputs)
    records = constructions(trainer)
    assert records
    rollout_adv = batch["advantages"][:rows, 0]  # [B] scalar per rollout, carried on every token
    for record in records:
        g = group_index(inputs, record["query_id"])
        same_reward = record["positive_index"] if record["reward"] > 0 else record["negative_index"]
        expected = rollout_adv[g * K + same_reward].item()
        assert math.isclose(record["advantage"], expected, rel_tol=1e-5, abs_tol=1e-6), (record["advantage"], expected)


def test_reflection_groups_follow_scale_rewards_none(tmp_path):
    """scale_rewards none: A_ref = r_ref - mean(G_ref), no division (TRL's rollouts get r - mean)."""
    trainer = make_trainer(tmp_path, scale_rewards="none", m_max=8, per_device_train_batch_size=32)
    augmented_batch(trainer)
    by_query: dict[str, list[dict]] = {}
    for record in constructions(trainer):
        by_query.setdefault(record["query_id"], []).append(record)
    checked = 0
    for group in by_query.values():
        if len(group) < 2:
            continue
        mean = sum(r["reward"] for r in group) / len(group)
        for r in group:
            assert math.isclose(r["advantage"], r["reward"] - mean, abs_tol=1e-6)
        checked += len({r["reward"] for r in group}) > 1
    assert checked, "no reflection group with mixed rewards to check"


def test_truncated_rollouts_are_never_y_minus(tmp_path):
    """mask_truncated_completions zeroes truncated rows' masks; y- is read from the generated ids instead,
    and a rollout cut off by the budget is never chosen as y- (it still counts for eligibility)."""
    # one- and two-step problems: 24 tokens end a one-step answer and cut a two-step one
    trainer = make_trainer(tmp_path, n_steps=(1, 2), mask_truncated_completions=True, m_max=8,
                           per_device_train_batch_size=32)
    augmented_batch(trainer)
    texts = trainer.processing_class.batch_decode(trainer._rollout_completion_ids, skip_special_tokens=True)
    ends = set(trainer.eos_token_ids)
    cut = {t for t, ids in zip(texts, trainer._rollout_completion_ids) if ids[-1] not in ends}
    finished = {t for t, ids in zip(texts, trainer._rollout_completion_ids) if ids[-1] in ends}
    assert cut and finished, "the budget should cut some rollouts and not others"
    records = constructions(trainer)
    assert records
    for record in records:
        assert record["negative"].strip(), "an empty y- reached the constructor"
        assert record["negative"] in finished and record["negative"] not in cut


def test_reference_logps_of_constructed_rows_come_from_the_reference_model(tmp_path):
    trainer = make_trainer(tmp_path, beta=0.1)
    with torch.no_grad():  # move the policy away from its reference
        for parameter in trainer.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    _, batch = augmented_batch(trainer)
    kinds = batch[ROW_KIND_KEY]
    new = (kinds == CONSTRUCTED).nonzero().flatten()
    assert new.numel()
    args = (batch["prompt_ids"][new], batch["prompt_mask"][new], batch["completion_ids"][new], batch["completion_mask"][new])
    reference = trainer._score_tokens(trainer.ref_model, *args, entropy=False)[0]
    policy = trainer._score_tokens(trainer.model, *args)[0]
    mask = batch["completion_mask"][new].bool()
    stored = batch["ref_per_token_logps"][new]
    assert torch.allclose(stored[mask], reference[mask], atol=1e-5)
    assert not torch.allclose(stored[mask], policy[mask], atol=1e-3)
    assert torch.allclose(batch["old_per_token_logps"][new][mask] if "old_per_token_logps" in batch else policy[mask], policy[mask], atol=1e-5)


def test_entropy_quantile_and_metrics_stay_about_rollouts(tmp_path):
    """top_entropy_quantile: rollout tokens trained are those TRL picks on the rollouts alone; every
    constructed token passes. TRL's entropy metric is the rollouts'; tapo/entropy the constructed rows'."""
    trainer = make_trainer(tmp_path, top_entropy_quantile=0.2)
    trainer.current_gradient_accumulation_steps = 1
    inputs, batch = augmented_batch(trainer)
    kinds = batch[ROW_KIND_KEY]
    rows = len(inputs)
    assert (kinds == CONSTRUCTED).any()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        _, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, batch["completion_ids"].size(1), batch_size=ids.size(0), compute_entropy=True)
    mask = batch["completion_mask"]
    alone = GRPOTrainer.get_high_entropy_mask(trainer, entropies[:rows], mask[:rows], 0.8)  # TRL on rollouts only
    trainer._row_kinds = kinds
    try:
        ours = trainer.get_high_entropy_mask(entropies, mask, 0.8)
    finally:
        trainer._row_kinds = None
    assert torch.equal(ours[:rows], alone)
    assert torch.equal(ours[rows:], mask[rows:].bool())
    assert ours[:rows].sum() < mask[:rows].sum()  # the quantile did remove rollout tokens

    trainer._metrics["train"].clear()
    trainer.model.config.use_cache = False
    trainer._compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train"]
    rollout_mask = mask * (kinds == ROLLOUT).unsqueeze(1)
    constructed_mask = mask * (kinds == CONSTRUCTED).unsqueeze(1)
    assert math.isclose(metrics["entropy"][-1], ((entropies * rollout_mask).sum() / rollout_mask.sum()).item(), rel_tol=1e-4)
    assert math.isclose(metrics["tapo/entropy"][-1], ((entropies * constructed_mask).sum() / constructed_mask.sum()).item(), rel_tol=1e-4)
    assert metrics["tapo/clip_ratio"] and metrics["clip_ratio/region_mean"]


def test_what_reward_functions_log_while_scoring_constructions_is_not_the_next_steps(tmp_path):
    """TRL's log_metric / log_extra kwargs: the rollouts' values are flushed with their own step; the calls made
    while TAPO scores the constructed rows leave nothing pending for the next generation's rollouts."""
    from tests.test_tapo_trainer import checksum_reward

    seen: list[int] = []

    def logging_reward(completions, log_metric=None, log_extra=None, **kwargs):
        seen.append(len(completions))
        log_metric("mine/rows", float(len(completions)))
        log_extra("mine", [f"rows {len(completions)}"] * len(completions))
        return checksum_reward(completions)

    trainer = make_trainer(tmp_path)
    trainer.reward_funcs = [logging_reward]
    _, batch = augmented_batch(trainer)
    assert len(seen) == 2 and (batch[ROW_KIND_KEY] == CONSTRUCTED).sum() > 0  # rollouts, then constructed rows
    assert not trainer._pending_metrics and not trainer._pending_extra_logs
    assert trainer._metrics["train"]["mine/rows"] == [float(seen[0])]  # the rollouts' call, logged at its step


def test_a_construction_no_reward_function_scores_is_not_trained(tmp_path):
    """Every reward function returns None for the constructed rows (TRL's "unscorable"): they are not trained
    (TRL gives such a rollout advantage 0) and count as failures, not as wrong answers in a reflection group."""
    from tests.test_tapo_trainer import checksum_reward

    calls: list[int] = []

    def scores_only_rollouts(completions, **kwargs):
        calls.append(len(completions))
        return checksum_reward(completions) if len(calls) == 1 else [None] * len(completions)

    trainer = make_trainer(tmp_path)
    trainer.reward_funcs = [scores_only_rollouts]
    _, batch = augmented_batch(trainer)
    kinds = batch[ROW_KIND_KEY]
    assert len(calls) == 2 and (kinds == PADDING).sum() > 0 and (kinds == CONSTRUCTED).sum() == 0
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    failed = {name: value for name, value in metrics.items() if name.startswith("tapo/failed/")}
    assert metrics["tapo/built"] == 0 and metrics["tapo/failed/unscorable"] > 0, failed
    assert sum(failed.values()) == metrics["tapo/tried"] > 0  # the built ones all became "unscorable"


def test_an_unscorable_rollout_is_never_y_minus_or_y_plus(tmp_path):
    """A rollout no reward function scores (None) is TRL's "unscorable": selection puts it on neither side, so
    no construction pairs it (it would otherwise count as a wrong answer, reward 0)."""
    import zlib

    from tests.test_tapo_trainer import checksum_reward

    unscorable: set[str] = set()

    def scores_some(completions, **kwargs):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        skip = [zlib.crc32(t.encode()) % 3 == 0 for t in texts]  # by text: equal texts are treated alike
        unscorable.update(t for t, s in zip(texts, skip) if s)
        return [None if s else r for s, r in zip(skip, checksum_reward(completions))]

    trainer = make_trainer(tmp_path, n_neg=1, m_max=8)  # every wrong answer of an eligible group is a y-
    trainer.reward_funcs = [scores_some]
    augmented_batch(trainer)
    records = constructions(trainer)
    assert records and unscorable
    assert not any(r["negative"] in unscorable or r["positive"] in unscorable for r in records)


def test_ref_baseline_with_the_mixed_ablation_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="decoupled: false"):
        make_trainer(tmp_path, decoupled=False, ref_baseline="original")


def test_a_synthesis_that_cannot_fit_fails_at_start_naming_the_options(tmp_path):
    model, tokenizer = load_policy("builtin:tiny")
    model.config.max_position_embeddings = 600  # well below template + question + y- + y+ + budget
    from tapo.data import load_records, to_prompt_dataset
    from tapo.engine.trainer import TAPOConfig, TAPOTrainer
    from tests.test_tapo_trainer import checksum_reward

    args = TAPOConfig(output_dir=str(tmp_path), max_steps=1, num_generations=8, per_device_train_batch_size=8,
                      max_completion_length=64, report_to=[], save_strategy="no", construction="self",
                      synthesis_extra_tokens=512, use_cpu=True)
    with pytest.raises(ValueError, match="synthesis_extra_tokens") as error:
        TAPOTrainer(model=model, reward_funcs=[checksum_reward], args=args, processing_class=tokenizer,
                    train_dataset=to_prompt_dataset(load_records("builtin:arithmetic", n=8, n_steps=1)))
    assert "max_position_embeddings = 600" in str(error.value)


def test_padding_rows_are_marked_and_inert(tmp_path):
    """Unused slots carry an all-zero mask and zero advantage, and are told apart from real rows."""
    trainer = make_trainer(tmp_path, m_max=8)
    _, batch = augmented_batch(trainer)
    kinds = batch[ROW_KIND_KEY]
    padding = kinds == PADDING
    assert (batch["completion_mask"][padding] == 0).all() and (batch["advantages"][padding] == 0).all()
    assert (batch["completion_mask"][kinds == CONSTRUCTED].sum(-1) > 0).all()


def test_synthesis_prompts_use_the_rollouts_chat_template_arguments(tmp_path):
    """Qwen3's thinking switch: with enable_thinking false, rollout AND synthesis prompts open the
    assistant turn with an empty think block (read from the prompts the parent's generation receives)."""
    from tests.test_constructors import THINKING_TEMPLATE

    trainer = make_trainer(tmp_path, construction="self", synthesis_extra_tokens=8,
                           chat_template_kwargs={"enable_thinking": False})
    trainer.processing_class.chat_template = THINKING_TEMPLATE
    seen: list[tuple[int, list[list[int]]]] = []
    generate = trainer._generate_single_turn

    def recording(prompt_ids, *args, **kwargs):  # instrumentation: the parent's generation runs unchanged
        seen.append((args[2] if len(args) > 2 else kwargs.get("num_generations"), [list(p) for p in prompt_ids]))
        return generate(prompt_ids, *args, **kwargs)

    trainer._generate_single_turn = recording
    augmented_batch(trainer)
    synthesis = [p for n, prompts in seen if n == 1 for p in prompts]
    rollouts = [p for n, prompts in seen if n != 1 for p in prompts]
    assert synthesis and rollouts, "no synthesis call was made"
    opened = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    for prompt in rollouts + synthesis:
        assert trainer.processing_class.decode(prompt, skip_special_tokens=False).endswith(opened)


def test_splice_locate_template_file_is_the_locate_prompt(tmp_path):
    """tapo.splice_locate_template replaces the built-in LOCATE_TEMPLATE in the trainer's locate call (read from
    the prompts the parent's generation receives), as tapo.synthesis_template replaces the `self` one."""
    template = tmp_path / "locate.txt"
    template.write_text("LOCATE-MARK q=$question n=$negative p=$positive")
    trainer = make_trainer(tmp_path, construction="splice", splice_fallback="drop", splice_locate_tokens=4,
                           splice_locate_template=str(template))
    seen: list[tuple[int, list[list[int]]]] = []
    generate = trainer._generate_single_turn

    def recording(prompt_ids, *args, **kwargs):  # instrumentation: the parent's generation runs unchanged
        seen.append((args[2] if len(args) > 2 else kwargs.get("num_generations"), [list(p) for p in prompt_ids]))
        return generate(prompt_ids, *args, **kwargs)

    trainer._generate_single_turn = recording
    augmented_batch(trainer)
    texts = [trainer.processing_class.decode(p) for n, prompts in seen if n == 1 for p in prompts]
    located = [t for t in texts if "LOCATE-MARK q=" in t]
    assert located, f"no locate prompt used the template file; synthesis prompts: {texts[:2]}"
    assert all(" n=" in t and " p=" in t and "Find the FIRST critical mistake" not in t for t in located)
