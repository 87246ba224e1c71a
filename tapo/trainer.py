"""The engine adapter: `TAPOConfig` and `TAPOTrainer`, a thin subclass of TRL's `GRPOTrainer`.

The parent generates and scores the rollouts and computes their GRPO advantages; this class then
selects construction pairs on the gathered batch (DCS), has the constructor write y_ref with the
parent's own generation path, scores y_ref with the parent's own reward path, computes decoupled
reflection-group advantages (DAE) and OTS weights, and appends the y_ref rows with per-token
advantages lambda * w_t * A_ref. The parent's clipped loss then trains them unchanged.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOConfig, GRPOTrainer

from tapo.batching import append_rows, slots_per_process, stack_rows
from tapo.core import (
    ConstructedTrajectory,
    ConstructionRequest,
    group_advantages,
    is_degenerate,
    masked_mean_and_low_frac,
    ots_weights,
    reflection_advantages,
    select_construction_pairs,
    trained_from,
)
from tapo.core.constructors import make_constructor, prefix_fidelity
from tapo.core.synthesis import correction_start_char

CONSTRUCTIONS_FILE = "constructions.jsonl"


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
        default=512, metadata={"help": "Synthesis may generate max_completion_length + this many tokens."}
    )
    synthesis_template: str | None = field(
        default=None, metadata={"help": "Path of a custom `self` synthesis template ($question, $negative, $positive)."}
    )


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
    completion_ids: list[int]
    completion_text: str
    reward: float


class TAPOTrainer(GRPOTrainer):
    """GRPO + trajectory augmentation. With `algorithm: grpo` the plain `GRPOTrainer` runs instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.args
        if not isinstance(cfg, TAPOConfig):
            raise TypeError("TAPOTrainer needs a TAPOConfig")
        if self.beta != 0.0 and self.ref_model is None:
            raise ValueError("TAPO with beta != 0 needs a separate reference model (PEFT adapters are not supported)")
        template = Path(cfg.synthesis_template).read_text() if cfg.synthesis_template else None
        self.constructor = make_constructor(
            cfg.construction,
            tokenizer=self._tokenizer,
            generate=self._synthesis_generate,
            self_template=template,
            splice_fallback=cfg.splice_fallback,
        )
        self._rollout_rewards: torch.Tensor | None = None  # [B_global] set by _calculate_rewards

    # ---- the two overrides -------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rollout_rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)  # rollouts, GRPO advantages untouched
        if not self.model.training:
            return batch  # evaluation is plain inference
        return self._augment(inputs, batch)

    # ---- TAPO ---------------------------------------------------------------------------------

    def _augment(self, inputs: list[dict], batch: dict) -> dict:
        cfg, started = self.args, time.perf_counter()
        rows = self._gathered_rows(inputs, batch)
        k = self.num_generations
        groups = [rows[g * k : (g + 1) * k] for g in range(len(rows) // k)]
        group_keys = _unique_keys([group[0].query_id for group in groups])
        pairs = select_construction_pairs(
            [(key, [r.reward for r in group]) for key, group in zip(group_keys, groups, strict=True)],
            n_pos=cfg.n_pos, n_neg=cfg.n_neg, m_max=cfg.m_max, seed=cfg.seed, step=self.state.global_step,
        )
        group_of = {key: g for g, key in enumerate(group_keys)}
        eligible = len({p.query_id for p in pairs})
        slots = slots_per_process(len(pairs), num_processes=self.accelerator.num_processes, multiple_of=cfg.steps_per_generation)
        self._log_tapo(eligible_frac=eligible / max(len(groups), 1), pairs=float(len(pairs)))
        if slots == 0:
            return batch

        # This process builds the pairs in its slots; unused slots stay empty and masked.
        start = self.accelerator.process_index * slots
        local_pairs = pairs[start : start + slots]
        requests = []
        for pair in local_pairs:
            group = groups[group_of[pair.query_id]]
            negative, positive = group[pair.negative_index], group[pair.positive_index]
            requests.append(ConstructionRequest(
                pair=pair, question=negative.question, negative_text=negative.completion_text,
                negative_ids=tuple(negative.completion_ids), positive_text=positive.completion_text,
                answer=str(negative.inputs.get("answer", "")),
            ))
        results = self.constructor.construct(requests)
        built = [r if isinstance(r, ConstructedTrajectory) else None for r in results]
        built += [None] * (slots - len(built))
        synthesis_tokens = sum(r.generated_tokens for r in results)

        # Score y_ref with the rollouts' own reward path (a collective call: every process passes `slots` rows).
        slot_rows = [groups[group_of[p.query_id]][0] for p in local_pairs] + [rows[0]] * (slots - len(local_pairs))
        slot_texts = [t.text if t else "" for t in built]
        slot_ids = [list(t.token_ids) if t else [] for t in built]
        prompts = [r.inputs["prompt"] for r in slot_rows]
        completions = [_as_completion(text, prompt) for text, prompt in zip(slot_texts, prompts, strict=True)]
        per_func = self._calculate_rewards([r.inputs for r in slot_rows], prompts, completions, slot_ids)
        rewards = (per_func * self.reward_weights.to(per_func.device)).nansum(dim=1)  # [slots * world]
        used = gather(torch.tensor([t is not None for t in built], device=self.accelerator.device))  # [slots * world]
        self._rollout_rewards = None  # the rollouts' rewards were consumed by the parent already

        # DAE: one reflection group per query, normalized on its own (or against the original group).
        all_pairs = pairs + [None] * (slots * self.accelerator.num_processes - len(pairs))
        ref_adv, degenerate, groups_with_refs, batch = self._reflection_advantages(
            all_pairs, rewards.tolist(), used.tolist(), groups, group_of, batch
        )
        local_adv = ref_adv[start : start + slots]

        # OTS weights under the current policy, and the rows to append.
        prompt_ids, prompt_mask = stack_rows([r.prompt_ids for r in slot_rows], pad_id=self.pad_token_id, side="left")
        completion_ids, completion_mask = stack_rows(slot_ids, pad_id=self.pad_token_id, side="right", width=1)
        logps, entropies = self._score_tokens(prompt_ids, prompt_mask, completion_ids, completion_mask)
        mask = completion_mask.to(logps.device)
        weights = (
            ots_weights(logps, entropies, cfg.ots_w_min, cfg.ots_w_max) if cfg.ots else torch.ones_like(logps)
        )  # [S, T']
        advantages = cfg.ref_loss_weight * torch.tensor(local_adv, device=logps.device).unsqueeze(1) * weights * mask
        if not cfg.ref_train_prefix:  # [S, T'] the kept prefix stays as context, without advantage
            starts = [t.reflection_start if t is not None else 0 for t in built]
            advantages = advantages * trained_from(starts, advantages.shape[1]).to(advantages.device)
        batch = append_rows(
            batch, prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=completion_mask, advantages=advantages, per_token_logps=logps,
            pad_token_id=self.pad_token_id,
        )
        loss_mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()

        # Metrics (over all processes) and the constructions file.
        w_stats = self.accelerator.gather(torch.tensor(_weight_sums(weights, mask, cfg.ots_w_min), device=self.accelerator.device))
        w_sum, w_low, w_count = w_stats.view(-1, 3).sum(dim=0).tolist()
        records = [self._record(t, rewards[start + i].item(), local_adv[i], weights[i], mask[i], requests[i])
                   for i, t in enumerate(built) if t is not None]
        records = gather_object(records)
        outcomes = gather_object([(type(r).__name__, getattr(r, "reason", "")) for r in results])
        tokens = sum(gather_object([synthesis_tokens]))
        n_built = len(records)
        self._log_tapo(
            parsed_frac=n_built / max(len(outcomes), 1),
            ref_correct_frac=sum(r["reward"] > 0 for r in records) / max(n_built, 1),
            ref_groups_degenerate_frac=degenerate / max(groups_with_refs, 1),
            ots_w_mean=w_sum / max(w_count, 1.0),
            ots_w_low_frac=w_low / max(w_count, 1.0),
            prefix_fidelity=sum(r["prefix_fidelity"] for r in records) / max(n_built, 1),
            synthesis_tokens=float(tokens),
            synthesis_seconds=time.perf_counter() - started,
            ref_adv_mean=sum(r["advantage"] for r in records) / max(n_built, 1),
        )
        if self.accelerator.is_main_process:
            self._write_constructions(records)
        return batch

    def _gathered_rows(self, inputs: list[dict], batch: dict) -> list[_Row]:
        """The whole batch as every process sees it after gathering (groups may span processes)."""
        prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]
        completion_ids = [
            ids[m.bool()].tolist() for ids, m in zip(batch["completion_ids"], batch["completion_mask"], strict=True)
        ]
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        local = [
            (dict(x), p, c, t)
            for x, p, c, t in zip(inputs, prompt_ids, completion_ids, texts, strict=True)
        ]
        gathered = gather_object(local)
        rewards = self._rollout_rewards.tolist()
        if len(rewards) != len(gathered):
            raise RuntimeError(f"TRL batch contract changed: {len(rewards)} rewards for {len(gathered)} rows")
        return [
            _Row(
                query_id=str(x.get("query_id", x.get("id", _prompt_text(x["prompt"])[:64]))),
                question=str(x.get("problem", _prompt_text(x["prompt"]))),
                inputs=x, prompt_ids=p, completion_ids=c, completion_text=t, reward=float(r),
            )
            for (x, p, c, t), r in zip(gathered, rewards, strict=True)
        ]

    def _reflection_advantages(self, all_pairs, rewards, used, groups, group_of, batch):
        """A_ref per slot (global order); with decoupled=False the original rows' advantages change too."""
        cfg = self.args
        by_group: dict[int, list[int]] = {}
        for slot, pair in enumerate(all_pairs):
            if pair is not None and used[slot]:
                by_group.setdefault(group_of[pair.query_id], []).append(slot)
        ref_adv = [0.0] * len(all_pairs)
        degenerate = 0
        for g, slots in by_group.items():
            ref_rewards = [rewards[s] for s in slots]
            original = [r.reward for r in groups[g]]
            degenerate += is_degenerate(ref_rewards)
            if cfg.decoupled:
                values = reflection_advantages(ref_rewards, baseline=cfg.ref_baseline, original_rewards=original)
            else:  # ablation: one mixed group; the original rollouts' advantages are recomputed with it
                mixed = group_advantages(original + ref_rewards)
                values = mixed[len(original):]
                batch = self._overwrite_group_advantages(batch, g, mixed[: len(original)])
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
    def _score_tokens(self, prompt_ids, prompt_mask, completion_ids, completion_mask):
        """Current-policy log-probs and entropies of the constructed tokens: [S, T'] each."""
        device = self.accelerator.device
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)  # [S, P'+T']
        attention = torch.cat([prompt_mask, completion_mask], dim=1).to(device)  # [S, P'+T']
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention, completion_ids.size(1),
            batch_size=self.args.per_device_train_batch_size, compute_entropy=True,
        )
        return logps, entropies

    def _synthesis_generate(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """The constructors' GenerateFn: the parent's generation path with synthesis sampling."""
        if not prompt_ids and not self.use_vllm:
            return []
        with self._synthesis_sampling():
            completion_ids, _ = self._generate_single_turn(prompt_ids, None, {}, 1)
        return [list(ids) for ids in completion_ids]

    @contextlib.contextmanager
    def _synthesis_sampling(self):
        """Swap in the synthesis temperature, top-p and token budget for the duration of one call."""
        cfg = self.args
        max_tokens = self.max_completion_length + cfg.synthesis_extra_tokens
        if self.use_vllm:
            target, names = self.vllm_generation, ("temperature", "top_p", "max_completion_length")
        else:
            target, names = self.generation_config, ("temperature", "top_p", "max_new_tokens")
        saved = {name: getattr(target, name) for name in names}
        for name, value in zip(names, (cfg.synthesis_temperature, cfg.synthesis_top_p, max_tokens), strict=True):
            setattr(target, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(target, name, value)

    # ---- bookkeeping ----------------------------------------------------------------------------

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    def _log_tapo(self, **values: float) -> None:
        for name, value in values.items():
            self._metrics["train"][f"tapo/{name}"].append(float(value))

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

