"""The pairs one generation round leaves to the next (`synthesis_schedule: deferred`), and their checkpoint file.

Round t selects pairs on its rollouts (DCS) and runs everything of their construction before the last
generation (`Constructor.defer`: nothing for `self`, the locate phase for `splice`). Round t+1 generates
what is left inside its rollout call (riders, `tapo.engine.riders`) or, where it cannot ride, in its own
call, then trains the constructions beside its rollouts, in their own reflection groups: their advantages
use round t's group rewards, stored here. Each process keeps its own share (its slots); the global fields
are the same on every process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tapo.core import ConstructionFailure, ConstructionPair, PendingConstruction

PENDING_FILE = "tapo_pending.rank{rank}.json"  # in each checkpoint folder, one per process


@dataclass
class DeferredRound:
    """What round t hands to round t+1 on one process."""

    step: int  # the global step at which the pairs were chosen
    world_size: int
    slots: int  # construction slots per process (the same on every process)
    pairs: list[ConstructionPair | None]  # global, one per slot in process order; None: an empty slot
    group_rewards: dict[str, list[float]]  # query key -> its rollout group's rewards at round t
    rollout_rewards: list[float]  # every rollout reward of round t's batch (batch-scaled pools)
    items: list[PendingConstruction | ConstructionFailure]  # this process's, one per local pair
    inputs: list[dict]  # this process's pairs' dataset rows (the prompt and what the rewards read)
    prompt_ids: list[list[int]]  # the rollout prompt ids of those rows

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step, "world_size": self.world_size, "slots": self.slots,
            "pairs": [asdict(p) if p is not None else None for p in self.pairs],
            "group_rewards": self.group_rewards, "rollout_rewards": self.rollout_rewards,
            "items": [
                {"pending": x.to_dict()} if isinstance(x, PendingConstruction) else {"failure": asdict(x)}
                for x in self.items
            ],
            "inputs": self.inputs, "prompt_ids": self.prompt_ids,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeferredRound:
        items: list[PendingConstruction | ConstructionFailure] = []
        for item in data["items"]:
            if "pending" in item:
                items.append(PendingConstruction.from_dict(item["pending"]))
            else:
                failure = dict(item["failure"])
                items.append(ConstructionFailure(**{**failure, "pair": ConstructionPair(**failure["pair"])}))
        return cls(
            step=int(data["step"]), world_size=int(data["world_size"]), slots=int(data["slots"]),
            pairs=[ConstructionPair(**p) if p is not None else None for p in data["pairs"]],
            group_rewards={k: [float(r) for r in v] for k, v in data["group_rewards"].items()},
            rollout_rewards=[float(r) for r in data["rollout_rewards"]],
            items=items, inputs=list(data["inputs"]), prompt_ids=[list(p) for p in data["prompt_ids"]],
        )


def save_pending(folder: str | Path, rank: int, pending: DeferredRound | None) -> Path:
    """Write this process's pending round (or its absence) into a checkpoint folder."""
    path = Path(folder) / PENDING_FILE.format(rank=rank)
    body = {"pending": pending.to_json() if pending is not None else None}
    try:
        text = json.dumps(body)
    except TypeError as error:
        raise ValueError(
            "synthesis_schedule deferred saves the pending pairs' dataset rows with each checkpoint, and one of "
            f"them is not JSON-serializable ({error}); keep the training dataset's columns to JSON types"
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)  # whole or absent, never half written
    return path


def load_pending(folder: str | Path, rank: int, world_size: int) -> tuple[bool, DeferredRound | None]:
    """(found, round) from a checkpoint folder; found is False for a checkpoint without a pending file."""
    path = Path(folder) / PENDING_FILE.format(rank=rank)
    if not path.is_file():
        return False, None
    try:
        data = json.loads(path.read_text())["pending"]
        pending = DeferredRound.from_json(data) if data is not None else None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a pending-pairs file of synthesis_schedule deferred ({error})") from error
    if pending is not None and pending.world_size != world_size:
        raise ValueError(
            f"{path}: the pending pairs were split over {pending.world_size} processes, this run has {world_size}; "
            f"resume with {pending.world_size} processes"
        )
    return True, pending


def micro_steps_before(update: int, *, accumulation: int, epoch_length: int | None) -> int:
    """Micro-steps HF's loop trains before optimizer update `update` (0-based): an update takes `accumulation`
    of them, except an epoch's last, which takes what the epoch's `epoch_length` (the train dataloader's
    length; None without one: full updates only) has left.

    >>> [micro_steps_before(u, accumulation=2, epoch_length=3) for u in range(5)]  # updates of 2, 1, 2, 1
    [0, 2, 3, 5, 6]
    """
    if not epoch_length:
        return update * accumulation
    per_epoch = -(-epoch_length // accumulation)
    return (update // per_epoch) * epoch_length + (update % per_epoch) * accumulation
