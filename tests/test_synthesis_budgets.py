"""Each construction phase gets its own token budget and stop strings, for its call only (issue 13).

self synthesis (also splice's self fallback): max_completion_length + synthesis_extra_tokens, stops after
</reconstruction>; splice locate: splice_locate_tokens, stops after </analysis>; splice continuation:
splice_continuation_tokens (default max_completion_length), ends at eos; rollouts: untouched. Checked on HF generate (what the model's
`generate` receives, and a real stop of HF generation) and on TRL's vLLM path through the stand-in.
Single process, builtin:tiny-arith.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList

import standin_vllm
from tapo.core.constructors import chat_prompt_ids
from tapo.core.types import ConstructedTrajectory, ConstructionPair, ConstructionRequest
from tapo.engine.batching import CONSTRUCTED, ROW_KIND_KEY
from tapo.engine.trainer import TAPOConfig
from tapo.models import load_policy
from tapo.tensors import stack_rows
from tests.test_engine_paths import augmented_batch, constructions
from tests.test_tapo_trainer import make_trainer

MCL, EXTRA, LOCATE = 24, 8, 5  # distinct budgets: rollout / continuation 24, synthesis 32, locate 5
SELF_STOP, LOCATE_STOP = "</reconstruction>", "</analysis>"


class RecordingGenerate:
    """Replaces the policy class's `generate` for a test (instrumentation only: the real one runs).

    Records, per call, what HF generation is asked for: max_new_tokens, stop_strings, whether a tokenizer
    came with the call, and the new tokens each row got. `force`, when set, is a list of token-id targets,
    one per row: a logits processor makes row r emit force[r] then eos (a model that writes a stop string).
    """

    def __init__(self, monkeypatch, trainer):
        self.real = GenerationMixin.generate
        self.eos = trainer.processing_class.eos_token_id
        self.calls: list[dict] = []
        self.force: list[list[int]] | None = None
        self.fail = False
        recorder = self

        def generate(model_self, *args, **kwargs):
            return recorder(model_self, *args, **kwargs)

        monkeypatch.setattr(type(trainer.model), "generate", generate)

    def __call__(self, model_self, *args, **kwargs):
        config = kwargs["generation_config"]
        call = {"max_new_tokens": config.max_new_tokens, "stop_strings": config.stop_strings,
                "tokenizer": kwargs.get("tokenizer") is not None, "temperature": config.temperature}
        self.calls.append(call)
        if self.fail:
            raise RuntimeError("generation failed")
        if self.force is not None:
            width = kwargs["input_ids"].shape[1]
            kwargs["logits_processor"] = LogitsProcessorList([_Force(self.force, width, self.eos)])
        out = self.real(model_self, *args, **kwargs)
        call["new"] = out[:, kwargs["input_ids"].shape[1]:].tolist()
        return out


class _Force(LogitsProcessor):
    """Test-only: row r emits targets[r], then an eos id."""

    def __init__(self, targets, width, eos):
        self.targets, self.width, self.eos = targets, width, eos

    def __call__(self, input_ids, scores):  # [B, T], [B, V]
        step = input_ids.shape[1] - self.width
        forced = torch.full_like(scores, -float("inf"))  # [B, V]
        for row, target in enumerate(self.targets):
            forced[row, target[step] if step < len(target) else self.eos] = 0.0
        return forced


def hf_trainer(tmp_path, monkeypatch, **overrides):
    settings = dict(max_completion_length=MCL, synthesis_extra_tokens=EXTRA, splice_locate_tokens=LOCATE)
    trainer = make_trainer(tmp_path, **{**settings, **overrides})
    return trainer, RecordingGenerate(monkeypatch, trainer)


def restored(trainer) -> bool:
    """The rollouts' generation settings are back and no `generate` override is left on the model."""
    config = trainer.generation_config
    return (config.max_new_tokens == MCL and config.stop_strings is None and config.temperature == trainer.temperature
            and "generate" not in trainer.accelerator.unwrap_model(trainer.model_wrapped).__dict__)


def prompt(trainer, text="What is 2 + 3?") -> list[int]:
    return chat_prompt_ids(trainer.processing_class, text)


# ---- HF generate ------------------------------------------------------------------------------------------


