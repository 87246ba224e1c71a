"""A short TAPO run on builtin:tiny under several processes, instrumented for tests/test_vllm_paths.py.

Launch it with accelerate's torchrun launcher (CPU processes, gloo), e.g.

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no --main_process_port 0 tests/distributed_tapo.py --out DIR \\
        --set use_vllm=true --set vllm_mode=server --set construction=self

`--set key=value` overrides a TAPOConfig field (the value is parsed as YAML). With `use_vllm` the
in-process vLLM stand-in (tests/standin_vllm.py) is installed first, so TRL's real VLLMGeneration runs.

Each process writes DIR/rank{R}.json with what the tests check:
- `generate_calls`: every call this process made into `trainer._generate_single_turn` (rollouts and
  synthesis alike), with its global step and local prompt count;
- `construct_calls`: every call into the constructor, with the number of construction requests (pairs)
  this process built;
- `standin_calls`: the stand-in's recorded generate calls (server mode: main process only; colocate:
  each process's own LLM);
- on the main process, `log_history` (the Trainer's logged metrics) and `constructions` (the records of
  DIR/run/constructions.jsonl);
- `args`: the resolved config values the tests compare against;
- `warnings`: the messages of the warnings training raised (`--resume DIR` resumes from a checkpoint);
- `error`: the traceback when the run raised (the file is still written).

Instrumentation only wraps and counts; TRL's and tapo's code run unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
import zlib
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # standin_vllm, when run as a script

DEFAULTS = dict(
    max_steps=1, num_generations=4, per_device_train_batch_size=8, max_completion_length=16, learning_rate=1e-4,
    report_to=[], logging_steps=1, save_strategy="no", bf16=False, disable_tqdm=True, use_cpu=True,
    construction="self", n_pos=1, n_neg=1, seed=0, synthesis_extra_tokens=48,
)


def checksum_reward(completions, **kwargs):
    """Deterministic pseudo-correctness (~40% "right") so groups are mixed without a trained model."""
    return [float(zlib.crc32(json.dumps(c).encode()) % 5 < 2) for c in completions]


def one_query_reward(target: str):
    """Only `target`'s rollouts can be right (checksum parity): at most one eligible group per batch."""

    def reward(completions, query_id, **kwargs):
        return [
            float(q == target and zlib.crc32(json.dumps(c).encode()) % 2 == 0)
            for c, q in zip(completions, query_id, strict=True)
        ]

    reward.__name__ = "one_query_reward"
    return reward


def unscorable_constructions_on(rank: int):
    """The checksum, except that process `rank` scores no construction (None: TRL's "unscorable"). The vLLM
    stand-in's synthesis answers name their question as Q[...], which no rollout answer does."""

    def reward(completions, **kwargs):
        here = int(os.environ.get("RANK", "0")) == rank
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [None if here and "Q[" in t else r for t, r in zip(texts, checksum_reward(completions), strict=True)]

    reward.__name__ = "checksum_reward"
    return reward


