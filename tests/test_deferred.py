"""synthesis_schedule deferred: riders in the rollouts' HF generate call, pending pairs across steps and checkpoints.

The distribution property (DESIGN section 3): with riders, a rollout row's next-token distribution at
every step is the one HF gives it alone, with the rollouts' own sampling settings, and a rider's is the
one of the synthesis settings. HF samples a batch with one `torch.multinomial`, so the random stream
(not the distribution) depends on the batch; the test therefore compares distributions, step by step:
what the call sampled each row from, against HF's own processors applied to that row's prefix alone.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList

from tapo.core import PendingConstruction
from tapo.core.constructors import chat_prompt_ids
from tapo.engine.deferred import PENDING_FILE, DeferredRound, load_pending, micro_steps_before, save_pending
from tapo.engine.riders import (
    RowLimits,
    RowwiseProcessor,
    prefill_in_two,
    prefilled_apart,
    rows_ended_apart,
    rows_sampled_apart,
)
from tapo.models import load_policy
from tapo.report.data import construction_counts
from tests.test_engine_paths import constructions
from tests.test_tapo_trainer import make_trainer

ROLLOUT = dict(temperature=1.0, top_p=1.0, top_k=20)  # the rollouts' settings in the generation config
RIDER = dict(temperature=0.7, top_p=0.95)  # the synthesis settings riders get on top of it


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = load_policy("builtin:tiny-arith", seed=0)
    model.eval()
    return model, tokenizer


def record_distributions(monkeypatch) -> list[torch.Tensor]:
    """Every RowwiseProcessor output (the scores each row is sampled from), step by step: [B, V] each."""
    seen: list[torch.Tensor] = []
    call = RowwiseProcessor.__call__

    def recording(self, input_ids, scores):
        out = call(self, input_ids, scores)
        seen.append(out.detach().clone())
        return out

    monkeypatch.setattr(RowwiseProcessor, "__call__", recording)
    return seen


def alone(model, config: GenerationConfig, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """The scores HF samples the next token from, for this row alone (no batch, no padding): [V]."""
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, -1, :]  # [1, V]
    processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=len(prompt),
                                              device="cpu")
    return processors(ids, logits)[0]


def riding_call(tokenizer):
    """Two rollout prompts and one rider ~3x as long (a synthesis context), left-padded as TRL pads them."""
    rollouts = [chat_prompt_ids(tokenizer, q) for q in ("What is 2 + 3?", "What is 9 - 4?")]
    riders = [chat_prompt_ids(tokenizer, "Rewrite this solution of 7 * 3 step by step and check it. " * 3)]
    prompts = rollouts + riders
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return prompts, input_ids, attention


def rollout_config(tokenizer, budgets) -> GenerationConfig:
    """The rollouts' sampling generation config of a riding call, run to its largest budget."""
    return GenerationConfig(do_sample=True, max_new_tokens=max(budgets), pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, **ROLLOUT)


def assert_every_row_sampled_as_alone(model, tokenizer, prompts, new, seen, config, budgets) -> int:
    """Each row's scores at each of its steps are those of the row alone under its own settings; rows checked."""
    rider_config = GenerationConfig(**{**config.to_dict(), **RIDER})
    checked = 0
    for row, prompt in enumerate(prompts):
        cfg = config if row < 2 else rider_config
        ended = next((t + 1 for t, tok in enumerate(new[row]) if tok == tokenizer.eos_token_id), len(new[row]))
        for t in range(min(budgets[row], ended)):
            expected = torch.softmax(alone(model, cfg, prompt, new[row][:t]), dim=-1)
            got = torch.softmax(seen[t][row], dim=-1)
            assert torch.allclose(got, expected, atol=1e-5), (row, t)
            checked += 1
    return checked


def test_rollout_rows_keep_their_distribution_and_riders_get_the_synthesis_settings(policy, monkeypatch):
    model, tokenizer = policy
    prompts, input_ids, attention = riding_call(tokenizer)
    width = input_ids.shape[1]
    budgets, stops = [6, 6, 10], [(), (), ()]
    config = rollout_config(tokenizer, budgets)
    seen = record_distributions(monkeypatch)
    torch.manual_seed(0)
    with rows_sampled_apart(model, n_rollouts=2, rider_sampling=RIDER, budgets=budgets, stops=stops,
                            tokenizer=tokenizer):
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
    assert "_get_logits_processor" not in model.__dict__ and "_get_stopping_criteria" not in model.__dict__
    new = out[:, width:].tolist()
    assert assert_every_row_sampled_as_alone(model, tokenizer, prompts, new, seen, config, budgets) >= 12
    # the two settings differ: a rollout row's distribution is not what the rider's settings would give
    rider_config = GenerationConfig(**{**config.to_dict(), **RIDER})
    assert not torch.allclose(torch.softmax(seen[0][0], -1),
                              torch.softmax(alone(model, rider_config, prompts[0], []), -1), atol=1e-3)
    # each row stops at its own budget: past it, only padding
    for row, budget in enumerate(budgets):
        assert all(tok == tokenizer.pad_token_id for tok in new[row][budget:]), (row, new[row])