def test_hf_generate_gets_each_phases_budget_and_stop_for_that_call_only(tmp_path, monkeypatch):
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="splice")
    for phase in ("synthesis", "locate", "continuation"):
        completions = trainer._synthesis_generate([prompt(trainer), prompt(trainer, "What is 7 - 4?")], phase=phase)
        assert len(completions) == 2 and restored(trainer), phase
    trainer._generate_single_turn([prompt(trainer)], None, {}, 1)  # a rollout call, after them
    seen = [(c["max_new_tokens"], c["stop_strings"], c["tokenizer"]) for c in recorder.calls]
    assert seen == [
        (MCL + EXTRA, [SELF_STOP], True),  # self synthesis
        (LOCATE, [LOCATE_STOP], True),  # splice locate
        (MCL, None, False),  # splice continuation: a rollout's budget, ends at eos
        (MCL, None, False),  # the rollout: untouched
    ]
    assert [c["temperature"] for c in recorder.calls] == [0.7, 0.7, 0.7, trainer.temperature]


def test_a_splice_step_asks_locate_and_fallback_with_their_budgets(tmp_path, monkeypatch):
    """A whole training step: rollouts, then locate (its own small budget), then one call for the continuations
    and the self fallbacks (on HF each row ends at its own budget and stop: the call runs to the self budget
    when a fallback is in it); the tiny model never writes a quote, so every pair falls back to self."""
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="splice")
    augmented_batch(trainer)
    seen = [(c["max_new_tokens"], c["stop_strings"], c["tokenizer"]) for c in recorder.calls]
    assert seen == [(MCL, None, False), (LOCATE, [LOCATE_STOP], True), (MCL + EXTRA, None, False)], seen
    assert restored(trainer)
    for record in constructions(trainer):
        assert record["generated_tokens"] <= LOCATE + MCL + EXTRA


def test_a_surprise_splice_step_decodes_no_locate_and_scores_with_the_policy(tmp_path, monkeypatch):
    """splice_locate surprise in a whole step: rollouts, then (no locate decode) the continuation of every cut
    y-; each construction keeps y-'s own ids up to its most surprising unit, and the trainer's ScoreFn gives
    the offline teacher-forced log-probs of the same rows (padding rows change nothing)."""
    from tapo.sampling.scoring import score_completions

    # a threshold this low cuts nearly every y- of the tiny model at its first unit; its continuations
    # rarely end within a rollout's budget, so truncated ones are kept
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="splice", splice_locate="surprise",
                                   splice_surprise_threshold=0.01, keep_truncated_constructions=True)
    inputs, _ = augmented_batch(trainer)
    seen = [(c["max_new_tokens"], c["stop_strings"], c["tokenizer"]) for c in recorder.calls]
    assert LOCATE not in [budget for budget, _, _ in seen], seen  # no locate decode
    # one call after the rollouts: the continuations (a rollout's budget, no stop), and the self fallbacks of
    # any y- with no surprising unit (the self budget; RowLimits ends each row)
    assert len(seen) == 2 and seen[1] in ((MCL, None, False), (MCL + EXTRA, None, False)), seen
    records = constructions(trainer)
    spliced = [r for r in records if r["strategy"] == "splice"]
    assert spliced, f"no surprise-located construction among {[(r['strategy'], r['extra']) for r in records]}"
    for record in spliced:
        assert record["extra"]["locator"] == "surprise" and record["extra"]["surprise"] >= 0.01
        kept = record["text"][: record["reflection_start_char"]]
        assert record["negative"].startswith(kept) and kept.rstrip().endswith(record["extra"]["quote"].strip())
        assert 0 < record["generated_tokens"] <= MCL  # the continuation only: locating decoded nothing

    rows = [(prompt(trainer), [11, 12, 13]), (prompt(trainer, "What is 7 - 4? Think."), [14]), (prompt(trainer), [])]
    got = trainer._policy_score([p for p, _ in rows], [c for _, c in rows])
    want = score_completions(trainer.model, [p for p, _ in rows], [c for _, c in rows],
                             pad_id=trainer.processing_class.pad_token_id)
    assert [len(g) for g in got] == [3, 1, 0]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)


def test_surprise_scores_the_models_own_distribution_whatever_the_rollout_temperature(tmp_path):
    """TRL's fused LM head divides the logits by the rollout temperature; the surprise threshold is in nats of
    the model's own distribution (as the offline pass and the threshold's tuning read it), so at a rollout
    temperature of 0.6 the trainer's ScoreFn still gives the offline log-probs, which the temperature-scaled
    ones are not."""
    from tapo.sampling.scoring import score_completions

    trainer = make_trainer(tmp_path, construction="splice", splice_locate="surprise", temperature=0.6)
    tokenizer = trainer.processing_class
    prompts = [chat_prompt_ids(tokenizer, "What is 2 + 3?"), chat_prompt_ids(tokenizer, "What is 7 - 4? Think.")]
    completions = [[11, 12, 13, 14], [15, 16]]
    want = score_completions(trainer.model, prompts, completions, pad_id=tokenizer.pad_token_id)
    got = trainer._policy_score(prompts, completions)
    assert [len(g) for g in got] == [4, 2]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)
    prompt_ids, prompt_mask = stack_rows(prompts, pad_id=tokenizer.pad_token_id, side="left")
    completion_ids, completion_mask = stack_rows(completions, pad_id=tokenizer.pad_token_id, side="right")
    scaled, _ = trainer._score_tokens(trainer.model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                      entropy=False)  # the loss's view: at the rollout temperature
    assert scaled[0, :4].tolist() != pytest.approx(want[0], abs=1e-2)