def parse_sets(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


class CountingConstructor:
    """Delegates to the real constructor and records how many requests each call got."""

    def __init__(self, inner, trainer, log: list):
        self.inner, self.trainer, self.log = inner, trainer, log
        self.strategy = inner.strategy

    def construct(self, requests):
        requests = list(requests)
        self.log.append({"step": self.trainer.state.global_step, "requests": len(requests)})
        return self.inner.construct(requests)

    def defer(self, requests):  # synthesis_schedule deferred: the pairs are counted when the step chooses them
        requests = list(requests)
        self.log.append({"step": self.trainer.state.global_step, "requests": len(requests)})
        return self.inner.defer(requests)

    def __getattr__(self, name):  # complete, pending_phases, ...
        return getattr(self.inner, name)


def instrument(trainer) -> tuple[list, list]:
    """Count calls into `_generate_single_turn` (instance attribute, so TAPO's own calls go through it too)."""
    generate_calls, construct_calls = [], []
    real_generate = trainer._generate_single_turn

    def counted(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs):
        generate_calls.append({
            "step": trainer.state.global_step, "prompts": len(prompt_ids), "num_generations": num_generations,
        })
        return real_generate(prompt_ids, images, multimodal_fields, num_generations, *args, **kwargs)

    trainer._generate_single_turn = counted
    trainer.constructor = CountingConstructor(trainer.constructor, trainer, construct_calls)
    return generate_calls, construct_calls


def slow_pending_save() -> None:
    """This process saves its pending pairs 1.5 s late (a slow disk): what another process writes meanwhile shows."""
    import time

    import tapo.engine.trainer as trainer_module

    save = trainer_module.save_pending

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return save(*args, **kwargs)

    trainer_module.save_pending = slow


def standin_calls(trainer) -> list[dict]:
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None:
        return []
    engine = getattr(generation, "vllm_client", None) or getattr(generation, "llm", None)
    return list(getattr(engine, "calls", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--records", type=int, default=32, help="arithmetic problems in the data set")
    parser.add_argument("--model", default="builtin:tiny",
                        help="builtin:tiny-arith on the HF path: it ends answers with eos (a random model never does, "
                             "and a rollout cut off by its budget is never a y-)")
    parser.add_argument("--reward", choices=("checksum", "one-query", "unscorable-constructions-on-rank1"),
                        default="checksum")
    parser.add_argument("--resume", default=None, help="checkpoint folder to resume training from")
    parser.add_argument("--slow-pending-save", type=int, default=None, metavar="RANK",
                        help="process RANK waits 1.5 s before it saves its pending pairs into a checkpoint")
    parser.add_argument("--quote-not-found-every", type=int, default=0,
                        help="stand-in: every k-th LOCATE answer quotes text that is not in y-")
    args = parser.parse_args()

    from tapo.data import load_records, to_prompt_dataset
    from tapo.models import load_policy

    settings = {**DEFAULTS, "output_dir": str(args.out / "run"), **parse_sets(args.sets)}
    model, tokenizer = load_policy(args.model, seed=settings["seed"])
    if settings.get("use_vllm"):
        import standin_vllm

        colocate = settings.get("vllm_mode", "colocate") == "colocate"  # GRPOConfig's default mode
        install = standin_vllm.install_colocate if colocate else standin_vllm.install
        install(tokenizer, quote_not_found_every=args.quote_not_found_every)

    from tapo.engine.trainer import TAPOConfig, TAPOTrainer

    records = load_records("builtin:arithmetic", n=args.records, n_steps=1, max_operand=9)
    reward = {"checksum": checksum_reward, "one-query": one_query_reward(records[0].id),
              "unscorable-constructions-on-rank1": unscorable_constructions_on(1)}[args.reward]
    trainer = TAPOTrainer(
        model=model, reward_funcs=[reward], args=TAPOConfig(**settings),
        train_dataset=to_prompt_dataset(records), processing_class=tokenizer,
    )
    generate_calls, construct_calls = instrument(trainer)
    if args.slow_pending_save == trainer.accelerator.process_index:
        slow_pending_save()
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    resolved = ("max_completion_length", "num_generations", "steps_per_generation", "temperature", "top_p",
                "synthesis_extra_tokens", "splice_locate_tokens", "splice_continuation_tokens",
                "synthesis_temperature", "synthesis_top_p", "construction", "use_vllm")
    report: dict = {"rank": rank, "world_size": world, "args": {k: getattr(trainer.args, k) for k in resolved}}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train(resume_from_checkpoint=args.resume)
        report["warnings"] = [str(w.message) for w in caught]
    except BaseException:
        report["error"] = traceback.format_exc()
        raise
    finally:
        report.update(
            generate_calls=generate_calls, construct_calls=construct_calls, standin_calls=standin_calls(trainer)
        )
        if trainer.accelerator.is_main_process:
            report["log_history"] = trainer.state.log_history
            path = Path(settings["output_dir"]) / "constructions.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            report["constructions"] = [json.loads(line) for line in lines]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))
    # Tear the process group down, then leave without the interpreter's teardown: C++ destructors that run at
    # shutdown (gloo's and the store's threads) can abort a process whose run finished and whose report is
    # written ("terminate called without an active exception", seen once in CI on a loaded machine).
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
