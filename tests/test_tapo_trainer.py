"""The TAPO adapter on builtin:tiny-arith: the batch contract with TRL, the augmented batch, and its loss.

A deterministic pseudo-reward (a checksum of the completion, ~40% "right") makes groups mixed, so
selection fires whatever the model answers. The warm-started tiny model ends its answers with eos
within 24 tokens (a random one never does, and a truncated rollout is never a y-).
"""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch
from trl import GRPOTrainer

from tapo.engine.batching import CONSTRUCTED, PADDING, ROW_KIND_KEY
from tapo.data import load_records, to_prompt_dataset
from tapo.models import load_policy
from tapo.engine.trainer import TAPOConfig, TAPOTrainer

# What TRL 1.16's _generate_and_score_completions returns on this setup (no vLLM, no KL, no images).
TRL_BATCH_KEYS = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch"}


def checksum_reward(completions, **kwargs):
    return [float(zlib.crc32(json.dumps(c).encode()) % 5 < 2) for c in completions]


def make_trainer(tmp_path, model_name: str = "builtin:tiny-arith", *, n_steps=1, trainer_cls=TAPOTrainer,
                 **overrides) -> TAPOTrainer:
    model, tokenizer = load_policy(model_name)
    records = load_records("builtin:arithmetic", n=16, n_steps=n_steps, max_operand=9)
    settings = dict(
        output_dir=str(tmp_path), max_steps=1, num_generations=8, per_device_train_batch_size=16,
        max_completion_length=24, learning_rate=1e-4, report_to=[], logging_steps=1, save_strategy="no",
        bf16=False, disable_tqdm=True, construction="aligned", n_pos=1, n_neg=1, seed=3, epsilon_high=0.28,
    )
    settings.update(overrides)
    return trainer_cls(
        model=model, reward_funcs=[checksum_reward], args=TAPOConfig(**settings),
        train_dataset=to_prompt_dataset(records), processing_class=tokenizer,
    )


def first_inputs(trainer) -> list[dict]:
    return next(iter(trainer.get_train_dataloader()))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("tapo"))
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss reads it
    return trainer


@pytest.fixture(scope="module")
def batches(trainer):
    """(plain GRPO batch, augmented batch) from the same inputs and the same sampling seed."""
    inputs = first_inputs(trainer)
    trainer.model.train()
    torch.manual_seed(0)
    plain = GRPOTrainer._generate_and_score_completions(trainer, [dict(x) for x in inputs])
    torch.manual_seed(0)
    augmented = trainer._generate_and_score_completions([dict(x) for x in inputs])
    return plain, augmented


def test_trl_batch_contract(batches):
    """Fails loudly when a TRL upgrade changes the keys or shapes TAPOTrainer relies on."""
    plain, _ = batches
    assert set(plain) == TRL_BATCH_KEYS
    rows = plain["prompt_ids"].size(0)
    assert rows == 16
    assert plain["prompt_mask"].shape == plain["prompt_ids"].shape
    assert plain["completion_mask"].shape == plain["completion_ids"].shape
    assert plain["advantages"].shape == (rows,)
    assert plain["num_items_in_batch"].dim() == 0
    assert int(plain["num_items_in_batch"]) == int(plain["completion_mask"].sum())
    assert (plain["prompt_mask"][:, -1] == 1).all(), "prompts are no longer left-padded"
    assert (plain["completion_mask"][:, 0] == 1).all(), "completions are no longer right-padded"


def test_original_rows_untouched(batches):
    plain, augmented = batches
    rows, width = plain["completion_ids"].shape
    assert augmented["completion_ids"].size(0) > rows, "no constructed rows were appended"
    assert torch.equal(augmented["completion_ids"][:rows, :width], plain["completion_ids"])
    original_adv = augmented["advantages"][:rows]  # [B, T'] per token
    assert original_adv.dim() == 2
    expected = plain["advantages"].unsqueeze(1).expand(-1, width) * plain["completion_mask"]
    assert torch.equal(original_adv[:, :width] * plain["completion_mask"], expected)
    assert int(augmented["num_items_in_batch"]) == int(augmented["completion_mask"].sum())


def test_constructed_rows_answer_the_original_prompt(batches, trainer):
    plain, augmented = batches
    rows = plain["prompt_ids"].size(0)
    new_prompts = augmented["prompt_ids"][rows:]
    originals = {tuple(p[m.bool()].tolist()) for p, m in zip(augmented["prompt_ids"][:rows], augmented["prompt_mask"][:rows])}
    for prompt, mask in zip(new_prompts, augmented["prompt_mask"][rows:]):
        assert tuple(prompt[mask.bool()].tolist()) in originals