def test_settings_are_restored_when_generation_fails(tmp_path, monkeypatch):
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="self")
    recorder.fail = True
    with pytest.raises(RuntimeError, match="generation failed"):
        trainer._synthesis_generate([prompt(trainer)], phase="synthesis")
    assert recorder.calls[0]["stop_strings"] == [SELF_STOP] and recorder.calls[0]["tokenizer"]
    assert restored(trainer)


def test_hf_generation_stops_right_after_the_stop_string(tmp_path, monkeypatch):
    """The model is made to write a complete synthesis, then more text: generation ends at the token that
    completes </reconstruction> (padding after the row that ended first is cut off), and the construction
    is complete, not truncated. A token that runs past the string's end is kept whole."""
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="self", max_completion_length=160,
                                   synthesis_extra_tokens=0)
    tok = trainer.processing_class
    tok.add_tokens([">!!"])  # one token that completes "</reconstruction" and runs past its end
    trainer.model.resize_token_embeddings(len(tok))

    def encode(text):
        return tok.encode(text, add_special_tokens=False)

    negative = "Step 1: 2 + 3 = 6\nThe answer is \\boxed{6}."
    fix = "Step 1: 2 + 3 = 6\nWait, let me double-check: 2 + 3 = 5.\nThe answer is \\boxed{5}."
    short = encode(f"<analysis>2 + 3 is 5.</analysis><reconstruction>{fix}</reconstruction>")
    analysis = "<analysis>2 + 3 is 5, not 6: an addition slip.</analysis>"
    straddling = encode(f"{analysis}<reconstruction>{fix}</reconstruction") + tok.convert_tokens_to_ids([">!!"])
    after = encode("\nThat is all, and more text the budget allows.")
    assert len(short) < len(straddling)
    recorder.force = [short + after, straddling + after]
    requests = [
        ConstructionRequest(pair=ConstructionPair(f"q{i}", 0, 1), question="What is 2 + 3?", negative_text=negative,
                            negative_ids=tuple(encode(negative) + [tok.eos_token_id]),
                            positive_text="2 + 3 = 5. \\boxed{5}", answer="5")
        for i in range(2)
    ]
    results = trainer.constructor.construct(requests)

    [call] = recorder.calls
    new = call["new"]
    assert len(new[0]) == len(new[1]) == len(straddling)  # HF stopped the last row at its stop string
    assert new[0][len(short):] == [tok.pad_token_id] * (len(straddling) - len(short))  # row 0 padded after it
    assert tok.decode(straddling).endswith("</reconstruction>!!")
    for result, kept in zip(results, (short, straddling), strict=True):
        assert isinstance(result, ConstructedTrajectory), result
        assert result.extra["truncated"] is False and result.token_ids[-1] == tok.eos_token_id
        assert result.generated_tokens == len(kept)  # cut right after the completing token, padding dropped
        assert result.text == fix
    # the same output with no stop string (the continuation phase) runs on to eos: the stop is what ended it
    recorder.force = [short + after]
    [continued] = trainer._synthesis_generate([prompt(trainer)], phase="continuation")
    assert continued == short + after + [tok.eos_token_id]


def test_splice_continuation_tokens_is_the_continuation_budget(tmp_path, monkeypatch):
    """splice_continuation_tokens replaces a rollout's budget for the continuation phase only, in a whole
    surprise step too (rollouts, then the continuations of the cut y-); no construction generates more."""
    budget = MCL + 7
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="splice", splice_locate="surprise",
                                   splice_surprise_threshold=0.01, keep_truncated_constructions=True,
                                   splice_fallback="drop", splice_continuation_tokens=budget)
    assert trainer._phase_sampling("continuation") == (budget, ())
    assert trainer._phase_sampling("synthesis")[0] == MCL + EXTRA and trainer._phase_sampling("locate")[0] == LOCATE
    augmented_batch(trainer)
    seen = [c["max_new_tokens"] for c in recorder.calls]
    assert seen == [MCL, budget], seen  # the rollouts keep theirs; the continuations' call (no fallback) asks for it
    built = constructions(trainer)
    assert built and all(r["generated_tokens"] <= budget for r in built if r["strategy"] == "splice")
    assert any(r["generated_tokens"] > MCL for r in built if r["strategy"] == "splice")  # the budget was used


