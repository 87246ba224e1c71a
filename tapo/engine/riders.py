"""Rows with their own ends in one HF `generate` call: riders in the rollout call (`synthesis_schedule: deferred`)
and construction phases sharing a call.

The call holds the rollout rows first, then the riders. Each row keeps its own sampling and its own end:

- Sampling. While the call runs, the model's `_get_logits_processor` is wrapped (`rows_sampled_apart`):
  HF builds the processors of the call's generation config, which are the rollouts' own, and those of
  the same config with the synthesis temperature and top-p, and `RowwiseProcessor` applies the first
  to the rollout rows and the second to the riders. Every HF logits processor and warper acts on each
  row by itself, so a rollout row's next-token distribution, given its prefix, is exactly the one it has
  in a call without riders. (The random draws differ: HF samples the whole batch with one
  `torch.multinomial`, so batch composition shifts which numbers a row gets, not how it is distributed.)
- Ends. `RowLimits` ends each row at its own budget (rollouts: max_completion_length) or right after its
  stop string; HF pads a finished row, and the trainer cuts every row back to its budget. A rollout cut
  at its budget is distributed as one generated with it. The call ends when the rollouts have: HF keeps
  finished rows in the batch, so a rider that outlasted them would have the whole batch decoded at
  every one of its remaining steps. A rider still writing then is cut short (`RowLimits.open_rows`) and
  continued in a call of its own from its prompt + its tokens so far (`TAPOTrainer._continue_riders`):
  sampling from the same prefix with the same processors, so the two parts are distributed as one run.
- Prefill. HF left-pads the call to its widest prompt and computes every padded position; a rider's
  prompt (the synthesis context: question, y+, note, y-'s kept prefix) is ~3x a rollout's, so on a CPU
  the rollout rows' padding cost more than the riders themselves (demo: 10 rows x 250 tokens 5.9 s
  against 8 x 70 1.3 s). `prefilled_apart` prefills the rollout rows over their own width and the riders
  over theirs, and hands `generate` the joined cache: each row's keys and values depend only on its own
  tokens and positions, and the pad slots are masked, so decoding is unchanged.

Only HF generate: vLLM samples `num_generations` per unique prompt, gathered over processes, with one
set of sampling parameters, so there the deferred constructions are generated in their own call.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicLayer
from transformers.generation import utils as generation_utils

# generate's keyword for a given cache: "cache" from transformers 5.2x (past_key_values is deprecated there)
_CACHE_ARG = "cache" if "cache" in getattr(generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


class RowwiseProcessor(LogitsProcessor):
    """Rows [0, n_first) get `first`, the rest `rest` (each a LogitsProcessorList HF built)."""

    def __init__(self, n_first: int, first: LogitsProcessorList, rest: LogitsProcessorList):
        self.n_first, self.first, self.rest = n_first, first, rest

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = self.n_first
        head = self.first(input_ids[:n], scores[:n])  # [n, V]
        tail = self.rest(input_ids[n:], scores[n:])  # [B - n, V]
        return torch.cat([head, tail], dim=0)  # [B, V]


class RowLimits(StoppingCriteria):
    """Row r is done after budgets[r] new tokens, once its new tokens contain one of stops[r], or (given
    `eos_ids`) once they contain an eos id.

    With `lead` > 0, the call ends when rows [0, lead) are all done: every other row is then reported
    done too, and `open_rows` lists those that had not ended by themselves (their completions are cut
    short after `cut_at` new tokens, to be continued in another call). The prompt width is the call's
    input width, read at the first check (one new token by then). Stop strings are looked for in the
    decoded last `window` new tokens only, never in the prompt; `carried[r]` tokens at the end of row
    r's prompt count as new for that (a continuation's earlier part: a stop string may straddle the two).
    """

    def __init__(self, budgets: Sequence[int], stops: Sequence[Sequence[str]], tokenizer: Any, window: int = 24, *,
                 lead: int = 0, eos_ids: Sequence[int] = (), carried: Sequence[int] | None = None):
        if len(budgets) != len(stops):
            raise ValueError(f"{len(budgets)} budgets for {len(stops)} stop lists")
        if lead and not eos_ids:
            raise ValueError("RowLimits with a lead needs the eos ids (to see the lead rows end)")
        self.budgets, self.stops, self.tokenizer, self.window = list(budgets), [tuple(s) for s in stops], tokenizer, window
        self.lead, self.eos_ids = lead, torch.tensor(list(eos_ids), dtype=torch.long)
        self.carried = list(carried) if carried is not None else [0] * len(budgets)
        self.prompt_width: int | None = None
        self.open_rows: list[int] = []  # rows the lead's end cut short
        self.cut_at: int | None = None  # new tokens when it did

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if self.cut_at is not None:  # the lead ended the call (synced processes may still step it: padding)
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1] - 1
        new = input_ids.shape[1] - self.prompt_width
        done = [new >= budget for budget in self.budgets]
        if self.eos_ids.numel():
            ended = torch.isin(input_ids[:, self.prompt_width :], self.eos_ids.to(input_ids.device))
            done = [d or e for d, e in zip(done, ended.any(dim=-1).tolist())]
        for row, strings in enumerate(self.stops):
            if strings and not done[row]:
                tail = input_ids[row, self.prompt_width - self.carried[row] :][-self.window :].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=False)
                done[row] = any(s in text for s in strings)
        if self.lead and all(done[: self.lead]) and not all(done):
            self.open_rows = [row for row, d in enumerate(done) if not d]
            self.cut_at = new
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def rows_sampled_apart(
    model,
    *,
    n_rollouts: int,
    rider_sampling: dict[str, float],
    budgets: Sequence[int],
    stops: Sequence[Sequence[str]],
    tokenizer: Any,
    eos_ids: Sequence[int] = (),
):
    """While inside: `model.generate` samples rows [0, n_rollouts) with the call's own config, the rest
    with `rider_sampling` (generation config fields, e.g. temperature and top_p) on top of it, and ends
    every row at its budget or stop string (`RowLimits`). Given `eos_ids`, the call ends once the rollout
    rows have: riders still writing are cut short (`RowLimits.open_rows`, after `cut_at` tokens) for the
    caller to continue in a call of their own. Yields the list of the `RowLimits` each call used.
    Restored on exit."""
    build_processors = model._get_logits_processor  # bound: HF's own construction of the processor list

    def get_logits_processor(generation_config, *args, **kwargs):
        riders_config = copy.deepcopy(generation_config)
        for name, value in rider_sampling.items():
            setattr(riders_config, name, value)
        first = build_processors(generation_config, *args, **kwargs)
        rest = build_processors(riders_config, *args, **kwargs)
        return LogitsProcessorList([RowwiseProcessor(n_rollouts, first, rest)])

    lead = n_rollouts if eos_ids else 0
    with _patched(model, {"_get_logits_processor": get_logits_processor}), \
            rows_ended_apart(model, budgets=budgets, stops=stops, tokenizer=tokenizer, lead=lead,
                             eos_ids=eos_ids) as made:
        yield made


@contextlib.contextmanager
def rows_ended_apart(model, *, budgets: Sequence[int], stops: Sequence[Sequence[str]], tokenizer: Any,
                     lead: int = 0, eos_ids: Sequence[int] = (), carried: Sequence[int] | None = None):
    """While inside: `model.generate` ends every row at its own budget or right after its own stop string
    (`RowLimits`, with these options); sampling is the call's own for every row. Construction phases with
    different budgets and stops (splice's continuations and its `self` fallbacks) share one call this way.
    Yields the list of the `RowLimits` each call used. Restored on exit."""
    build_criteria = model._get_stopping_criteria
    made: list[RowLimits] = []

    def get_stopping_criteria(*args, **kwargs):
        made.append(RowLimits(budgets, stops, tokenizer, lead=lead, eos_ids=eos_ids, carried=carried))
        return StoppingCriteriaList([*build_criteria(*args, **kwargs), made[-1]])

    with _patched(model, {"_get_stopping_criteria": get_stopping_criteria}):
        yield made


@contextlib.contextmanager
def prefilled_apart(model, *, n_first: int):
    """While inside: a text-only `model.generate` call first prefills rows [0, n_first) and the rest as two
    batches, each only as wide as its own longest prompt (`prefill_in_two`), and decodes from the joined
    cache. Calls it cannot serve (a cache or embeddings given, a cache other than full attention's, no
    width to save) run as they are. Restored on exit."""
    generate = model.generate  # bound: whatever `generate` resolves to now

    def generate_prefilled(*args, **kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        plain = args or ids is None or mask is None or set(kwargs) - {"input_ids", "attention_mask", "generation_config"}
        cache = None if plain else prefill_in_two(model, ids, mask, n_first=n_first)
        return generate(*args, **kwargs) if cache is None else generate(*args, **kwargs, **{_CACHE_ARG: cache})

    with _patched(model, {"generate": generate_prefilled}):
        yield


def prefill_in_two(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, n_first: int):
    """The cache of `input_ids[:, :-1]` (left-padded) computed as two batches, rows [0, n_first) and the rest,
    each over its own width; None when that saves nothing or the model's cache is not plain full attention.

    Positions are generate's own (the attention mask's cumsum), so each row's keys and values are the ones
    the padded batch computes for it; the slots left of a batch's width are zeros, masked like padding.
    `generate` then feeds only the last prompt token and decodes from here.
    """
    width = input_ids.shape[1] - 1  # generate prefills all but the last prompt token from a given cache
    if width < 1 or not 0 < n_first < input_ids.shape[0]:
        return None
    cached_mask = attention_mask[:, :width]
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, :width]
    groups = [slice(0, n_first), slice(n_first, input_ids.shape[0])]
    spans = [int(cached_mask[rows].sum(-1).max()) for rows in groups]  # real tokens of each batch's widest row
    if not 1 <= min(spans) < width:
        return None  # a batch with nothing to cache, or no padding to skip
    caches = []
    with torch.no_grad():
        for rows, span in zip(groups, spans):
            out = model(input_ids=input_ids[rows, width - span : width], attention_mask=cached_mask[rows, width - span :],
                        position_ids=positions[rows, width - span :], use_cache=True)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            if cache is None or not all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None])):
                return None  # sliding-window, hybrid or quantized caches: leave them to generate
            caches.append(cache)
    joined = caches[1]
    for layer, first in zip(joined.layers, caches[0].layers, strict=True):
        pad = width - first.keys.shape[-2]  # [B, heads, L, head_dim]: pad L on the left
        rest = width - layer.keys.shape[-2]
        layer.keys = torch.cat([F.pad(first.keys, (0, 0, pad, 0)), F.pad(layer.keys, (0, 0, rest, 0))], dim=0)
        layer.values = torch.cat([F.pad(first.values, (0, 0, pad, 0)), F.pad(layer.values, (0, 0, rest, 0))], dim=0)
    return joined


@contextlib.contextmanager
def _patched(model, patched: dict[str, Any]):
    """These instance attributes on `model` while inside; whatever was there before put back on exit."""
    before = {name: model.__dict__.get(name) for name in patched}
    model.__dict__.update(patched)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                model.__dict__.pop(name, None)
            else:
                model.__dict__[name] = value
