"""TAPO's pure core: selection, synthesis prompts and parsing, advantages, OTS weights, record types.

Imports no training engine; only the standard library and torch.
"""

from tapo.core.advantages import (
    batch_std,
    group_advantages,
    is_degenerate,
    reflection_advantages,
    reflection_token_advantages,
    trained_from,
)
from tapo.core.ots import masked_mean_and_low_frac, ots_weights, token_entropy_from_logits
from tapo.core.selection import (
    is_eligible,
    select_construction_pairs,
    select_pairs,
    selection_rng,
    split_group,
)
from tapo.core.synthesis import (
    CONTINUE_TEMPLATE,
    LOCATE_TEMPLATE,
    REFLECTION_OPENER,
    SELF_TEMPLATE,
    build_continue_prompt,
    build_locate_prompt,
    build_self_prompt,
    common_prefix_len,
    fill_template,
    find_quote_end,
    parse_locate,
    parse_synthesis,
    parse_synthesis_closed,
    reflection_start_in,
    seed_reflection,
)
from tapo.core.types import (
    ConstructedTrajectory,
    ConstructionFailure,
    ConstructionPair,
    ConstructionRequest,
    PendingConstruction,
    SpliceCut,
)

__all__ = [
    "batch_std",
    "CONTINUE_TEMPLATE",
    "LOCATE_TEMPLATE",
    "REFLECTION_OPENER",
    "SELF_TEMPLATE",
    "ConstructedTrajectory",
    "ConstructionFailure",
    "ConstructionPair",
    "ConstructionRequest",
    "PendingConstruction",
    "SpliceCut",
    "build_continue_prompt",
    "build_locate_prompt",
    "build_self_prompt",
    "common_prefix_len",
    "fill_template",
    "find_quote_end",
    "group_advantages",
    "is_degenerate",
    "is_eligible",
    "masked_mean_and_low_frac",
    "ots_weights",
    "parse_locate",
    "parse_synthesis",
    "parse_synthesis_closed",
    "reflection_advantages",
    "reflection_start_in",
    "reflection_token_advantages",
    "trained_from",
    "seed_reflection",
    "select_construction_pairs",
    "select_pairs",
    "selection_rng",
    "split_group",
    "token_entropy_from_logits",
]