def test_splice_continuation_tokens_must_be_a_positive_integer_or_none(tmp_path):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="splice_continuation_tokens must be a positive integer or None"):
            TAPOConfig(output_dir=str(tmp_path), splice_continuation_tokens=bad, use_cpu=True, report_to=[])
    assert TAPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[]).splice_continuation_tokens is None


def test_splice_locate_tokens_must_be_a_positive_integer(tmp_path):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="splice_locate_tokens must be a positive integer"):
            TAPOConfig(output_dir=str(tmp_path), splice_locate_tokens=bad, use_cpu=True, report_to=[])
    assert TAPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[]).splice_locate_tokens == 128


def test_a_locate_budget_that_cannot_fit_fails_at_start_naming_it(tmp_path):
    with pytest.raises(ValueError, match="splice locate prompt .* splice_locate_tokens = 1900") as error:
        make_trainer(tmp_path, construction="splice", splice_fallback="drop", splice_locate_tokens=1900)
    assert "lower max_completion_length / splice_locate_tokens" in str(error.value)


# ---- vLLM (TRL's VLLMGeneration, server mode, with the in-process stand-in) ---------------------------------


@pytest.fixture
def standin(monkeypatch):
    """standin_vllm installed for this test only (TRL's module names are put back afterwards)."""
    from trl.generation import vllm_generation

    for name in ("is_vllm_available", "VLLMClient", "LLM", "SamplingParams"):
        monkeypatch.setattr(vllm_generation, name, getattr(vllm_generation, name, None), raising=False)
    monkeypatch.setattr(standin_vllm, "_settings", dict(standin_vllm._settings))
    return standin_vllm


def test_vllm_gets_each_phases_budget_and_stop_and_outputs_end_at_the_stop(tmp_path, standin):
    """splice with its self fallback on every other pair: every call reaches vLLM with its phase's
    max_tokens and stop (rollouts and continuations without stop), the stand-in ends answers as vLLM does,
    and the completions TAPO reads end with the stop string (the text the stand-in writes after it is gone)."""
    standin.install(load_policy("builtin:tiny-arith")[1], quote_not_found_every=2)
    mcl = 40  # the stand-in's continuation (~30 tokens) fits a rollout's budget
    trainer = make_trainer(tmp_path, use_vllm=True, vllm_mode="server", construction="splice",
                           max_completion_length=mcl, synthesis_extra_tokens=200, splice_locate_tokens=64)
    _, batch = augmented_batch(trainer)
    client = trainer.vllm_generation.vllm_client
    expected = {"rollout": (mcl, None), "continue": (mcl, None), "self": (mcl + 200, [SELF_STOP]),
                "locate": (64, [LOCATE_STOP])}
    kinds = set()
    tok = trainer.processing_class
    for call in client.calls:
        [kind] = set(call["kinds"])  # one process: no dummy padding prompt
        kinds.add(kind)
        assert (call["max_tokens"], call["stop"]) == expected[kind], kind
        assert call["include_stop_str_in_output"] is (expected[kind][1] is not None)
        for ids, each in zip(call["completions"], call["kinds"]):
            text = tok.decode(ids, skip_special_tokens=True)
            if each in ("self", "locate"):
                assert text.endswith(expected[each][1][0]) and tok.eos_token_id not in ids, text
            else:
                assert ids[-1] == tok.eos_token_id, text
    assert kinds == {"rollout", "locate", "continue", "self"}
    records = constructions(trainer)
    assert {(r["strategy"], r["extra"].get("fallback")) for r in records} == {("splice", None), ("self", "self")}
    assert (batch[ROW_KIND_KEY] == CONSTRUCTED).sum() == len(records)
    restored = trainer.vllm_generation
    assert (restored.max_completion_length, restored.generation_kwargs) == (mcl, {})