def test_rollouts_and_riders_prefilled_apart_decode_as_each_row_alone(policy, monkeypatch):
    """The rollout rows are prefilled over their own width, not the rider's; every row still samples from
    exactly its own distribution at every step, and the patch is gone afterwards."""
    model, tokenizer = policy
    prompts, input_ids, attention = riding_call(tokenizer)
    width = input_ids.shape[1]
    budgets, stops = [6, 6, 10], [(), (), ()]
    config = rollout_config(tokenizer, budgets)
    seen = record_distributions(monkeypatch)
    shapes = []
    forward = type(model).forward

    @functools.wraps(forward)  # generate reads forward's signature (position_ids) to build its inputs
    def recording_forward(self, *args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", recording_forward)
    torch.manual_seed(0)
    with rows_sampled_apart(model, n_rollouts=2, rider_sampling=RIDER, budgets=budgets, stops=stops,
                            tokenizer=tokenizer), prefilled_apart(model, n_first=2):
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
    assert "generate" not in model.__dict__
    rollout_width = max(len(p) for p in prompts[:2])
    assert rollout_width < width - 10  # the rider is much wider: there is padding to skip
    # prefill: the rollouts over their own width, the rider over its own, then one token per row and step
    assert shapes[:3] == [(2, rollout_width - 1), (1, width - 1), (3, 1)]
    new = out[:, width:].tolist()
    monkeypatch.setattr(type(model), "forward", forward)
    assert assert_every_row_sampled_as_alone(model, tokenizer, prompts, new, seen, config, budgets) >= 12


def test_prefill_apart_leaves_calls_without_padding_to_skip_to_generate(policy):
    model, tokenizer = policy
    same = [chat_prompt_ids(tokenizer, q) for q in ("What is 2 + 3?", "What is 4 + 5?")]
    assert len(same[0]) == len(same[1])
    ids, mask = torch.tensor(same), torch.ones(2, len(same[0]), dtype=torch.long)
    assert prefill_in_two(model, ids, mask, n_first=1) is None  # equal widths: nothing saved
    assert prefill_in_two(model, ids, mask, n_first=2) is None  # no second batch


def test_row_limits_end_rows_at_their_budget_or_right_after_their_stop_string(policy):
    _, tokenizer = policy
    stop = "</reconstruction>"
    text_ids = tokenizer.encode("ok " + stop + " more", add_special_tokens=False)
    prompt = tokenizer.encode("x " + stop, add_special_tokens=False)  # the prompt's stop string does not count
    limits = RowLimits([3, 100], [(), (stop,)], tokenizer)
    done_at = {}
    for k in range(1, len(text_ids) + 1):
        ids = torch.tensor([prompt + text_ids[:k]] * 2)
        done = limits(ids, None).tolist()
        for row, flag in enumerate(done):
            if flag and row not in done_at:
                done_at[row] = k
    assert done_at[0] == 3
    assert stop in tokenizer.decode(text_ids[: done_at[1]]) and stop not in tokenizer.decode(text_ids[: done_at[1] - 1])


def test_row_limits_end_the_call_with_its_lead_rows_and_say_which_were_cut_short(policy):
    _, tokenizer = policy
    eos = tokenizer.eos_token_id
    prompt = tokenizer.encode("x y z", add_special_tokens=False)
    word = tokenizer.encode(" ok", add_special_tokens=False)[0]
    limits = RowLimits([5, 9, 9, 2], [(), (), (), ()], tokenizer, lead=1, eos_ids=[eos])
    rows = [[word, eos], [word, word], [word, eos], [word, word]]  # lead row ends (eos) at its 2nd token
    assert limits(torch.tensor([prompt + r[:1] for r in rows]), None).tolist() == [False, False, False, False]
    assert limits(torch.tensor([prompt + r for r in rows]), None).tolist() == [True] * 4
    assert limits.open_rows == [1] and limits.cut_at == 2  # row 2 ended by eos, row 3 by its budget: not open
    pad = tokenizer.pad_token_id  # synced processes step a finished call on: it stays ended, the cut unmoved
    assert limits(torch.tensor([prompt + r + [pad] for r in rows]), None).tolist() == [True] * 4
    assert limits.open_rows == [1] and limits.cut_at == 2
    alone = RowLimits([5, 9], [(), ()], tokenizer, lead=1, eos_ids=[eos])  # while the lead writes, nothing is cut
    assert alone(torch.tensor([prompt + [word]] * 2), None).tolist() == [False, False] and alone.open_rows == []
    with pytest.raises(ValueError, match="eos ids"):
        RowLimits([5], [()], tokenizer, lead=1)


def test_row_limits_see_a_stop_string_that_straddles_a_continuation(policy):
    _, tokenizer = policy
    stop = "</reconstruction>"
    ids = tokenizer.encode("ok " + stop, add_special_tokens=False)
    split = len(ids) - 2  # the stop string's last tokens are written in the continuation
    assert stop not in tokenizer.decode(ids[:split])
    prompt = tokenizer.encode("x", add_special_tokens=False) + ids[:split]  # the prompt ends with the earlier part
    carried = RowLimits([9], [(stop,)], tokenizer, carried=[split])
    blind = RowLimits([9], [(stop,)], tokenizer)
    first = torch.tensor([prompt + ids[split : split + 1]])
    carried(first, None), blind(first, None)
    whole = torch.tensor([prompt + ids[split:]])
    assert carried(whole, None).tolist() == [True] and blind(whole, None).tolist() == [False]


def test_a_rider_cut_short_goes_on_from_its_prefix_as_one_run(policy, monkeypatch):
    """The call ends with the rollouts; the rider's continuation (prompt + its tokens so far) samples every
    step from exactly the rider's own distribution given its whole prefix."""
    model, tokenizer = policy
    prompts, input_ids, attention = riding_call(tokenizer)
    width = input_ids.shape[1]
    budgets, stops = [3, 3, 12], [(), (), ()]
    config = rollout_config(tokenizer, budgets)
    torch.manual_seed(0)
    with rows_sampled_apart(model, n_rollouts=2, rider_sampling=RIDER, budgets=budgets, stops=stops,
                            tokenizer=tokenizer, eos_ids=[tokenizer.eos_token_id]) as made:
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
    limits = made[-1]
    assert out.shape[1] - width == 3 and limits.open_rows == [2] and limits.cut_at == 3  # ended with the rollouts
    partial = out[2, width:].tolist()
    rider_config = GenerationConfig(**{**config.to_dict(), **RIDER})
    seen = []
    build = model._get_logits_processor

    def recording(generation_config, *args, **kwargs):
        processors = build(generation_config, *args, **kwargs)

        def record(ids, scores):
            scores = processors(ids, scores)
            seen.append(scores.detach().clone())
            return scores

        return LogitsProcessorList([record])

    monkeypatch.setattr(model, "_get_logits_processor", recording)
    rest_prompt = prompts[2] + partial
    with rows_ended_apart(model, budgets=[12 - 3], stops=[()], tokenizer=tokenizer, carried=[3]):
        more = model.generate(input_ids=torch.tensor([rest_prompt]), generation_config=rider_config)
    rest = more[0, len(rest_prompt):].tolist()
    assert 1 <= len(rest) <= 9
    monkeypatch.undo()
    for t in range(len(rest)):
        expected = torch.softmax(alone(model, rider_config, prompts[2], partial + rest[:t]), dim=-1)
        assert torch.allclose(torch.softmax(seen[t][0], dim=-1), expected, atol=1e-5), t


# ---- in the trainer ----------------------------------------------------------------------------------------


def deferred_trainer(tmp_path, **overrides):
    """splice + surprise on the tiny model: a threshold this low cuts nearly every y-, and continuations that
    run out of budget are kept, so constructions are built on every step."""
    settings = dict(construction="splice", splice_locate="surprise", splice_surprise_threshold=0.01,
                    keep_truncated_constructions=True, synthesis_schedule="deferred", max_steps=3)
    return make_trainer(tmp_path, **{**settings, **overrides})


def record_generate_calls(monkeypatch, trainer) -> list[dict]:
    """Every HF generate call of the trainer's model: its max_new_tokens, prompt rows without padding, and
    the new tokens of each row."""
    from transformers import GenerationMixin

    calls: list[dict] = []
    real = GenerationMixin.generate

    def recording(model_self, *args, **kwargs):
        out = real(model_self, *args, **kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        calls.append({"max_new_tokens": kwargs["generation_config"].max_new_tokens,
                      "prompts": [row[m.bool()].tolist() for row, m in zip(ids, mask)],
                      "new": out[:, ids.shape[1]:].tolist()})
        return out

    monkeypatch.setattr(type(trainer.model), "generate", recording)
    return calls


def record_returns(monkeypatch, trainer, method: str) -> list:
    """What each call of the trainer's `method` returned, in order."""
    returned: list = []
    original = getattr(type(trainer), method)

    def recording(self, *args, **kwargs):
        returned.append(original(self, *args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(type(trainer), method, recording)
    return returned


def test_pairs_are_trained_a_step_later_and_the_last_ones_are_dropped_and_counted(tmp_path):
    trainer = deferred_trainer(tmp_path)
    chosen: dict[int, list[str]] = {}
    defer = type(trainer.constructor).defer

    def recording_defer(self, requests):
        chosen[trainer.state.global_step + 1] = sorted(r.pair.query_id for r in requests)
        return defer(self, requests)

    trainer.constructor.__class__.defer = recording_defer
    try:
        trainer.train()
    finally:
        trainer.constructor.__class__.defer = defer
    rows = [h for h in trainer.state.log_history if "tapo/pairs" in h and "train_runtime" not in h]
    assert [h["step"] for h in rows] == [1, 2, 3]
    assert "tapo/parsed_frac" not in rows[0]  # step 1 trains no construction: its pairs wait for step 2
    assert rows[0]["tapo/pending"] == rows[0]["tapo/pairs"] > 0
    assert rows[2]["tapo/deferred_dropped"] == rows[2]["tapo/pairs"] and rows[2]["tapo/pending"] == 0
    assert sorted(chosen) == [1, 2]  # the last step's pairs are never prepared
    records = constructions(trainer)
    by_step: dict[int, list[str]] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r["query_id"])
    assert sorted(by_step) == [2, 3]
    for step, ids in by_step.items():  # built and trained one step after the step that chose them
        assert set(ids) <= set(chosen[step - 1]), (step, ids, chosen[step - 1])
    for r in records:
        assert r["extra"]["locator"] == "surprise" and r["prefix_fidelity"] == 1.0


def test_rollouts_with_riders_are_cut_to_their_budget(tmp_path, monkeypatch):
    """`self` riders (budget max_completion_length + synthesis_extra_tokens) run the step-2 call to their
    budget; every rollout comes back within max_completion_length, and the clipped ratio TRL logs counts
    exactly those cut at it (the riders' own ends are in tests above)."""
    mcl, extra = 24, 16
    trainer = deferred_trainer(tmp_path, construction="self", max_steps=2, max_completion_length=mcl,
                               synthesis_extra_tokens=extra)
    calls = record_generate_calls(monkeypatch, trainer)
    generated = record_returns(monkeypatch, trainer, "_generate")
    trainer.train()
    ends = (trainer.processing_class.eos_token_id, trainer.pad_token_id)
    lengths = [[(len(ids), ids[-1] in ends) for ids in out[1]] for out in generated]
    rollouts = len(lengths[0])
    assert (calls[0]["max_new_tokens"], len(calls[0]["prompts"])) == (mcl, rollouts)  # step 1: rollouts alone
    # step 2: riders ride in the same call
    assert calls[1]["max_new_tokens"] == mcl + extra and len(calls[1]["prompts"]) > rollouts
    assert all(max(n for n, _ in step) <= mcl for step in lengths)
    clipped = [h["completions/clipped_ratio"] for h in trainer.state.log_history if "completions/clipped_ratio" in h]
    assert clipped[1] == pytest.approx(sum(not ended for _, ended in lengths[1]) / rollouts)
    assert all(n == mcl for n, ended in lengths[1] if not ended)  # cut at the budget, not before


def test_riders_still_writing_when_the_rollouts_end_go_on_in_a_call_of_their_own(tmp_path, monkeypatch):
    """`self` riders (budget 24 + 24) in a call whose rollouts end by 24 tokens: the call ends with them, and
    each rider still writing continues from its own prompt + its tokens so far; what the construction gets
    is the two parts joined."""
    mcl, extra = 24, 24
    trainer = deferred_trainer(tmp_path, construction="self", max_steps=2, max_completion_length=mcl,
                               synthesis_extra_tokens=extra)
    calls = record_generate_calls(monkeypatch, trainer)
    delivered = record_returns(monkeypatch, trainer, "_riders_completed")
    trainer.train()
    rollouts = len(calls[0]["prompts"])  # step 1: the rollouts alone
    riding_prompts, riding_new = calls[1]["prompts"], calls[1]["new"]
    assert len(riding_prompts) > rollouts and len(riding_new[0]) <= mcl  # the call ended with its rollouts
    riders = list(range(rollouts, len(riding_prompts)))
    pad, eos = trainer.pad_token_id, trainer.processing_class.eos_token_id
    open_riders = [r for r in riders if eos not in riding_new[r] and pad not in riding_new[r]]
    assert open_riders, "no rider was still writing: the test needs one"
    rest_prompts, rest_new = calls[2]["prompts"], calls[2]["new"]
    assert len(rest_prompts) == len(open_riders)
    got = [c for c in delivered[0] if c is not None]
    for k, r in enumerate(open_riders):
        assert rest_prompts[k] == riding_prompts[r] + riding_new[r]  # prompt + its tokens so far
        joined = riding_new[r] + rest_new[k]
        assert got[r - rollouts] == joined[: len(got[r - rollouts])] and len(got[r - rollouts]) <= mcl + extra
        assert len(got[r - rollouts]) > len(riding_new[r])  # it went on


def test_pending_pairs_survive_a_checkpoint(tmp_path):
    """Interrupted after step 2 (checkpoint-2 holds step 2's pending pairs), resumed: step 3 trains exactly those."""
    first = deferred_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    first.train()  # max_steps 2: its last pairs are dropped, so make the checkpoint's run longer
    pending_file = tmp_path / "checkpoint-1" / PENDING_FILE.format(rank=0)
    saved = json.loads(pending_file.read_text())["pending"]
    assert saved is not None and saved["items"]
    found, pending = load_pending(tmp_path / "checkpoint-1", 0, 1)
    assert found and len(pending.items) == len(saved["items"])
    assert all(isinstance(x, PendingConstruction) for x in pending.items)
    assert json.loads(json.dumps(pending.to_json())) == saved  # the round trip is exact

    # resume a 3-step run from checkpoint-1: its step 2 builds checkpoint-1's pairs
    (tmp_path / "constructions.jsonl").unlink()
    resumed = deferred_trainer(tmp_path, max_steps=3, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    step2 = [r for r in constructions(resumed) if r["step"] == 2]
    expected = {(x.request.pair.query_id, x.request.pair.negative_index) for x in pending.items}
    assert step2 and {(r["query_id"], r["negative_index"]) for r in step2} <= expected


def test_a_checkpoint_is_complete_only_with_its_pending_pairs(tmp_path, monkeypatch):
    """The pending pairs are written before trainer_state.json (what marks a checkpoint complete): interrupted
    while writing checkpoint-2's pairs, the run's last complete checkpoint is checkpoint-1, with its pairs."""
    import tapo.engine.trainer as trainer_module
    from tapo.engine.run import last_checkpoint

    real = trainer_module.save_pending

    def interrupted(folder, rank, pending):
        if Path(folder).name == "checkpoint-2":
            raise KeyboardInterrupt  # a Ctrl-C or a preemption while the checkpoint is written
        return real(folder, rank, pending)

    monkeypatch.setattr(trainer_module, "save_pending", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deferred_trainer(tmp_path, max_steps=3, save_strategy="steps", save_steps=1).train()
    assert not (tmp_path / "checkpoint-2" / "trainer_state.json").exists()
    found, pending = load_pending(last_checkpoint(tmp_path), 0, 1)
    assert last_checkpoint(tmp_path).name == "checkpoint-1" and found and pending.items


def test_micro_steps_before_an_update_follow_hfs_short_last_update_of_an_epoch():
    assert [micro_steps_before(u, accumulation=2, epoch_length=3) for u in range(5)] == [0, 2, 3, 5, 6]
    assert [micro_steps_before(u, accumulation=3, epoch_length=8) for u in range(5)] == [0, 3, 6, 8, 11]
    assert [micro_steps_before(u, accumulation=2, epoch_length=4) for u in range(3)] == [0, 2, 4]  # even epochs
    assert micro_steps_before(5, accumulation=4, epoch_length=None) == 20  # no length: full updates


def test_step_totals_are_the_counts_and_durations():
    from tapo.engine.trainer import _per_step_total

    totals = ["tapo/pairs", "tapo/tried", "tapo/built", "tapo/failed/truncated", "tapo/time/ots", "tapo/synthesis_tokens"]
    means = ["tapo/parsed_frac", "tapo/eligible_frac", "tapo/ots_w_mean", "reward", "loss"]
    assert all(map(_per_step_total, totals)) and not any(map(_per_step_total, means))


@pytest.mark.parametrize("length", [dict(max_steps=-1, num_train_epochs=1), dict(max_steps=4)])
def test_the_last_generation_is_known_when_an_epoch_ends_on_a_short_update(tmp_path, length):
    """16 prompts, 2 per micro-step: 8 micro-steps an epoch, in updates of 3, 3 and 2 (accumulation 3). Trained
    by epoch (3 updates, 8 micro-steps) or across an epoch's end (4 updates, 11 micro-steps), every generation
    but the last hands its pairs on, the last drops and counts them, and none is left pending."""
    trainer = deferred_trainer(tmp_path, gradient_accumulation_steps=3, steps_per_generation=1, **length)
    last: list[bool] = []
    judged = trainer._last_generation
    trainer._last_generation = lambda: last.append(judged()) or last[-1]
    trainer.train()
    micro_steps = {3: 8, 4: 11}[trainer.state.global_step]
    assert last and last == [False] * (len(last) - 1) + [True] and len(last) <= micro_steps, last
    assert trainer._pending is None
    dropped = [h["tapo/deferred_dropped"] for h in trainer.state.log_history if "tapo/deferred_dropped" in h]
    assert dropped and dropped[-1] > 0 and trainer.state.log_history[-2]["step"] == trainer.state.global_step
    # every pair chosen was tried once (a generation later) or dropped: the counts the progress bar and reports sum
    steps = trainer.state.log_history[:-1]
    assert sum(h.get("tapo/tried", 0) for h in steps) == sum(h.get("tapo/pairs", 0) for h in steps) - sum(dropped)
    assert construction_counts(steps) == (len(constructions(trainer)), sum(h.get("tapo/tried", 0) for h in steps))


def test_steps_that_reuse_a_generation_count_its_constructions_once(tmp_path):
    """steps_per_generation 2 over accumulation 1: every other step trains the second half of a generation and
    logs that generation's counts again (0 s of rollouts); the built / tried counts take each generation once."""
    trainer = deferred_trainer(tmp_path, steps_per_generation=2, gradient_accumulation_steps=1, max_steps=6)
    trainer.train()
    steps = trainer.state.log_history[:-1]
    reused = [h for h in steps if h.get("tapo/time/rollouts") == 0.0]
    assert len(reused) == 3 and all("tapo/pairs" in h for h in reused)
    built, tried = construction_counts(steps)
    assert built == len(constructions(trainer)) > 0
    assert tried == sum(h.get("tapo/pairs", 0) - h.get("tapo/deferred_dropped", 0) for h in steps if h not in reused)
    assert tried < sum(h.get("tapo/tried", 0) for h in steps)  # the repeated rows, which a plain sum counts twice


def test_a_checkpoint_without_pending_pairs_resumes_with_none(tmp_path):
    """A checkpoint of an inline run (no pending file) resumed with deferred: a warning, and no round to train."""
    deferred_trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1).train()
    (tmp_path / "checkpoint-1" / PENDING_FILE.format(rank=0)).unlink()
    resumed = deferred_trainer(tmp_path, max_steps=2, save_strategy="no")
    with pytest.warns(UserWarning, match="lacks some process's pending construction pairs"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    step2 = next(h for h in resumed.state.log_history if h.get("step") == 2)
    assert "tapo/tried" not in step2  # step 2 built nothing: no pairs were taken back


def test_a_pending_file_from_another_world_size_is_refused(tmp_path):
    round_ = DeferredRound(step=1, world_size=2, slots=0, pairs=[], group_rewards={}, rollout_rewards=[],
                           items=[], inputs=[], prompt_ids=[])
    save_pending(tmp_path, 0, round_)
    with pytest.raises(ValueError, match="split over 2 processes, this run has 1"):
        load_pending(tmp_path, 0, 1)
    assert load_pending(tmp_path / "none", 0, 1) == (False, None)


@pytest.mark.parametrize("overrides, message", [
    (dict(construction="aligned"), "construction aligned makes none"),
    (dict(decoupled=False), "decoupled: false"),
    (dict(synthesis_schedule="later"), "unknown synthesis_schedule 'later'"),
])
def test_deferred_options_are_checked(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        deferred_trainer(tmp_path, **overrides)