def reference_loss(trainer, batch) -> torch.Tensor:
    """DESIGN section 6 straight from the formulas: token mean over the batch of
    -min(r * A_t, clip(r, 1-eps_low, 1+eps_high) * A_t), with A_t = A_i on rollouts and
    lambda * w_t * A_ref on constructed tokens (w_t already inside the batch's advantages)."""
    model = trainer.model
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    width = batch["completion_ids"].size(1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, -width - 1 : -1] / trainer.temperature
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logps - batch["old_per_token_logps"])
    adv = batch["advantages"]
    clipped = torch.clamp(ratio, 1 - trainer.epsilon_low, 1 + trainer.epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    mask = batch["completion_mask"]
    return (per_token * mask).sum() / mask.sum()


def test_loss_matches_formula(batches, trainer):
    _, augmented = batches
    batch = dict(augmented)
    generator = torch.Generator().manual_seed(1)
    # Old log-probs off the current ones so that ratios differ from 1 and clipping matters.
    noise = 0.3 * torch.randn(batch["completion_ids"].shape, generator=generator)
    logps = trainer._score_tokens(trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])[0]
    batch["old_per_token_logps"] = logps + noise
    trainer.model.train()
    trainer.model.config.use_cache = False
    torch.manual_seed(0)
    engine = trainer._compute_loss(trainer.model, batch)
    expected = reference_loss(trainer, batch)
    assert torch.allclose(engine, expected, atol=1e-5), (engine.item(), expected.item())


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")  # all of TRL 1.16's


def select_rows(batch: dict, keep: torch.Tensor) -> dict:
    """The batch restricted to the rows where `keep` is true (scalars such as num_items_in_batch stay)."""
    return {k: v[keep] if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}


def with_padding_rows(batch: dict, n: int) -> dict:
    """`n` unused construction slots appended: a copied prompt, an all-zero completion mask, zero advantages."""
    padded = dict(batch)
    for key in ("prompt_ids", "prompt_mask", "completion_ids"):
        padded[key] = torch.cat([batch[key], batch[key][:n]])
    for key in ("completion_mask", "advantages", "ref_per_token_logps"):
        if key in batch:
            padded[key] = torch.cat([batch[key], torch.zeros_like(batch[key][:n])])
    padded[ROW_KIND_KEY] = torch.cat([batch[ROW_KIND_KEY], torch.full((n,), PADDING)])
    return padded