def test_vllm_synthesis_keeps_its_own_sampling_over_the_rollouts_generation_kwargs(tmp_path, standin):
    """The rollouts' top_p, stop and output regex (vllm_structured_outputs_regex, or kwargs vLLM lets override
    the named parameters) stay theirs: every synthesis call gets the synthesis top-p, its phase's stop (none
    for a continuation) and no regex, and the rollouts keep all three."""
    standin.install(load_policy("builtin:tiny-arith")[1], quote_not_found_every=2)
    trainer = make_trainer(tmp_path, use_vllm=True, vllm_mode="server", construction="splice",
                           max_completion_length=40, synthesis_extra_tokens=200, splice_locate_tokens=64,
                           generation_kwargs={"top_p": 0.9, "stop": ["</answer>"], "min_tokens": 1},
                           vllm_structured_outputs_regex=r"(.|\n)*")
    augmented_batch(trainer)
    calls = trainer.vllm_generation.vllm_client.calls
    expected_stop = {"rollout": ["</answer>"], "continue": None, "self": [SELF_STOP], "locate": [LOCATE_STOP]}
    for call in calls:
        [kind] = set(call["kinds"])
        rollout = kind == "rollout"
        assert call["stop"] == expected_stop[kind], kind
        assert (call["top_p"], call["regex"]) == ((0.9, r"(.|\n)*") if rollout else (0.95, None)), kind
    assert {k for call in calls for k in call["kinds"]} == {"rollout", "locate", "continue", "self"}
    restored = trainer.vllm_generation
    assert restored.generation_kwargs["top_p"] == 0.9 and restored.structured_outputs_regex == r"(.|\n)*"


def test_vllm_colocate_synthesis_keeps_its_own_sampling_over_the_rollouts_generation_kwargs(tmp_path, standin):
    """Colocate mode builds SamplingParams from the same attributes: the rollouts' top_p and stop in
    generation_kwargs stay theirs (the stand-in takes no output regex)."""
    standin.install_colocate(load_policy("builtin:tiny-arith")[1], quote_not_found_every=2)
    trainer = make_trainer(tmp_path, use_vllm=True, vllm_mode="colocate", construction="splice",
                           max_completion_length=40, synthesis_extra_tokens=200, splice_locate_tokens=64,
                           generation_kwargs={"top_p": 0.9, "stop": ["</answer>"], "min_tokens": 1})
    augmented_batch(trainer)
    calls = trainer.vllm_generation.llm.calls
    expected_stop = {"rollout": ["</answer>"], "continue": None, "self": [SELF_STOP], "locate": [LOCATE_STOP]}
    for call in calls:
        [kind] = set(call["kinds"])
        assert (call["top_p"], call["stop"]) == (0.9 if kind == "rollout" else 0.95, expected_stop[kind]), kind
    assert {k for call in calls for k in call["kinds"]} == {"rollout", "locate", "continue", "self"}


def test_splice_phases_share_one_hf_call_each_row_with_its_own_budget_and_stop(tmp_path, monkeypatch):
    """On HF generate, splice's continuations and its self fallbacks are one call (the phases cost the longest
    of them, not the sum): each row ends at its own phase's budget or right after its own stop string, and gets
    exactly what a call of its phase alone gives it (the same forced text, cut at the same token)."""
    from tapo.core import PendingConstruction

    mcl, extra = 160, 40  # the tiny model's tokens are short: room for a whole synthesis
    trainer, recorder = hf_trainer(tmp_path, monkeypatch, construction="splice", max_completion_length=mcl,
                                   synthesis_extra_tokens=extra)
    tok = trainer.processing_class
    running = tok.encode(" and one more word" * 40, add_special_tokens=False)  # never ends by itself
    synthesis = tok.encode("<analysis>2 + 3 is 5.</analysis><reconstruction>Step 1: 2 + 3 = 5</reconstruction> and on",
                           add_special_tokens=False)
    assert len(running) > mcl + extra and len(synthesis) < mcl
    request = ConstructionRequest(pair=ConstructionPair("q", 0, 1), question="What is 2 + 3?", negative_text="6",
                                  negative_ids=(1, 2), positive_text="5", answer="5")
    items = [PendingConstruction(request=request, phase="continuation", prompt_ids=tuple(prompt(trainer))),
             PendingConstruction(request=request, phase="synthesis", prompt_ids=tuple(prompt(trainer, "What is 7 - 4?")))]
    recorder.force = [running, synthesis]
    together = trainer._generate_pending(items)
    [call] = recorder.calls
    assert (call["max_new_tokens"], call["stop_strings"]) == (mcl + extra, None)  # the longest budget; RowLimits ends rows
    assert call["temperature"] == 0.7  # the synthesis sampling for every row
    assert together[0] == running[:mcl]  # the continuation: a rollout's budget
    assert tok.decode(together[1]).endswith("</reconstruction>") and together[1] == synthesis[: len(together[1])]
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    assert "_get_stopping_criteria" not in model.__dict__ and trainer.generation_config.max_new_tokens == mcl

    alone = []
    for item, forced in zip(items, (running, synthesis)):
        recorder.force = [forced]
        alone += trainer._synthesis_generate([list(item.prompt_ids)], phase=item.phase)
    assert alone == together
