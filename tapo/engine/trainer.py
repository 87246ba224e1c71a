"""The engine adapter: `TAPOConfig` and `TAPOTrainer`, a thin subclass of TRL's `GRPOTrainer`.

The parent generates and scores the rollouts and computes their GRPO advantages; this class then
selects construction pairs on the gathered batch (DCS), has the constructor write y_ref with the
parent's own generation path, scores y_ref with the parent's own reward path, computes decoupled
reflection-group advantages (DAE) in the engine's own normalisation, and OTS weights, and appends
the y_ref rows with per-token advantages lambda * w_t * A_ref. The parent's clipped loss then trains
them; three small hooks keep it exact for every loss type (unused slots never change a normaliser,
the entropy quantile and TRL's metrics stay about rollouts).

Distributed contract: every process makes the same collective and generation calls whatever its
data. Selection runs on the gathered view; each process gets the same number of construction
slots; every synthesis generation call passes the same number of prompts on every process (padded
with a dummy prompt whose output is dropped), because TRL's vLLM server path slices results back
by that count and ZeRO-3/FSDP generation gathers parameters collectively.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, has_length
from accelerate.utils import gather, gather_object
from trl import GRPOConfig, GRPOTrainer

from tapo.engine.batching import (
    CONSTRUCTED,
    PADDING,
    ROLLOUT,
    ROW_KIND_KEY,
    append_rows,
    mark_rollouts,
    slots_per_process,
)
from tapo.core import (
    ConstructedTrajectory,
    ConstructionRequest,
    PendingConstruction,
    batch_std,
    group_advantages,
    is_degenerate,
    masked_mean_and_low_frac,
    ots_weights,
    reflection_advantages,
    select_construction_pairs,
    trained_from,
)
from tapo.core.constructors import (
    PHASE_STOPS,
    PHASES,
    chat_prompt_ids,
    cut_after_stop,
    has_no_marker,
    make_constructor,
    prefix_fidelity,
    run_pending,
)
from tapo.core.locate import DEFAULT_THRESHOLD, SURPRISE_TEMPLATE
from tapo.core.synthesis import (
    CONTINUE_TEMPLATE,
    LOCATE_TEMPLATE,
    REFLECTION_OPENER,
    SELF_TEMPLATE,
    correction_start_char,
)
from tapo.engine.buckets import score_by_length
from tapo.engine.deferred import DeferredRound, load_pending, micro_steps_before, save_pending
from tapo.data.datasets import read_text
from tapo.engine.riders import prefilled_apart, rows_ended_apart, rows_sampled_apart
from tapo.report.data import CONSTRUCTIONS_FILE, MEASURED_PHASES, STEP_TIME_KEY, TIME_PREFIX
from tapo.tensors import stack_rows, token_logps

# TRL 1.16's normalisation of rollout advantages: sample std, this eps (grpo_trainer.py).
ENGINE_EPS = 1e-4
# Loss types that average per sequence, so an extra all-masked row would shrink the loss.
PER_SEQUENCE_LOSSES = ("grpo", "sapo", "luspo", "dr_grpo")
CLIPPED_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
DUMMY_PROMPT = "Reply with OK."  # pads a process's synthesis call to the common prompt count


@dataclass
class TAPOConfig(GRPOConfig):
    """GRPOConfig plus TAPO's options (DESIGN sections 1-3); defaults are the paper's."""

    n_pos: int = field(default=2, metadata={"help": "DCS: a group is eligible with at least n_pos correct rollouts."})
    n_neg: int = field(default=4, metadata={"help": "DCS: ... and at least n_neg incorrect rollouts."})
    m_max: int = field(default=4, metadata={"help": "DCS: at most m_max constructions per eligible query."})
    ref_loss_weight: float = field(default=1.0, metadata={"help": "lambda, the weight of the reflection loss."})
    ots: bool = field(default=True, metadata={"help": "OOD token suppression on constructed tokens."})
    ots_w_min: float = field(default=0.01, metadata={"help": "OTS lower clamp."})
    ots_w_max: float = field(default=10.0, metadata={"help": "OTS upper clamp."})
    construction: str = field(default="self", metadata={"help": "self | splice | aligned."})
    splice_fallback: str = field(default="self", metadata={"help": "splice: self | drop when the quote is not in y-."})
    ref_baseline: str = field(default="reflection", metadata={"help": "reflection (paper) | original."})
    ref_train_prefix: bool = field(
        default=True,
        metadata={"help": "Train y_ref's kept prefix too (paper). False (ablation): only reflection + correction."},
    )
    decoupled: bool = field(
        default=True, metadata={"help": "DAE. False (ablation) mixes y_ref into the original group."}
    )
    synthesis_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of synthesis."})
    synthesis_top_p: float = field(default=0.95, metadata={"help": "Top-p of synthesis."})
    synthesis_extra_tokens: int = field(
        default=512,
        metadata={"help": "A `self` synthesis (also splice's self fallback) may generate max_completion_length + "
                          "this many tokens; it stops right after </reconstruction>."},
    )
    splice_locate_tokens: int = field(
        default=128,
        metadata={"help": "splice: the token budget of the locate call (quote and diagnosis), which stops right "
                          "after </analysis>."},
    )
    splice_continuation_tokens: int | None = field(
        default=None,
        metadata={"help": "splice: the token budget of the continuation (reflection and correction after y-'s kept "
                          "prefix), which ends at eos. None: max_completion_length, a rollout's budget."},
    )
    splice_locate: str = field(
        default="ask",
        metadata={"help": "splice: how y-'s first mistake is found. ask: the policy quotes and diagnoses it (one short "
                          "decode). surprise: no decode; one teacher-forced pass scores y- with and without y+ in the "
                          "context and cuts after the first line or sentence y+ makes much less likely."},
    )
    splice_surprise_threshold: float = field(
        default=DEFAULT_THRESHOLD,
        metadata={"help": "splice_locate surprise: a line or sentence holds the first mistake when one of its tokens "
                          "is this many nats less likely once y+ is known."},
    )
    synthesis_schedule: str = field(
        default="inline",
        metadata={"help": "inline (paper): constructions are built and trained in the step that chose their pairs. "
                          "deferred: the pairs chosen at one generation are built in the next one's rollout call "
                          "(HF generate; their own call under vLLM) and trained beside its rollouts."},
    )
    update_buckets: int = field(
        default=2,
        metadata={"help": "The update scores its rows in this many forward passes, grouped by length, each padded "
                          "to its own longest row (1: TRL's one pass padded to the batch's longest)."},
    )
    synthesis_template: str | None = field(
        default=None, metadata={"help": "Path of a custom `self` synthesis template ($question, $negative, $positive)."}
    )
    splice_locate_template: str | None = field(
        default=None,
        metadata={"help": "Path of a custom splice `ask` locate template ($question, $negative, $positive); its "
                          "answer is <quote>...</quote><analysis>...</analysis>. None: the built-in LOCATE_TEMPLATE."},
    )
    keep_truncated_constructions: bool = field(
        default=False,
        metadata={"help": "Keep constructions that did not end within their budget (no eos appended), trained as "
                          "TRL trains truncated rollouts: masked out under mask_truncated_completions. Default: dropped."},
    )
    question_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column with the bare question that synthesis prompts quote. None: `problem` if "
                          "present, else the prompt's last message."},
    )
    answer_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column with the gold answer, recorded with each construction (the reward "
                          "functions get every column anyway). None: `answer` if present."},
    )
    max_construction_tokens: int | None = field(
        default=None,
        metadata={"help": "Drop (and count) constructed trajectories longer than this many tokens: caps the width "
                          "constructed rows add to a micro-batch. None: no cap beyond the synthesis budget."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.synthesis_schedule not in SCHEDULES:
            raise ValueError(f"unknown synthesis_schedule {self.synthesis_schedule!r}; choose from {', '.join(SCHEDULES)}")
        value = self.splice_locate_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"splice_locate_tokens must be a positive integer (the token budget of splice's locate call), "
                f"got {value!r}"
            )
        value = self.splice_continuation_tokens
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(
                f"splice_continuation_tokens must be a positive integer or None (max_completion_length), got {value!r}"
            )
        value = self.update_buckets
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"update_buckets must be a positive integer (forward passes of the update), got {value!r}")


SCHEDULES = ("inline", "deferred")


def tapo_option_names() -> set[str]:
    """The fields TAPOConfig adds to GRPOConfig (the `tapo:` section of a run config)."""
    return {f.name for f in fields(TAPOConfig)} - {f.name for f in fields(GRPOConfig)}


@dataclass
class _Row:
    """One rollout of the gathered batch, as selection and construction need it."""

    query_id: str
    question: str
    inputs: dict  # the dataset row (prompt, answer, ...)
    prompt_ids: list[int]
    completion_ids: list[int]  # as generated, whatever mask_truncated_completions did to the mask
    completion_text: str
    reward: float
    truncated: bool  # cut off by the token budget (no eos): never a y-


@dataclass
class _ChosenRound:
    """One generation's gathered rollouts, grouped, and the pairs DCS chose on them."""

    rows: list[_Row]
    groups: list[list[_Row]]
    group_keys: list[str]  # unique per group; a pair's query_id is its group's key
    group_of: dict[str, int]
    pairs: list  # ConstructionPair, global, in slot order
    slots: int  # construction slots per process
    start: int  # this process's first slot

    @property
    def local_pairs(self) -> list:
        return self.pairs[self.start : self.start + self.slots]

    def requests(self, answer_of) -> list[ConstructionRequest]:
        """This process's construction requests: each local pair's question, y-, y+ and prompt."""
        requests = []
        for pair in self.local_pairs:
            group = self.groups[self.group_of[pair.query_id]]
            negative, positive = group[pair.negative_index], group[pair.positive_index]
            requests.append(ConstructionRequest(
                pair=pair, question=negative.question, negative_text=negative.completion_text,
                negative_ids=tuple(negative.completion_ids), positive_text=positive.completion_text,
                answer=answer_of(negative.inputs), prompt_ids=tuple(negative.prompt_ids),
            ))
        return requests

    def round(self, *, step: int, world_size: int, items=()) -> DeferredRound:
        """What training these pairs needs, now or a generation later (then with their pending `items`)."""
        heads = [self.groups[self.group_of[p.query_id]][0] for p in self.local_pairs]
        return DeferredRound(
            step=step, world_size=world_size, slots=self.slots,
            pairs=list(self.pairs) + [None] * (self.slots * world_size - len(self.pairs)),
            group_rewards={key: [r.reward for r in g] for key, g in zip(self.group_keys, self.groups, strict=True)},
            rollout_rewards=[r.reward for r in self.rows], items=list(items),
            inputs=[dict(r.inputs) for r in heads], prompt_ids=[list(r.prompt_ids) for r in heads],
        )