def loss_and_grad(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    trainer.model.zero_grad()
    return loss.detach(), grad


@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_padding_slots_change_no_loss_type(batches, trainer, loss_type, beta):
    """Unused slots never change the effective learning rate: same loss and gradient as without them."""
    _, augmented = batches
    real = select_rows(augmented, augmented[ROW_KIND_KEY] != PADDING)
    rows = real["prompt_ids"].size(0)
    assert (real[ROW_KIND_KEY] == CONSTRUCTED).any()
    if beta:
        real["ref_per_token_logps"] = trainer._score_tokens(
            trainer.model, real["prompt_ids"], real["prompt_mask"], real["completion_ids"], real["completion_mask"]
        )[0] - 0.2 * real["completion_mask"]  # a reference the policy has moved away from
    padded = with_padding_rows(real, 4)
    saved = trainer.loss_type, trainer.beta
    trainer.loss_type, trainer.beta = loss_type, beta
    try:
        (loss_real, grad_real), (loss_padded, grad_padded) = loss_and_grad(trainer, real), loss_and_grad(trainer, padded)
    finally:
        trainer.loss_type, trainer.beta = saved
    assert padded["prompt_ids"].size(0) == rows + 4
    assert grad_real.abs().sum() > 0
    assert torch.allclose(loss_real, loss_padded, rtol=1e-5, atol=1e-6), (loss_real, loss_padded)
    # The slots change the update's length buckets, so the forward shapes and their float rounding: a tolerance
    # on the gradient's scale (luspo sums over tokens, its gradients are ~20x the others').
    scale = float(grad_real.abs().max())
    assert torch.allclose(grad_real, grad_padded, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_update_in_length_buckets_is_trls_one_padded_pass_for_every_loss_type(batches, trainer, loss_type, beta):
    """update_buckets 2 (the default) against 1 (TRL's pass) on one batch of rollouts and constructions."""
    _, augmented = batches
    batch = dict(augmented)
    if beta:
        batch["ref_per_token_logps"] = trainer._score_tokens(
            trainer.model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"]
        )[0] - 0.2 * batch["completion_mask"]
    saved = trainer.loss_type, trainer.beta, trainer.args.update_buckets
    trainer.loss_type, trainer.beta = loss_type, beta
    try:
        trainer.args.update_buckets = 1
        loss_one, grad_one = loss_and_grad(trainer, batch)
        trainer.args.update_buckets = 2
        loss_two, grad_two = loss_and_grad(trainer, batch)
    finally:
        trainer.loss_type, trainer.beta, trainer.args.update_buckets = saved
    assert (batch[ROW_KIND_KEY] == CONSTRUCTED).any() and grad_one.abs().sum() > 0
    assert torch.allclose(loss_one, loss_two, rtol=1e-5, atol=1e-6), (loss_one, loss_two)
    assert torch.allclose(grad_one, grad_two, rtol=1e-4, atol=1e-6 * float(grad_one.abs().max()))


def test_constructed_advantages_carry_ots_and_lambda(tmp_path):
    """lambda scales the constructed rows' advantages and nothing else; OTS off gives constant rows."""
    results = {}
    for weight, ots in ((1.0, True), (0.5, True), (1.0, False)):
        trainer = make_trainer(tmp_path / f"w{weight}{ots}", ref_loss_weight=weight, ots=ots, ref_baseline="original")
        inputs = first_inputs(trainer)
        trainer.model.train()
        torch.manual_seed(0)
        results[(weight, ots)] = trainer._generate_and_score_completions(inputs)
    full, half, no_ots = results[(1.0, True)], results[(0.5, True)], results[(1.0, False)]
    rows = 16
    assert full["advantages"].size(0) > rows
    assert torch.allclose(half["advantages"][rows:], 0.5 * full["advantages"][rows:], atol=1e-6)
    assert torch.equal(half["advantages"][:rows], full["advantages"][:rows])
    # Without OTS each constructed row has one advantage value on all its real tokens.
    for adv, mask in zip(no_ots["advantages"][rows:], no_ots["completion_mask"][rows:]):
        values = adv[mask.bool()]
        if values.numel():
            assert torch.allclose(values, values[0].expand_as(values))


def test_prefix_ablation_trains_no_token_of_the_kept_prefix(tmp_path):
    """ref_train_prefix: false keeps every constructed token as context (attended) but trains none of its kept
    prefix: TRL's tool_mask is 0 there, so no policy-gradient, KL or entropy term and no token count has it."""
    results = {}
    for train_prefix in (True, False):
        # the warm-started tiny model writes checkable steps, so aligned keeps a prefix of y- (random weights do not)
        trainer = make_trainer(tmp_path / f"p{train_prefix}", "builtin:tiny-arith", ref_baseline="original",
                               ref_train_prefix=train_prefix, max_completion_length=24)
        inputs = first_inputs(trainer)
        trainer.model.train()
        torch.manual_seed(0)
        results[train_prefix] = trainer._generate_and_score_completions(inputs)
    full, ablated = results[True], results[False]
    rows = 16
    assert torch.equal(full["completion_ids"], ablated["completion_ids"])  # the same constructions
    assert torch.equal(full["completion_mask"], ablated["completion_mask"])  # all tokens stay attended
    assert torch.equal(full["advantages"], ablated["advantages"])
    assert "tool_mask" not in full and torch.all(ablated["tool_mask"][:rows] == 1)  # rollouts: every token trained
    records = [json.loads(line) for line in (tmp_path / "pFalse" / "constructions.jsonl").read_text().splitlines()]
    built_rows = [i for i in range(rows, full["advantages"].size(0)) if full["completion_mask"][i].any()]
    assert len(built_rows) == len(records) > 0
    prefix = torch.zeros_like(ablated["completion_mask"], dtype=torch.bool)
    for i, record in zip(built_rows, records, strict=True):
        start = record["reflection_start"]
        prefix[i, :start] = True
        assert torch.all(ablated["tool_mask"][i, :start] == 0) and torch.all(ablated["tool_mask"][i, start:] == 1)
    assert prefix.any()  # some construction kept a prefix of y-, so the ablation changed something
    trained = ablated["completion_mask"] * ablated["tool_mask"]
    assert ablated["num_items_in_batch"] == trained.sum() < full["num_items_in_batch"]

    # beta > 0: the KL term has no prefix token either (a reference that differs only there changes nothing)
    policy = trainer._score_tokens(trainer.model, ablated["prompt_ids"], ablated["prompt_mask"],
                                   ablated["completion_ids"], ablated["completion_mask"])[0]
    moved = {**ablated, "ref_per_token_logps": policy - 0.2 * ablated["completion_mask"]}
    moved_on_prefix = {**moved, "ref_per_token_logps": moved["ref_per_token_logps"] - 3.0 * prefix}
    saved = trainer.beta
    trainer.beta, trainer.current_gradient_accumulation_steps = 0.1, 1  # the latter set by Trainer.train()
    try:
        losses = [trainer._compute_loss(trainer.model, batch).item() for batch in (moved, moved_on_prefix)]
        without_mask = {k: v for k, v in moved_on_prefix.items() if k != "tool_mask"}
        unmasked = trainer._compute_loss(trainer.model, without_mask).item()
    finally:
        trainer.beta = saved
    assert math.isclose(losses[0], losses[1], rel_tol=1e-6), losses
    assert not math.isclose(unmasked, losses[1], rel_tol=1e-3)  # the prefix's KL would have counted


def test_templates_are_read_as_the_cold_start_reads_them(tmp_path):
    """A synthesis template saved with a byte-order mark (as some editors do) gives the trainer the text the cold
    start taught (`tapo.data.datasets.read_text`: UTF-8, the BOM dropped), not one starting with U+FEFF."""
    from tapo.core.synthesis import SELF_TEMPLATE

    path = tmp_path / "template.txt"
    path.write_bytes(b"\xef\xbb\xbf" + SELF_TEMPLATE.encode())
    trainer = make_trainer(tmp_path / "run", construction="self", synthesis_template=str(path))
    assert trainer.constructor.template == SELF_TEMPLATE