class TAPOTrainer(GRPOTrainer):
    """GRPO + trajectory augmentation. With `algorithm: grpo` the plain `GRPOTrainer` runs instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.args
        if not isinstance(cfg, TAPOConfig):
            raise TypeError("TAPOTrainer needs a TAPOConfig")
        if self.beta != 0.0 and self.ref_model is None:
            raise ValueError("TAPO with beta != 0 needs a separate reference model (PEFT adapters are not supported)")
        if not cfg.decoupled and cfg.ref_baseline != "reflection":
            raise ValueError(
                f"decoupled: false mixes y_ref into the original group, so ref_baseline {cfg.ref_baseline!r} has no "
                "meaning there; set decoupled: true or drop ref_baseline"
            )
        if cfg.synthesis_schedule == "deferred" and cfg.construction == "aligned":
            raise ValueError("synthesis_schedule deferred defers a generation, and construction aligned makes none; "
                             "use synthesis_schedule inline")
        if cfg.synthesis_schedule == "deferred" and not cfg.decoupled:
            raise ValueError("decoupled: false mixes y_ref into its original group, which synthesis_schedule deferred "
                             "trains a step before y_ref; use decoupled: true or synthesis_schedule inline")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "TAPO normalises reflection groups like TRL's multi_objective_aggregation 'sum_then_normalize'; "
                f"{self.multi_objective_aggregation!r} is not supported"
            )
        # read as the cold start reads them (UTF-8, a BOM dropped): the prompt it taught is the one used here
        template = read_text(cfg.synthesis_template) if cfg.synthesis_template else None
        locate_template = read_text(cfg.splice_locate_template) if cfg.splice_locate_template else None
        template_kwargs = dict(self.chat_template_kwargs)
        if self.chat_template is not None:
            template_kwargs["chat_template"] = self.chat_template
        self._dummy_prompt_ids = chat_prompt_ids(self._tokenizer, DUMMY_PROMPT, template_kwargs)
        eos_first = [self._tokenizer.eos_token_id, *(i for i in self.eos_token_ids if i != self._tokenizer.eos_token_id)]
        self.constructor = make_constructor(
            cfg.construction,
            tokenizer=self._tokenizer,
            generate=self._synthesis_generate,
            self_template=template,
            locate_template=locate_template,
            splice_fallback=cfg.splice_fallback,
            eos_token_ids=eos_first,
            chat_template_kwargs=template_kwargs,
            keep_truncated=cfg.keep_truncated_constructions,
            max_tokens=cfg.max_construction_tokens,
            splice_locate=cfg.splice_locate,
            score=self._policy_score,
            surprise_threshold=cfg.splice_surprise_threshold,
        )
        self._check_columns()
        self._check_synthesis_fits(template or SELF_TEMPLATE, locate_template or LOCATE_TEMPLATE)
        self._rollout_rewards: torch.Tensor | None = None  # [B_global] set by _calculate_rewards
        self._rollout_completion_ids: list[list[int]] | None = None  # local, as generated, set by _generate
        self._row_kinds: torch.Tensor | None = None  # the micro-batch's row kinds while its loss is computed
        self._captured: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (logps, entropies) of that loss
        self._generation_metrics: dict[str, float] = {}  # tapo/* of the generation being trained
        self._rollout_seconds = 0.0  # the parent's generation of this step's rollouts
        # synthesis_schedule deferred: the round chosen at the last generation, and its riders on this one
        self._pending: DeferredRound | None = None
        self._epoch_micro_steps: int | None = None  # the train dataloader's length (HF's steps_in_epoch)
        self._update_seen, self._in_update = None, 0  # the update the current micro-step belongs to, its place in it
        self._riders: list[PendingConstruction] | None = None  # set for the rollout call they ride in
        self._rider_completions: list[list[int]] | None = None  # what they got there
        self._rides = cfg.synthesis_schedule == "deferred" and not (
            self.use_vllm or self.use_transformers_continuous_batching or self.rollout_func is not None
            or self.tools or self._is_vlm
        )  # HF generate with text prompts only; elsewhere the deferred generation is its own call
        # HF generate ends each row at its own budget and stop, so pending phases share one call (`_generate_pending`)
        self._phases_share_a_call = not (self.use_vllm or self.use_transformers_continuous_batching)

    # ---- hooks on the parent ---------------------------------------------------------------------

    def _generate(self, prompts):
        started = time.perf_counter()
        riders = None
        if self.model.training and self._rides and self._pending is not None:
            riders = [x for x in self._pending.items if isinstance(x, PendingConstruction)]
        self._riders, self._rider_completions = riders, None
        try:
            out = super()._generate(prompts)
        finally:
            self._riders = None
        self._rollout_completion_ids = [list(ids) for ids in out[1]]  # before any truncation mask
        if self.model.training:
            self._rollout_seconds = time.perf_counter() - started
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """The parent's generation; in a deferred run's rollout call, with the riders as extra rows.

        Each row is sampled and ended as its own (`tapo.engine.riders`) and the call ends with the rollouts:
        riders still writing then go on in a call of their own (`_continue_riders`), since HF generate keeps
        a finished row in the batch, and the rollout rows would be decoded for nothing at every step a long
        rider still runs. The rollouts come back cut to max_completion_length and the riders' completions
        are kept for `_augment` (cut after their stop string, as `_synthesis_generate` cuts). Unless
        parameters are sharded, rollouts and riders are prefilled apart (`prefilled_apart`): the rollouts
        are not padded to the riders' longer prompts.
        """
        riders, self._riders = self._riders, None
        if riders is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if not riders:
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
            self._rider_completions = self._continue_riders([], [])  # collective: another process may continue
            return out
        n, mcl = len(prompt_ids), self.max_completion_length
        plans = [self._phase_sampling(x.phase) for x in riders]  # (budget, stop strings) per rider
        budgets = [mcl] * n + [budget for budget, _ in plans]
        stops = [()] * n + [strings for _, strings in plans]
        sampling = {"temperature": self.args.synthesis_temperature, "top_p": self.args.synthesis_top_p}
        config, saved = self.generation_config, self.generation_config.max_new_tokens
        config.max_new_tokens = max(budgets)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        # ZeRO-3/FSDP forwards gather parameters collectively: there every process keeps generate's one prefill
        apart = not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        try:
            with rows_sampled_apart(model, n_rollouts=n, rider_sampling=sampling, budgets=budgets, stops=stops,
                                    tokenizer=self._tokenizer, eos_ids=self._call_ends_with_rollouts()) as made, \
                    prefilled_apart(model, n_first=n) if apart else contextlib.nullcontext():
                completion_ids, logprobs = super()._generate_single_turn(
                    list(prompt_ids) + [list(x.prompt_ids) for x in riders], images, multimodal_fields,
                    num_generations, has_tool_images,
                )
        finally:
            config.max_new_tokens = saved
        limits = made[-1]
        partial = [list(ids[:budget]) for ids, (budget, _) in zip(completion_ids[n:], plans, strict=True)]
        cut_short = [row - n for row in limits.open_rows]  # riders the rollouts' end stopped, after cut_at tokens
        for j in cut_short:
            partial[j] = partial[j][: limits.cut_at]  # HF padded nothing there, but be exact about it
        more = self._continue_riders([(riders[j], partial[j]) for j in cut_short], [plans[j] for j in cut_short])
        for j, tail in zip(cut_short, more, strict=True):
            partial[j] = partial[j] + tail
        self._rider_completions = [
            cut_after_stop(self._tokenizer, ids, strings) if strings else ids
            for ids, (_, strings) in zip(partial, plans, strict=True)
        ]
        return [list(ids[:mcl]) for ids in completion_ids[:n]], logprobs

    def _call_ends_with_rollouts(self) -> tuple[int, ...]:
        """The eos ids whose appearance ends a rollout row in HF generate, so that the riding call can end with
        the rollouts; () (the call runs to the longest rider) where a continuation would not be sampled
        as one run: a minimum length counts from the call's start."""
        config = self.generation_config
        if config.min_new_tokens or config.min_length:
            return ()
        eos = config.eos_token_id
        return tuple([eos] if isinstance(eos, int) else list(eos or ()))

    def _continue_riders(self, started: list, plans: list[tuple[int, tuple[str, ...]]]) -> list[list[int]]:
        """The rest of each cut-short rider's completion, in one call of their own: prompt = the rider's
        prompt + what it wrote so far, budget = what is left of its own, same synthesis sampling. Sampling
        goes on from the same prefix with the same processors, so prefix + rest is distributed as one
        uninterrupted run; a stop string may straddle the two calls (`RowLimits.carried`). Collective
        (`_generate_rows_apart`): every process joins, unless none has a rider to continue."""
        return self._generate_rows_apart(
            [list(x.prompt_ids) + ids for x, ids in started],
            budgets=[budget - len(ids) for (_, ids), (budget, _) in zip(started, plans, strict=True)],
            stops=[strings for _, strings in plans], carried=[len(ids) for _, ids in started],
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # an unscorable rollout is in no side of selection and in no baseline (TRL leaves it out of its group's)
        self._rollout_rewards = self._weighted_rewards(rewards_per_func)
        return rewards_per_func

    def _weighted_rewards(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """The weighted sum of each row's rewards: [N]; NaN for a row no reward function scores (all None),
        as TRL marks it."""
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return rewards

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)  # rollouts, GRPO advantages untouched
        if not self.model.training:
            return batch  # evaluation is plain inference
        return self._augment(inputs, batch)

    def _compute_loss(self, model, inputs):
        """The parent's loss, with unused slots kept out of per-sequence normalisers (see `_loss_scale`)."""
        kinds = inputs.get(ROW_KIND_KEY)
        if kinds is None:
            return super()._compute_loss(model, inputs)
        scale = _loss_scale(kinds, self.loss_type)
        beta = self.beta
        if scale != 1.0:
            # Every policy term of TRL's loss types is linear in the advantage (clipping acts on the ratio, the
            # sign decides the branch), and the KL term in beta: scaling both by B / B_real turns the mean over B
            # rows into the mean over the B_real real rows, exactly, with no change to TRL's code or metrics.
            inputs = {**inputs, "advantages": inputs["advantages"] * scale}
            self.beta = beta * scale
        self._row_kinds, self._captured = kinds, None
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.beta, self._row_kinds = beta, None
        if self._captured is not None:
            self._split_loss_metrics(inputs, kinds, *self._captured)
        self._captured = None
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        parent = super()._get_per_token_logps_and_entropies
        buckets = self.args.update_buckets
        if buckets == 1 or compute_aux_loss or any(v is not None for v in multimodal.values()):
            out = parent(model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                         compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        else:  # rows padded to their bucket's longest (tapo.engine.buckets); TRL's own chunks when it chunks
            logps, entropies = score_by_length(
                lambda ids, mask, width: parent(model, ids, mask, width, compute_entropy=compute_entropy),
                input_ids, attention_mask, logits_to_keep, buckets=buckets, batch_size=batch_size,
                compute_entropy=compute_entropy,
            )
            out = (logps, entropies, None)
        if self._row_kinds is not None:  # inside _compute_loss: keep what the metrics need
            self._captured = (out[0].detach(), out[1].detach() if out[1] is not None else None)
        return out

    def get_high_entropy_mask(self, entropies, mask, threshold):
        """TRL's entropy quantile over rollout tokens only; constructed tokens pass (OTS filters them)."""
        if self._row_kinds is None:
            return super().get_high_entropy_mask(entropies, mask, threshold)
        constructed = (self._row_kinds == CONSTRUCTED).to(mask.device).unsqueeze(1)  # [B, 1]
        high = super().get_high_entropy_mask(entropies, mask * ~constructed, threshold)
        return high | (constructed & mask.bool())

    def log(self, logs, start_time=None):
        # Steps that reuse a generation (num_iterations > 1, steps_per_generation > accumulation) train the same
        # constructed rows again; their tapo/* values are those of that generation, except the phase times:
        # those phases did not run in this step (0). Only a step's log ("loss"), not the end-of-training summary.
        train = self._metrics["train"]
        if self.model.training and "loss" in logs:
            if self._generation_metrics and not any(k in train for k in self._generation_metrics):
                for name, value in self._generation_metrics.items():
                    train[name].append(0.0 if name.startswith(TIME_PREFIX) else value)
            # A step can hold several generations (steps_per_generation < accumulation); TRL logs each key's
            # mean over them, but counts and seconds add up (step_time is the whole step's): per step, totals.
            steps = max(len(train.get(STEP_TIME_KEY, [])), 1)
            for name in [name for name in train if _per_step_total(name)]:
                train[name] = [sum(train[name]) / steps]
        if self.model.training and train.get(STEP_TIME_KEY) and train.get(f"{TIME_PREFIX}rollouts"):
            train[f"{TIME_PREFIX}update"] = [_step_rest(train)]
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """The parent's training; a deferred run resumed from a checkpoint first takes back its pending pairs."""
        if self.args.synthesis_schedule == "deferred" and resume_from_checkpoint:
            folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                      else resume_from_checkpoint)
            if folder is not None:
                found, self._pending = load_pending(folder, self.accelerator.process_index, self.accelerator.num_processes)
                if not all(gather_object([found])):  # every process takes its share back, or none does (collectives)
                    self._pending = None
                    warnings.warn(f"{folder} lacks some process's pending construction pairs (saved by an inline "
                                  "run?); the deferred schedule starts with none", stacklevel=2)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        # Every process saves its own share of the pending pairs, before the parent writes trainer_state.json:
        # a checkpoint folder with that file counts as complete (`tapo.engine.run.last_checkpoint`), so an
        # interruption in between must leave a folder that is not taken up on resume, not one without its pairs.
        if self.args.synthesis_schedule == "deferred":
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            save_pending(folder, self.accelerator.process_index, self._pending)
            self.accelerator.wait_for_everyone()  # every process's file before the main one writes the state
        super()._save_checkpoint(model, trial)

    # ---- TAPO ---------------------------------------------------------------------------------

    def _augment(self, inputs: list[dict], batch: dict) -> dict:
        cfg, started = self.args, time.perf_counter()
        self._generation_metrics = {}
        rows = self._gathered_rows(inputs, batch)
        k = self.num_generations
        groups = [rows[g * k : (g + 1) * k] for g in range(len(rows) // k)]
        group_keys = _unique_keys([group[0].query_id for group in groups])
        pairs = select_construction_pairs(
            [(key, [r.reward for r in group]) for key, group in zip(group_keys, groups, strict=True)],
            n_pos=cfg.n_pos, n_neg=cfg.n_neg, m_max=cfg.m_max, seed=cfg.seed, step=self.state.global_step,
            truncated=[[r.truncated for r in group] for group in groups],
        )
        group_of = {key: g for g, key in enumerate(group_keys)}
        eligible = len({p.query_id for p in pairs})
        slots = slots_per_process(len(pairs), num_processes=self.accelerator.num_processes, multiple_of=cfg.steps_per_generation)
        self._log_tapo(eligible_frac=eligible / max(len(groups), 1), pairs=float(len(pairs)),
                       **{"time/rollouts": self._rollout_seconds})
        chosen = _ChosenRound(rows=rows, groups=groups, group_keys=group_keys, group_of=group_of, pairs=pairs,
                              slots=slots, start=self.accelerator.process_index * slots)
        if cfg.synthesis_schedule == "deferred":
            return self._augment_deferred(chosen, batch, started)
        if slots == 0:
            self._log_tapo(**{"time/synthesis": 0.0, "time/score": 0.0, "time/ots": 0.0})  # nothing was constructed
            return mark_rollouts(batch)

        # This process builds the pairs in its slots; unused slots stay empty and masked.
        requests = chosen.requests(self._answer_of)
        synthesis_started = time.perf_counter()
        if len(getattr(self.constructor, "pending_phases", ())) > 1:  # splice with its self fallback
            items = self.constructor.defer(requests)
            results = self.constructor.complete(items, self._generate_pending(items))
        else:
            results = self.constructor.construct(requests)
        synthesis_seconds = time.perf_counter() - synthesis_started
        world = self.accelerator.num_processes
        return self._train_constructions(batch, chosen.round(step=self.state.global_step, world_size=world),
                                         results=results, requests=requests,
                                         pad_row=rows[0], synthesis_seconds=synthesis_seconds, started=started,
                                         group_index=group_of)

    def _augment_deferred(self, chosen: _ChosenRound, batch: dict, started: float) -> dict:
        """synthesis_schedule deferred: train the constructions of the pairs the previous generation chose
        (their last generation rode in this step's rollout call, or runs now in its own call), then hand this
        generation's pairs to the next one, after their locate phase, or drop them at the last generation.
        Every branch is taken alike on every process (the rounds and slots are global)."""
        previous, self._pending = self._pending, None
        results = None
        synthesis_started = time.perf_counter()
        if previous is not None:
            if self._rides:
                completions = self._riders_completed(previous.items)
            else:
                completions = self._generate_pending(previous.items)
            results = self.constructor.complete(previous.items, completions)
        if chosen.slots > 0 and self._last_generation():
            self._log_tapo(deferred_dropped=float(len(chosen.pairs)))  # no later step would train them
        elif chosen.slots > 0:
            requests = chosen.requests(self._answer_of)
            items = self.constructor.defer(requests)  # splice: the locate phase now (collective)
            self._pending = chosen.round(step=self.state.global_step, world_size=self.accelerator.num_processes,
                                         items=items)
        self._log_tapo(pending=float(len(chosen.pairs)) if self._pending is not None else 0.0)
        synthesis_seconds = time.perf_counter() - synthesis_started
        if previous is None:
            self._log_tapo(**{"time/synthesis": synthesis_seconds, "time/score": 0.0, "time/ots": 0.0})
            return mark_rollouts(batch)
        requests = [x.request if isinstance(x, PendingConstruction) else None for x in previous.items]
        return self._train_constructions(batch, previous, results=results, requests=requests, pad_row=chosen.rows[0],
                                         synthesis_seconds=synthesis_seconds, started=started, group_index=None)

    def _riders_completed(self, items) -> list[list[int] | None]:
        """The riders' completions from this step's rollout call, aligned with the pending items."""
        waiting = [i for i, x in enumerate(items) if isinstance(x, PendingConstruction)]
        got = self._rider_completions
        if got is None or len(got) != len(waiting):
            raise RuntimeError(
                f"{len(waiting)} deferred constructions waited on this step's rollout call, which returned "
                f"{'none' if got is None else len(got)}: the TRL generation contract changed"
            )
        completions: list[list[int] | None] = [None] * len(items)
        for i, completion in zip(waiting, got):
            completions[i] = completion
        self._rider_completions = None
        return completions

    def _last_generation(self) -> bool:
        """Whether this generation is the run's last (TRL generates every steps_per_generation x num_iterations
        micro-steps), so pairs chosen now would never be trained."""
        before = functools.partial(micro_steps_before, accumulation=self.args.gradient_accumulation_steps,
                                   epoch_length=self._epoch_micro_steps)
        done = before(self.state.global_step) + self._in_update  # this micro-step's index in the run
        return done + self.args.steps_per_generation * self.num_iterations >= before(self.state.max_steps)

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        self._epoch_micro_steps = len(loader) if has_length(loader) else None
        return loader

    def training_step(self, model, inputs, num_items_in_batch):
        step = self.state.global_step  # the micro-step's place in its update, which generation reads
        self._in_update = self._in_update + 1 if self._update_seen == step else 0
        self._update_seen = step
        return super().training_step(model, inputs, num_items_in_batch)

    def _train_constructions(self, batch: dict, chosen: DeferredRound, *, results, requests, pad_row: _Row,
                             synthesis_seconds: float, started: float, group_index: dict[str, int] | None) -> dict:
        """Score, weigh and append the constructions of one round's pairs (this process's `chosen.slots` slots).

        `results` and `requests` are this process's, one per local pair; `chosen` holds the round's global
        pairs, its group rewards and this process's rows (prompt and dataset row per local pair). Unused
        slots are padded with `pad_row` and masked. `group_index` (inline only) lets the mixed-group
        ablation rewrite the rollouts' advantages.
        """
        cfg, slots = self.args, chosen.slots
        start = self.accelerator.process_index * slots
        built = [r if isinstance(r, ConstructedTrajectory) else None for r in results]
        built += [None] * (slots - len(built))
        synthesis_tokens = sum(r.generated_tokens for r in results)

        # Score y_ref with the rollouts' own reward path (a collective call: every process passes `slots` rows).
        score_started = time.perf_counter()
        pad = slots - len(chosen.inputs)
        slot_inputs = [dict(x) for x in chosen.inputs] + [pad_row.inputs] * pad
        slot_prompt_ids = [list(p) for p in chosen.prompt_ids] + [pad_row.prompt_ids] * pad
        slot_texts = [t.text if t else "" for t in built]
        slot_ids = [list(t.token_ids) if t else [] for t in built]
        prompts = [x["prompt"] for x in slot_inputs]
        completions = [_as_completion(text, prompt) for text, prompt in zip(slot_texts, prompts, strict=True)]
        # what reward functions log (log_metric, log_extra) is about the rollouts: TRL flushes it with the next
        # generation's, so the constructed rows' would land in that step's metrics and completions table
        logged = self._pending_metrics, self._pending_extra_logs
        self._pending_metrics, self._pending_extra_logs = defaultdict(list), defaultdict(list)
        try:
            per_func = self._calculate_rewards(slot_inputs, prompts, completions, slot_ids)
        finally:
            self._pending_metrics, self._pending_extra_logs = logged
        rewards = self._weighted_rewards(per_func)  # [slots * world]
        # a construction no reward function scores carries no signal, as TRL zeroes such a rollout's advantage:
        # it is not trained, and counts as a failure ("unscorable")
        unscorable = rewards[start : start + slots].isnan().tolist()  # this process's slots
        unscored = [u and t is not None for u, t in zip(unscorable, built, strict=True)]
        built = [None if u else t for u, t in zip(unscored, built, strict=True)]
        slot_ids = [list(t.token_ids) if t else [] for t in built]
        used = gather(torch.tensor([t is not None for t in built], device=self.accelerator.device))  # [slots * world]
        self._rollout_rewards = None  # the rollouts' rewards were consumed by the parent already
        score_seconds = time.perf_counter() - score_started

        # DAE: one reflection group per query, normalized on its own (or against the original group).
        ref_adv, degenerate, groups_with_refs, batch = self._reflection_advantages(
            chosen.pairs, rewards.tolist(), used.tolist(), chosen.group_rewards, chosen.rollout_rewards,
            group_index, batch,
        )
        local_adv = ref_adv[start : start + slots]

        # OTS weights under the current policy, reference log-probs for the KL term, and the rows to append.
        ots_started = time.perf_counter()
        prompt_ids, prompt_mask = stack_rows(slot_prompt_ids, pad_id=self.pad_token_id, side="left")
        completion_ids, completion_mask = stack_rows(slot_ids, pad_id=self.pad_token_id, side="right", width=1)
        truncated_kept = [t is not None and bool(t.extra.get("truncated")) for t in built]
        if self.mask_truncated_completions:  # a kept truncated construction is masked like a truncated rollout
            completion_mask = completion_mask * torch.tensor([not t for t in truncated_kept]).unsqueeze(1).long()
        logps, entropies = self._score_tokens(self.model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        ref_logps = (
            self._score_tokens(self.ref_model, prompt_ids, prompt_mask, completion_ids, completion_mask, entropy=False)[0]
            if self.beta != 0.0 else None
        )
        mask = completion_mask.to(logps.device)
        weights = (
            ots_weights(logps, entropies, cfg.ots_w_min, cfg.ots_w_max) if cfg.ots else torch.ones_like(logps)
        )  # [S, T']
        advantages = cfg.ref_loss_weight * torch.tensor(local_adv, device=logps.device).unsqueeze(1) * weights * mask
        trained = None
        if not cfg.ref_train_prefix:  # [S, T'] the kept prefix is context, as TRL's tool output: in no loss term
            starts = [t.reflection_start if t is not None else 0 for t in built]
            trained = trained_from(starts, mask.shape[1]).to(mask.device)
            mask = mask * trained  # the OTS weight statistics cover trained tokens only
        kinds = torch.tensor([CONSTRUCTED if t is not None else PADDING for t in built])
        batch = append_rows(
            batch, prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=completion_mask, advantages=advantages, per_token_logps=logps,
            ref_per_token_logps=ref_logps, row_kinds=kinds, trained_mask=trained, pad_token_id=self.pad_token_id,
        )
        loss_mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        ots_seconds = time.perf_counter() - ots_started

        # Metrics (over all processes) and the constructions file.
        w_stats = self.accelerator.gather(torch.tensor(_weight_sums(weights, mask, cfg.ots_w_min), device=self.accelerator.device))
        w_sum, w_low, w_count = w_stats.view(-1, 3).sum(dim=0).tolist()
        records = [self._record(t, rewards[start + i].item(), local_adv[i], weights[i], mask[i], requests[i])
                   for i, t in enumerate(built) if t is not None]
        records = gather_object(records)
        outcomes = gather_object(["unscorable" if unscored[i] else getattr(r, "reason", "built")
                                  for i, r in enumerate(results)])
        tokens = sum(gather_object([synthesis_tokens]))
        n_built = len(records)
        fidelities = [r["prefix_fidelity"] for r in records if r["prefix_fidelity"] is not None]
        truncated = sum(o == "truncated" for o in outcomes) + sum(bool(r["extra"].get("truncated")) for r in records)
        # why the others failed: tapo/failed/<reason>, a count over all processes, logged when nonzero
        failed = Counter(o for o in outcomes if o != "built")
        self._log_tapo(
            tried=float(len(outcomes)),  # the pairs constructed now (deferred: the previous generation's)
            built=float(n_built),
            parsed_frac=n_built / max(len(outcomes), 1),
            truncated_frac=truncated / max(len(outcomes), 1),
            no_marker_frac=sum(r["no_marker"] for r in records) / max(n_built, 1),
            ref_correct_frac=sum(r["reward"] > 0 for r in records) / max(n_built, 1),
            ref_groups_degenerate_frac=degenerate / max(groups_with_refs, 1),
            ots_w_mean=w_sum / max(w_count, 1.0),
            ots_w_low_frac=w_low / max(w_count, 1.0),
            prefix_fidelity=sum(fidelities) / max(len(fidelities), 1),
            synthesis_tokens=float(tokens),
            synthesis_seconds=time.perf_counter() - started,
            ref_adv_mean=sum(r["advantage"] for r in records) / max(n_built, 1),
            **{"time/synthesis": synthesis_seconds, "time/score": score_seconds, "time/ots": ots_seconds},
            **{f"failed/{reason}": float(n) for reason, n in sorted(failed.items())},
        )
        if self.accelerator.is_main_process:
            self._write_constructions(records)
        return batch

    def _gathered_rows(self, inputs: list[dict], batch: dict) -> list[_Row]:
        """The whole batch as every process sees it after gathering (groups may span processes).

        Completion ids are the generated ones (`_generate`), not read through the completion mask,
        which TRL zeroes for truncated rollouts under `mask_truncated_completions`.
        """
        prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]
        completion_ids = self._rollout_completion_ids
        if completion_ids is None or len(completion_ids) != len(prompt_ids):
            raise RuntimeError("TRL batch contract changed: _generate did not return one completion per prompt")
        ends = {*self.eos_token_ids, self._tokenizer.pad_token_id}  # TRL's own truncation test
        truncated = [not ids or ids[-1] not in ends for ids in completion_ids]
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        local = list(zip([dict(x) for x in inputs], prompt_ids, completion_ids, texts, truncated, strict=True))
        gathered = gather_object(local)
        rewards = self._rollout_rewards.tolist()
        if len(rewards) != len(gathered):
            raise RuntimeError(f"TRL batch contract changed: {len(rewards)} rewards for {len(gathered)} rows")
        return [
            _Row(
                query_id=str(x.get("query_id", x.get("id", _prompt_text(x["prompt"])[:64]))),
                question=self._question_of(x),
                inputs=x, prompt_ids=p, completion_ids=c, completion_text=t, reward=float(r), truncated=cut,
            )
            for (x, p, c, t, cut), r in zip(gathered, rewards, strict=True)
        ]

    def _question_of(self, row: dict) -> str:
        column = self.args.question_column
        if column is not None:
            return str(row[column])
        return str(row["problem"]) if "problem" in row else _prompt_text(row["prompt"])

    def _answer_of(self, row: dict) -> str:
        column = self.args.answer_column or "answer"
        return str(row.get(column, ""))

    def _check_columns(self) -> None:
        """A configured question/answer column must exist in the training data (say which, and what there is)."""
        names = getattr(self.train_dataset, "column_names", None)
        if names is None:
            return  # an iterable dataset without a schema: checked on the first batch
        for option in ("question_column", "answer_column"):
            column = getattr(self.args, option)
            if column is not None and column not in names:
                raise ValueError(
                    f"{option} {column!r} is not a column of the training dataset (columns: {', '.join(names)}); "
                    f"set {option} to one of them, or leave it unset"
                )

    def _advantage_options(self) -> dict:
        """group_advantages' options for TRL's convention: sample std, eps 1e-4, scale_rewards honoured."""
        return dict(eps=ENGINE_EPS, unbiased=True, scale=self.scale_rewards != "none")

    def _reflection_advantages(self, all_pairs, rewards, used, group_rewards, rollout_rewards, group_index, batch):
        """A_ref per slot (global order); with decoupled=False the original rows' advantages change too.

        `group_rewards` maps a pair's query key to its rollout group's rewards, `rollout_rewards` holds
        every rollout reward of the pairs' batch. Reflection groups are normalised exactly as TRL
        normalises the rollouts, so A_ref and A_orig share one scale: sample std and eps 1e-4, no
        division under `scale_rewards: none`, and under `batch` the std of the whole batch (of
        constructed rewards for reflection groups, of rollout rewards for the `original` baseline, of
        both for the mixed ablation, which needs `group_index` to find the group's rows). A lone y_ref
        keeps A = r.
        """
        cfg = self.args
        by_group: dict[str, list[int]] = {}
        for slot, pair in enumerate(all_pairs):
            if pair is not None and used[slot]:
                by_group.setdefault(pair.query_id, []).append(slot)
        options = self._advantage_options()
        ref_rewards_all = [rewards[s] for slots in by_group.values() for s in slots]
        scored_rollouts = [r for r in rollout_rewards if not math.isnan(r)]  # unscorable ones are in no baseline
        batch_scaled = self.scale_rewards == "batch"
        ref_adv = [0.0] * len(all_pairs)
        degenerate = 0
        for key, slots in by_group.items():
            ref_rewards = [rewards[s] for s in slots]
            original = [r for r in group_rewards[key] if not math.isnan(r)]
            degenerate += is_degenerate(ref_rewards)
            if cfg.decoupled:
                pool = scored_rollouts if cfg.ref_baseline == "original" else ref_rewards_all
                std = batch_std(pool) if batch_scaled else None
                values = reflection_advantages(
                    ref_rewards, baseline=cfg.ref_baseline, original_rewards=original, std=std, **options
                )
            else:  # ablation: one mixed group; the original rollouts' advantages are recomputed with it
                std = batch_std(scored_rollouts + ref_rewards_all) if batch_scaled else None
                mixed = iter(group_advantages(original + ref_rewards, std=std, **options))
                rollout_values = [0.0 if math.isnan(r) else next(mixed) for r in group_rewards[key]]
                values = list(mixed)
                batch = self._overwrite_group_advantages(batch, group_index[key], rollout_values)
            for s, v in zip(slots, values, strict=True):
                ref_adv[s] = v
        return ref_adv, degenerate, len(by_group), batch

    def _overwrite_group_advantages(self, batch: dict, group: int, values: list[float]) -> dict:
        k, local = self.num_generations, batch["advantages"].size(0)
        first = self.accelerator.process_index * local
        adv = batch["advantages"].clone()
        for j, value in enumerate(values):
            row = group * k + j - first
            if 0 <= row < local:
                adv[row] = value
        return {**batch, "advantages": adv}

    @torch.no_grad()
    def _score_tokens(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, entropy: bool = True):
        """Log-probs (and entropies) of the constructed tokens under `model` (policy or reference): [S, T'] each."""
        device = self.accelerator.device
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)  # [S, P'+T']
        attention = torch.cat([prompt_mask, completion_mask], dim=1).to(device)  # [S, P'+T']
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention, completion_ids.size(1),
            batch_size=self.args.per_device_train_batch_size, compute_entropy=entropy,
        )
        return logps, entropies

    def _policy_score(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        """The constructors' ScoreFn (splice_locate: surprise): log-probs of the completions under the policy.

        A collective call like `_synthesis_generate`: every process scores the same number of rows
        (padded with the dummy prompt and a one-token completion, dropped), so ZeRO-3/FSDP make the
        same forward passes everywhere, unless no process has any row.
        """
        most = max(gather_object([len(prompts)]))
        if most == 0:
            return []
        pad = most - len(prompts)
        prompt_ids, prompt_mask = stack_rows(
            list(prompts) + [self._dummy_prompt_ids] * pad, pad_id=self.pad_token_id, side="left"
        )  # [most, P]
        completion_ids, completion_mask = stack_rows(
            list(completions) + [[self.pad_token_id]] * pad, pad_id=self.pad_token_id, side="right", width=1
        )  # [most, T]
        if self.temperature == 1.0:
            logps, _ = self._score_tokens(self.model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                          entropy=False)
        else:
            logps = self._unscaled_logps(prompt_ids, prompt_mask, completion_ids, completion_mask)
        return [logps[i, : len(ids)].tolist() for i, ids in enumerate(completions)]

    @torch.no_grad()
    def _unscaled_logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        """Log-probs of the completions at temperature 1: [S, T'].

        Surprise is read from the model's own distribution, as the offline pass (`score_completions`) and
        the threshold's tuning read it; TRL's fused LM head divides the logits by the rollout temperature.
        One row per forward (the same count on every process: the rows are padded alike), its logits
        normalised in chunks of positions, so no [S, T', V] tensor is held.
        """
        device = self.accelerator.device
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)  # [S, P'+T']
        attention = torch.cat([prompt_mask, completion_mask], dim=1).to(device)  # [S, P'+T']
        width = completion_ids.size(1)
        rows = []
        for i in range(input_ids.size(0)):
            logits = self.model(input_ids=input_ids[i : i + 1], attention_mask=attention[i : i + 1],
                                logits_to_keep=width + 1).logits[:, :-1]  # [1, T', V]: column t predicts token t
            rows.append(token_logps(logits, completion_ids[i : i + 1].to(device)))  # [1, T']
        return torch.cat(rows)  # [S, T']

    def _synthesis_generate(self, prompt_ids: list[list[int]], *, phase: str) -> list[list[int]]:
        """The constructors' GenerateFn: the parent's generation path with the sampling of `phase`.

        Every process passes the same number of prompts (the largest local count, padded with a
        dummy prompt whose output is dropped), and calls generation even with no prompt of its own,
        unless no process has any: TRL's vLLM server path gathers prompts and slices the results
        back by the local count, and ZeRO-3/FSDP generation gathers parameters collectively. A phase
        with stop strings gets its completions cut right after the first one (`cut_after_stop`:
        HF generate pads a batch's finished rows; vLLM already ends at the completing token).
        """
        budget, stops = self._phase_sampling(phase)
        most = max(gather_object([len(prompt_ids)]))
        if most == 0:
            return []
        padded = list(prompt_ids) + [self._dummy_prompt_ids] * (most - len(prompt_ids))
        with self._synthesis_sampling(budget, stops):
            completion_ids, _ = self._generate_single_turn(padded, None, {}, 1)
        completions = [list(ids) for ids in completion_ids[: len(prompt_ids)]]
        return [cut_after_stop(self._tokenizer, ids, stops) for ids in completions] if stops else completions

    def _generate_pending(self, items: list) -> list[list[int] | None]:
        """The completions `constructor.complete` needs for these pending items (None for a failure).

        On HF generate every phase shares one call: each row ends at its own phase's budget or right after
        its stop string (`rows_ended_apart`), all sampled with the synthesis settings, so a row's completion
        is distributed as in a call of its phase alone, and the phases cost the longest of them, not the
        sum. vLLM takes one budget and stop list per call: there each phase is its own call (`run_pending`).
        Collective like `_synthesis_generate`: one call on every process, padded to the same row count.
        """
        phases = self.constructor.pending_phases
        if len(phases) < 2 or not self._phases_share_a_call:
            return run_pending(self._synthesis_generate, items, phases=phases)
        waiting = [i for i, x in enumerate(items) if isinstance(x, PendingConstruction)]
        plans = [self._phase_sampling(items[i].phase) for i in waiting]  # (budget, stop strings) per row
        longest = max(self._phase_sampling(phase)[0] for phase in phases)  # the same call on every process
        got = self._generate_rows_apart([list(items[i].prompt_ids) for i in waiting],
                                        budgets=[budget for budget, _ in plans],
                                        stops=[strings for _, strings in plans], max_tokens=longest)
        completions: list[list[int] | None] = [None] * len(items)
        for i, ids, (_, strings) in zip(waiting, got, plans):
            completions[i] = cut_after_stop(self._tokenizer, ids, strings) if strings else ids
        return completions

    def _generate_rows_apart(self, prompts: list[list[int]], *, budgets: list[int], stops: list[tuple[str, ...]],
                             max_tokens: int | None = None, carried: list[int] | None = None) -> list[list[int]]:
        """One HF call, synthesis sampling, each row ended at its own budget or right after its stop string
        (`rows_ended_apart`, `carried` as there); each completion cut back to its budget (HF pads a row
        that ended early). `max_tokens` is the call's budget (default: the largest row budget here).
        Collective like `_synthesis_generate`: every process calls, padded with dummy rows of one token to
        the largest row count, unless no process has a row ([] then)."""
        most = max(gather_object([len(prompts)]))
        if most == 0:
            return []
        padding = most - len(prompts)
        budgets = list(budgets) + [1] * padding  # a dummy row ends at once
        with self._synthesis_sampling(max_tokens or max(budgets)), rows_ended_apart(
            self.accelerator.unwrap_model(self.model_wrapped), budgets=budgets,
            stops=list(stops) + [()] * padding, tokenizer=self._tokenizer,
            carried=None if carried is None else list(carried) + [0] * padding,
        ):
            completion_ids, _ = self._generate_single_turn(
                list(prompts) + [self._dummy_prompt_ids] * padding, None, {}, 1)
        return [list(ids[:budget]) for ids, budget in zip(completion_ids[: len(prompts)], budgets)]

    def _continuation_tokens(self) -> int:
        """splice's continuation budget: `splice_continuation_tokens`, else a rollout's (max_completion_length)."""
        return self.args.splice_continuation_tokens or self.max_completion_length

    def _phase_sampling(self, phase: str) -> tuple[int, tuple[str, ...]]:
        """(token budget, stop strings) of a construction phase (DESIGN section 2, synthesis sampling)."""
        budgets = {
            "synthesis": self.max_completion_length + self.args.synthesis_extra_tokens,
            "locate": self.args.splice_locate_tokens,
            "continuation": self._continuation_tokens(),
        }
        if phase not in budgets:
            raise ValueError(f"unknown construction phase {phase!r}; the constructors use {', '.join(PHASES)}")
        return budgets[phase], PHASE_STOPS[phase]

    @contextlib.contextmanager
    def _synthesis_sampling(self, max_tokens: int, stops: tuple[str, ...] = ()):
        """For the duration of one call: the synthesis temperature and top-p, this budget, these stop strings.

        vLLM (colocate and server) gets `stop` and `include_stop_str_in_output` through its
        generation kwargs, without the rollouts' sampling, stop and output-format keys there
        (`ROLLOUT_ONLY_VLLM_KWARGS`) or their `vllm_structured_outputs_regex`. HF generate gets
        `stop_strings` in the generation config and, since transformers builds its stop-string
        criterion only from a tokenizer passed to `generate`, the tokenizer too (`_tokenizer_reaches_generate`). Everything is restored on exit, also on
        error, so rollouts never see any of it. transformers' continuous batching takes no stop
        strings: there completions are only cut afterwards.
        """
        cfg = self.args
        sampling = {"temperature": cfg.synthesis_temperature, "top_p": cfg.synthesis_top_p}
        hf_stops = bool(stops) and not self.use_vllm and not self.use_transformers_continuous_batching
        if self.use_vllm:
            target = self.vllm_generation
            # vLLM lets generation_kwargs override the named parameters, and the rollouts' output constraint
            # (a regex) would bind every synthesis to the answer format: those stay the rollouts'
            kwargs = {k: v for k, v in target.generation_kwargs.items() if k not in ROLLOUT_ONLY_VLLM_KWARGS}
            if stops:
                kwargs.update(stop=list(stops), include_stop_str_in_output=True)
            values = {**sampling, "max_completion_length": max_tokens, "generation_kwargs": kwargs,
                      "structured_outputs_regex": None}
        else:
            target = self.generation_config
            values = {**sampling, "max_new_tokens": max_tokens}
            if hf_stops:
                values["stop_strings"] = list(stops)
        saved = {name: getattr(target, name) for name in values}
        for name, value in values.items():
            setattr(target, name, value)
        try:
            with self._tokenizer_reaches_generate() if hf_stops else contextlib.nullcontext():
                yield
        finally:
            for name, value in saved.items():
                setattr(target, name, value)

    @contextlib.contextmanager
    def _tokenizer_reaches_generate(self):
        """Calls to the policy's HF `generate` inside this context get `tokenizer=` (stop strings need it).

        TRL 1.16 calls `unwrapped_model.generate(**inputs, generation_config=...)` without a tokenizer,
        on `accelerator.unwrap_model(self.model_wrapped)` (the object `unwrap_model_for_generation`
        yields, also under DeepSpeed ZeRO-3 and FSDP). For this context that object's `generate` is an
        instance attribute: its own `generate` with the tokenizer added. On exit the attribute is
        removed (or the one there before put back), also on error.
        """
        model = self.accelerator.unwrap_model(self.model_wrapped)
        missing = object()
        before = model.__dict__.get("generate", missing)
        generate = model.generate

        def with_tokenizer(*args, **kwargs):
            return generate(*args, **{"tokenizer": self._tokenizer, **kwargs})

        model.__dict__["generate"] = with_tokenizer
        try:
            yield
        finally:
            if before is missing:
                model.__dict__.pop("generate", None)
            else:
                model.__dict__["generate"] = before

    def _check_synthesis_fits(self, self_template: str, locate_template: str) -> None:
        """Fail at start-up, not mid-run, when a construction prompt plus its budget exceeds the context.

        Per phase the strategy uses: a `self` synthesis prompt holds the template, the question, y-
        and y+ (each up to max_completion_length tokens) and asks for max_completion_length +
        synthesis_extra_tokens; a splice locate prompt holds the same with the LOCATE template and
        asks for splice_locate_tokens; a continuation prompt holds the CONTINUE template, the
        question, y+, the locate analysis (at most splice_locate_tokens), y-'s kept prefix and the
        reflection opener, and asks for splice_continuation_tokens (default max_completion_length).
        With splice_locate surprise there is no locate prompt but a scored row (the SURPRISE
        template, the question, y+, then y-), and the analysis names one unit of y- (at most
        max_completion_length). The context is vLLM's `vllm_max_model_length` when set, else the
        model's.
        """
        cfg = self.args
        if cfg.construction == "aligned":
            return  # no model call
        if self.use_vllm and cfg.vllm_max_model_length:
            limit, source = int(cfg.vllm_max_model_length), "vllm_max_model_length"
        else:
            config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
            limit = getattr(config.get_text_config() if config is not None else None, "max_position_embeddings", None)
            source = "the model's max_position_embeddings"
            if not limit:
                return

        def tokens(text: str) -> int:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

        question = _longest_question_tokens(self.train_dataset, self._tokenizer, column=cfg.question_column)
        mcl, locate = self.max_completion_length, cfg.splice_locate_tokens
        common = f"longest question {question} + y- and y+ up to 2 x max_completion_length = {2 * mcl}"
        checks = []  # (the prompt, tokens it can take, what they are, the options that lower them)
        if cfg.construction == "self" or cfg.splice_fallback == "self":
            template, budget = tokens(self_template), mcl + cfg.synthesis_extra_tokens
            checks.append(("a synthesis prompt", template + question + 2 * mcl + budget,
                           f"template {template} + {common} + a budget of max_completion_length + "
                           f"synthesis_extra_tokens = {budget}", "max_completion_length / synthesis_extra_tokens"))
        if cfg.construction == "splice" and cfg.splice_locate == "ask":
            template = tokens(locate_template)
            checks.append(("a splice locate prompt", template + question + 2 * mcl + locate,
                           f"template {template} + {common} + a budget of splice_locate_tokens = {locate}",
                           "max_completion_length / splice_locate_tokens"))
        elif cfg.construction == "splice":  # surprise: the privileged row scores y- after the question and y+
            template = tokens(SURPRISE_TEMPLATE)
            checks.append(("a splice surprise row", template + question + 2 * mcl,
                           f"template {template} + {common}", "max_completion_length"))
            locate = mcl  # the analysis names one line or sentence of y-
        if cfg.construction == "splice":
            template, budget = tokens(CONTINUE_TEMPLATE) + tokens(" " + REFLECTION_OPENER), self._continuation_tokens()
            what = "splice_continuation_tokens" if cfg.splice_continuation_tokens else "max_completion_length"
            checks.append(("a splice continuation prompt", template + question + 2 * mcl + locate + budget,
                           f"template and opener {template} + {common} + the locate analysis up to "
                           f"{locate} tokens + a budget of {what} = {budget}",
                           "max_completion_length / splice_locate_tokens / splice_continuation_tokens"))
        prompt, needed, parts, options = max(checks, key=lambda check: check[1])
        if needed > limit:
            raise ValueError(
                f"{prompt} can take {needed} tokens ({parts}), more than {source} = {limit}. "
                f"Raise vllm_max_model_length (vLLM) or lower {options}."
            )

    def _split_loss_metrics(self, inputs: dict, kinds: torch.Tensor, logps: torch.Tensor, entropies) -> None:
        """Rewrite TRL's entropy, KL and clip metrics of this micro-batch over rollout rows only, and log
        the constructed rows' own (`tapo/entropy`, `tapo/clip_ratio`, `tapo/kl`). Collective calls only."""
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        rollout = mask * (kinds == ROLLOUT).to(mask.device).unsqueeze(1)
        constructed = mask * (kinds == CONSTRUCTED).to(mask.device).unsqueeze(1)

        def replace(name: str, value: float) -> None:
            if metrics.get(name):
                metrics[name][-1] = value

        def masked_means(x: torch.Tensor) -> tuple[float, float]:
            """Global means of x over rollout and over constructed tokens (rows, for sequence-level x, as TRL)."""
            if x.size(1) == 1:
                weights = [(kinds == kind).to(x.device, x.dtype).unsqueeze(1) for kind in (ROLLOUT, CONSTRUCTED)]
            else:
                weights = [rollout.to(x.dtype), constructed.to(x.dtype)]
            stats = torch.stack([torch.stack([(x * w).sum(), w.sum()]) for w in weights]).float()
            totals = self.accelerator.reduce(stats, reduction="sum")
            return tuple((totals[i, 0] / totals[i, 1].clamp(min=1.0)).item() for i in range(2))

        if entropies is not None:
            rollout_entropy, constructed_entropy = masked_means(entropies)
            replace("entropy", rollout_entropy)
            metrics["tapo/entropy"].append(constructed_entropy)
        if self.beta != 0.0 and "ref_per_token_logps" in inputs:
            delta = inputs["ref_per_token_logps"] - logps
            rollout_kl, constructed_kl = masked_means(torch.exp(delta) - delta - 1)
            replace("kl", rollout_kl)
            metrics["tapo/kl"].append(constructed_kl)
        old = inputs.get("old_per_token_logps")
        log_ratio = logps - (logps if old is None else old)
        if self.importance_sampling_level == "sequence":
            log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
        coef = torch.exp(log_ratio)
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        if self.loss_type in CLIPPED_LOSSES:
            if self.args.delta is not None:
                coef = torch.clamp(coef, max=self.args.delta)
            low = ((coef < 1 - self.epsilon_low) & (advantages < 0)).float()
            high = ((coef > 1 + self.epsilon_high) & (advantages > 0)).float()
            region = ((low + high) > 0).float()
            (low_r, _), (high_r, _), (region_r, region_c) = masked_means(low), masked_means(high), masked_means(region)
            replace("clip_ratio/low_mean", low_r)
            replace("clip_ratio/high_mean", high_r)
            replace("clip_ratio/region_mean", region_r)
            is_rollout_row = (kinds == ROLLOUT).to(mask.device)
            for name, x, reduce in (("clip_ratio/low_min", low, torch.min), ("clip_ratio/high_max", high, torch.max)):
                per_row = (x.expand_as(mask) * mask).sum(-1) / mask.sum(-1)  # NaN on empty rows, as TRL's
                per_row = torch.where(is_rollout_row, per_row, torch.full_like(per_row, float("nan")))
                gathered = self.accelerator.gather(per_row)
                finite = gathered[~torch.isnan(gathered)]
                replace(name, reduce(finite).item() if finite.numel() else float("nan"))
            metrics["tapo/clip_ratio"].append(region_c)
        elif self.loss_type == "cispo":
            clipped = ((coef > self.epsilon_high) & (advantages > 0)).float()
            rollout_clip, constructed_clip = masked_means(clipped)
            replace("cispo_clip_ratio", rollout_clip)
            metrics["tapo/clip_ratio"].append(constructed_clip)

    # ---- bookkeeping ----------------------------------------------------------------------------

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    def _log_tapo(self, **values: float) -> None:
        for name, value in values.items():
            self._metrics["train"][f"tapo/{name}"].append(float(value))
            self._generation_metrics[f"tapo/{name}"] = float(value)

    def _record(self, traj: ConstructedTrajectory, reward: float, advantage: float, weights, mask, request) -> dict:
        w_mean = float((weights * mask).sum() / mask.sum().clamp(min=1))
        prefix_text = self._tokenizer.decode(list(traj.token_ids[: traj.reflection_start]), skip_special_tokens=True)
        reflection_char = len(prefix_text)
        return {
            "step": self.state.global_step + 1,
            "query_id": traj.pair.query_id,
            "negative_index": traj.pair.negative_index,
            "positive_index": traj.pair.positive_index,
            "strategy": traj.strategy,
            "question": request.question,
            "answer": request.answer,
            "negative": request.negative_text,
            "positive": request.positive_text,
            "analysis": traj.analysis,
            "text": traj.text,
            "prefix_tokens": traj.prefix_tokens,
            "reflection_start": traj.reflection_start,
            "reflection_start_char": reflection_char,
            "correction_start_char": correction_start_char(traj.text, reflection_start_char=reflection_char),
            "prefix_fidelity": prefix_fidelity(traj),
            "no_marker": has_no_marker(traj),
            "generated_tokens": traj.generated_tokens,
            "tokens": len(traj.token_ids),
            "reward": reward,
            "advantage": advantage,
            "ots_w_mean": w_mean,
            "extra": {k: v for k, v in traj.extra.items() if isinstance(v, (str, int, float, bool))},
        }

    def _write_constructions(self, records: list[dict]) -> None:
        path = Path(self.args.output_dir) / CONSTRUCTIONS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")


# Rollout generation_kwargs a synthesis call does not inherit on vLLM: its sampling and budget are its own, it
# ends at eos or its own stop strings, and it writes its own format.
ROLLOUT_ONLY_VLLM_KWARGS = frozenset(("temperature", "top_p", "max_tokens", "stop", "include_stop_str_in_output",
                                      "structured_outputs", "guided_decoding"))

# Counts and seconds of a generation; a step's metrics row holds their totals over its generations.
STEP_TOTALS = frozenset(f"tapo/{name}" for name in (
    "pairs", "tried", "built", "pending", "deferred_dropped", "synthesis_tokens", "synthesis_seconds"))


def _per_step_total(name: str) -> bool:
    """Whether a metric is a count or a duration, logged per step as the total of its generations.

    >>> [_per_step_total(n) for n in ("tapo/pairs", "tapo/failed/truncated", "tapo/time/ots", "tapo/parsed_frac")]
    [True, True, True, False]
    """
    return name in STEP_TOTALS or name.startswith(("tapo/failed/", TIME_PREFIX))


def _step_rest(metrics: dict[str, list[float]]) -> float:
    """`update`: the seconds of TRL's step_time outside the measured phases (mean over the logged steps).

    That is scoring the rollouts, their log-probs, selection, bookkeeping and the loss's forward and
    backward passes; TRL times `training_step`, so the optimizer's own step is in no phase.

    >>> _step_rest({"step_time": [3.0], "tapo/time/rollouts": [2.0], "tapo/time/ots": [0.25], "loss": [1.0]})
    0.75
    """
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    measured = sum(mean(metrics.get(f"{TIME_PREFIX}{phase}", [])) for phase in MEASURED_PHASES)
    return mean(metrics[STEP_TIME_KEY]) - measured


def _loss_scale(kinds: torch.Tensor, loss_type: str) -> float:
    """B / B_real for loss types that average over the rows of a micro-batch, else 1.

    Unused construction slots are all-masked rows; a per-sequence mean over B rows would count
    them, so the effective learning rate would depend on parse failures and on the number of
    processes. Token-normalised types (bnpo, dapo, cispo, vespo) never count them.

    >>> _loss_scale(torch.tensor([0, 0, 1, 2]), "grpo"), _loss_scale(torch.tensor([0, 2]), "dapo")
    (1.3333333333333333, 1.0)
    """
    if loss_type not in PER_SEQUENCE_LOSSES:
        return 1.0
    real = int((kinds != PADDING).sum())
    return kinds.numel() / real if 0 < real < kinds.numel() else 1.0


def _longest_question_tokens(dataset, tokenizer, *, column: str | None = None, candidates: int = 4) -> int:
    """Tokens of the longest question in the data set (the few longest by characters are tokenized)."""
    if dataset is None or not hasattr(dataset, "column_names"):
        return 0
    column = column or ("problem" if "problem" in dataset.column_names else "prompt")
    texts = [str(_prompt_text(x)) for x in dataset[column]]
    longest = sorted(texts, key=len, reverse=True)[:candidates]
    return max((len(tokenizer.encode(t, add_special_tokens=False)) for t in longest), default=0)


def _unique_keys(query_ids: list[str]) -> list[str]:
    """Query ids, made unique when a query appears twice in one batch ("q7", "q7#1")."""
    seen: dict[str, int] = {}
    keys = []
    for qid in query_ids:
        count = seen.get(qid, 0)
        keys.append(qid if count == 0 else f"{qid}#{count}")
        seen[qid] = count + 1
    return keys


def _prompt_text(prompt) -> str:
    return prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)


def _as_completion(text: str, prompt):
    """A completion in the format the reward functions get for rollouts (conversational or plain)."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def _weight_sums(weights: torch.Tensor, mask: torch.Tensor, w_min: float) -> list[float]:
    """(sum of weights, count at the floor, count) over real constructed tokens, for a global mean."""
    mean, low = masked_mean_and_low_frac(weights, mask, w_min=w_min)
    count = float(mask.sum())
    return [mean * count, low * count, count]
