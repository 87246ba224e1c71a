"""One TAPO (or plain GRPO) training step under FSDP on 2 CPU processes (gloo), for tests/test_fsdp_cpu.py.

Launch (2 processes, FSDP2; `--fsdp 1` for FSDP1, `--fsdp none` for plain DDP):

    OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false torchrun --nproc_per_node 2 --standalone \
        tests/fsdp_tapo.py --fsdp 2 --algo tapo --pairs balanced --out /tmp/fsdp-run

Each rank writes OUT/rank{R}.json: whether FSDP is on (`is_fsdp_enabled`, distributed type, the wrapper's
type, sharded parameter shapes), the generation calls it made (rollouts and synthesis, with prompt
counts), the construction requests it got, and `finished` once `trainer.train()` returned. A rank that
hangs leaves `finished: false` and its last `stage`.

Why a patch: accelerate 1.15 only turns on FSDP when the process group is on an accelerator
(`AcceleratorState` enables `DistributedType.FSDP` inside its MULTI_GPU/XPU/NPU/... branch); on CPU
(MULTI_CPU, gloo) it drops the FSDP plugin without a word and the run is plain DDP (FSDP1 fails earlier:
its plugin's sync_module_states asks for a CUDA/XPU/... device). Torch's FSDP1 and FSDP2 themselves work
on CPU with gloo, so by default `allow_fsdp_on_cpu` turns the MULTI_CPU state into an FSDP state with
the plugin the Trainer passed (and, for FSDP1, the device `cpu` instead of `cpu:0`); the sharding,
collectives and generation paths of torch, accelerate, TRL and tapo are the real ones. `--no-cpu-patch`
shows the unpatched behaviour. `--fsdp zero3` (DeepSpeed ZeRO-3; needs `deepspeed` importable and
DS_ACCELERATOR=cpu) has the same kind of patch: without a GPU accelerate lets DeepSpeed start a gloo group
but records 1 process, so `allow_zero3_on_cpu` fills in the real world size and rank.

With PYTHONPATH set, the script imports tapo from there; otherwise from this checkout.

`--pairs` picks a deterministic reward that fixes how many construction pairs each rank gets (m_max=1,
n_pos=n_neg=1, 4 groups of 4, each rank holding 2 whole groups):
- balanced: the first group of each rank is mixed ([1,0,0,0]) -> 2 pairs, one per rank;
- skew: only rank 0's first group is mixed -> 1 pair: rank 0 builds it, rank 1 has no request;
- checksum: tests/test_tapo_trainer.py's checksum reward (pairs wherever groups happen to be mixed).
Under FSDP generation all-gathers parameters, so a rank that skips a synthesis generation while the
other makes one hangs (or crashes on a mismatched collective).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
import traceback
import zlib
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("PYTHONPATH"):  # this checkout's tapo, not whatever an editable install points to
    sys.path.insert(0, str(ROOT))


def allow_fsdp_on_cpu() -> None:
    """Let accelerate's AcceleratorState use the FSDP plugin on a CPU (gloo) process group."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_tapo_cpu_fsdp", False):
        return

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            # as AcceleratorState does on GPUs: later AcceleratorState() calls copy PartialState's type back
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            if fsdp_plugin.fsdp_version == 1:
                # MULTI_CPU's device is cpu:0, but CPU tensors report `cpu`, and FSDP1 refuses a device_id
                # that differs from its parameters' device ("Inconsistent compute device and `device_id`")
                self.device = PartialState._shared_state["device"] = torch.device("cpu")

    patched._tapo_cpu_fsdp = True
    AcceleratorState.__init__ = patched


def allow_zero3_on_cpu() -> None:
    """Let accelerate count the processes of a DeepSpeed run without a GPU.

    Without an accelerator PartialState finds no backend, lets DeepSpeed init its (gloo) process group,
    then records 1 process ("no backend == no distributed training"): every rank thinks it is alone.
    """
    from accelerate.state import PartialState

    original = PartialState.__init__
    if getattr(original, "_tapo_cpu_zero3", False):
        return

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if dist.is_initialized() and self.num_processes == 1 and dist.get_world_size() > 1:
            self.backend = dist.get_backend()
            self.num_processes, self.process_index = dist.get_world_size(), dist.get_rank()
            self.local_process_index = int(os.environ.get("LOCAL_RANK", self.process_index))

    patched._tapo_cpu_zero3 = True
    PartialState.__init__ = patched


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def make_reward(mode: str):
    def checksum_reward(completions, **kwargs):
        return [float(zlib.crc32(json.dumps(c).encode()) % 5 < 2) for c in completions]

    def placed_reward(completions, **kwargs):
        mixed_here = mode == "balanced" or rank() == 0
        # [1, 0, 0, 0] on this rank's first group (and on its first y_ref slot); 0 elsewhere.
        return [1.0 if (mixed_here and i == 0) else 0.0 for i in range(len(completions))]

    fn = checksum_reward if mode == "checksum" else placed_reward
    fn.__name__ = f"{mode}_reward"
    return fn


class Report:
    """rank{R}.json, rewritten at every stage so that a hung rank still shows where it stopped."""

    def __init__(self, out: Path, **fields):
        self.path = out / f"rank{rank()}.json"
        self.data = {"rank": rank(), "finished": False, "stage": "start", "generate_calls": [], **fields}
        self.started = time.monotonic()
        self.write()

    def update(self, **fields):
        self.data.update(fields)
        self.write()

    def write(self):
        self.data["seconds"] = round(time.monotonic() - self.started, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def sharding_info(model) -> dict:
    """How the wrapped model's parameters are held on this rank."""
    from torch.distributed.tensor import DTensor

    local, full, dtensors, plain, zero3 = 0, 0, 0, 0, 0
    shapes = []
    for name, p in model.named_parameters():
        if isinstance(p, DTensor):
            dtensors += 1
            local += p.to_local().numel()
            full += p.numel()
            if len(shapes) < 3:
                shapes.append([name, list(p.to_local().shape), list(p.shape)])
        elif hasattr(p, "ds_tensor"):  # DeepSpeed ZeRO-3: p is a placeholder, ds_tensor this rank's partition
            zero3 += 1
            local += p.ds_tensor.numel()
            full += p.ds_numel
            if len(shapes) < 3:
                shapes.append([name, list(p.ds_tensor.shape), list(p.ds_shape)])
        else:
            plain += 1
            local += p.numel()
            if len(shapes) < 3:
                shapes.append([name, list(p.shape)])
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    fsdp1_units = sum(isinstance(m, FSDP1) for m in model.modules())
    fsdp2_units = sum(isinstance(m, FSDPModule) for m in model.modules())
    return {
        "local_param_numel": local, "sharded_full_numel": full, "dtensor_params": dtensors, "zero3_params": zero3,
        "plain_params": plain, "first_param_shapes": shapes, "fsdp1_units": fsdp1_units, "fsdp2_units": fsdp2_units,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", choices=("tapo", "grpo"), default="tapo")
    parser.add_argument("--fsdp", choices=("1", "2", "none", "zero3"), default="2",
                        help="FSDP version, none (DDP), or zero3 (DeepSpeed ZeRO-3; needs deepspeed and DS_ACCELERATOR=cpu)")
    parser.add_argument("--pairs", choices=("balanced", "skew", "checksum"), default="balanced")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=1)
    parser.add_argument("--construction", default="self")
    parser.add_argument("--splice-locate", default="ask", help="splice's locator; surprise's score calls are recorded")
    parser.add_argument("--surprise-threshold", type=float, default=1.0)
    parser.add_argument("--schedule", default="inline", help="synthesis_schedule")
    parser.add_argument("--temperature", type=float, default=1.0, help="the rollout temperature")
    parser.add_argument("--model", default="builtin:tiny-arith",
                        help="the warm-started tiny model ends its answers with eos; a rollout cut off by its budget is never a y-")
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--pg-timeout", type=int, default=120, help="seconds; gloo collective timeout (ddp_timeout)")
    parser.add_argument("--no-cpu-patch", dest="cpu_patch", action="store_false")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.cpu_patch and args.fsdp in ("1", "2"):
        allow_fsdp_on_cpu()
    if args.cpu_patch and args.fsdp == "zero3":
        allow_zero3_on_cpu()

    report = Report(args.out, algo=args.algo, fsdp=args.fsdp, pairs=args.pairs, cpu_patch=args.cpu_patch,
                    versions={m: __import__(m).__version__ for m in ("torch", "accelerate", "transformers", "trl")},
                    tapo_file=__import__("tapo").__file__)
    try:
        run(args, report)
    except BaseException as error:  # noqa: BLE001 - the report says what happened, then re-raise
        report.update(stage="error", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-4000:])
        raise
    return 0


def run(args, report: Report) -> None:
    from trl import GRPOConfig, GRPOTrainer

    from tapo.data import load_records, to_prompt_dataset
    from tapo.models import load_policy
    from tapo.engine.trainer import TAPOConfig, TAPOTrainer

    model, tokenizer = load_policy(args.model)
    full_numel = sum(p.numel() for p in model.parameters())  # before any wrapping or sharding
    records = load_records("builtin:arithmetic", n=32, n_steps=1, max_operand=9)
    num_generations, max_completion_length = 4, args.max_completion_length
    settings = dict(
        output_dir=str(args.out / "run"), use_cpu=True, max_steps=args.max_steps, num_generations=num_generations,
        per_device_train_batch_size=8, max_completion_length=max_completion_length, learning_rate=1e-4, report_to=[],
        logging_steps=1, save_strategy="no", bf16=False, disable_tqdm=True, seed=3, ddp_timeout=args.pg_timeout,
        temperature=args.temperature,
    )
    if args.fsdp == "zero3":
        # accelerate refuses DeepSpeed when cpu=True; without a GPU, use_cpu=False + gloo still gives a CPU run
        settings.update(use_cpu=False, ddp_backend="gloo", deepspeed={
            "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
            "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        })
    elif args.fsdp != "none":
        settings.update(
            fsdp="full_shard",
            fsdp_config={"version": int(args.fsdp), "transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]},
        )
        if args.fsdp == "1":
            # sync_module_states (the FSDP1 default) makes accelerate's plugin ask for a CUDA/XPU/... device and
            # raise on CPU; every rank builds the same deterministic builtin:tiny, so there is nothing to sync.
            settings["fsdp_config"]["sync_module_states"] = False
    if args.algo == "tapo":
        settings.update(construction=args.construction, n_pos=1, n_neg=1, m_max=1, synthesis_extra_tokens=16,
                        splice_locate=args.splice_locate, splice_surprise_threshold=args.surprise_threshold,
                        synthesis_schedule=args.schedule)
        config_cls, trainer_cls = TAPOConfig, TAPOTrainer
    else:
        config_cls, trainer_cls = GRPOConfig, GRPOTrainer
    trainer = trainer_cls(
        model=model, reward_funcs=[make_reward(args.pairs)], args=config_cls(**settings),
        train_dataset=to_prompt_dataset(records), processing_class=tokenizer,
    )
    report.update(stage="built", distributed_type=str(trainer.accelerator.distributed_type),
                  is_fsdp_enabled=bool(trainer.is_fsdp_enabled), backend=dist.get_backend() if dist.is_initialized() else None,
                  world_size=trainer.accelerator.num_processes, full_param_numel=full_numel)

    # Record every HF generate call this rank makes (TRL's rollouts and TAPO's synthesis both end there);
    # synthesis runs with max_new_tokens = max_completion_length + synthesis_extra_tokens, and with stop strings
    # (which HF generate only honours with a tokenizer passed to the call).
    from transformers import GenerationMixin
    from transformers.distributed.fsdp import is_fsdp_managed_module

    generate = GenerationMixin.generate

    def counted_generate(model_self, *gen_args, **gen_kwargs):
        config = gen_kwargs.get("generation_config") or model_self.generation_config
        input_ids = gen_kwargs.get("input_ids", gen_args[0] if gen_args else None)
        call = {"rows": int(input_ids.shape[0]) if input_ids is not None else None,
                "max_new_tokens": config.max_new_tokens, "t": round(time.monotonic() - report.started, 2), "done": False}
        call["kind"] = "synthesis" if config.max_new_tokens != max_completion_length else "rollout"
        call["stop_strings"] = config.stop_strings
        call["tokenizer"] = gen_kwargs.get("tokenizer") is not None
        # phases sharing one call end each row at its own stop (tapo.engine.riders.rows_ended_apart)
        call["row_limits"] = "_get_stopping_criteria" in model_self.__dict__
        # what HF generate decides when synced_gpus is not passed: keep stepping until every rank is done?
        call["synced_gpus"] = gen_kwargs.get("synced_gpus", is_fsdp_managed_module(model_self) and dist.get_world_size() > 1)
        report.data["generate_calls"].append(call)
        report.update(stage=f"generate#{len(report.data['generate_calls'])}:{call['kind']}")
        result = generate(model_self, *gen_args, **gen_kwargs)
        call["done"], call["new_tokens"] = True, int(result.shape[1] - input_ids.shape[1]) if input_ids is not None else None
        report.update(stage="after-generate")
        return result

    GenerationMixin.generate = counted_generate
    if args.algo == "tapo":
        if args.splice_locate == "surprise":
            trainer.constructor = dataclasses.replace(
                trainer.constructor, score=_counting_score(trainer.constructor.score, report)
            )
        trainer.constructor = _CountingConstructor(trainer.constructor, report)

    report.update(stage="train")
    output = trainer.train()
    metrics = {k: v for k, v in (trainer.state.log_history[-2] if len(trainer.state.log_history) > 1 else {}).items()
               if k.startswith("tapo/") or k in ("loss", "reward")}
    report.update(
        stage="trained", global_step=trainer.state.global_step, train_loss=output.training_loss,
        model_wrapped_type=f"{type(trainer.model_wrapped).__module__}.{type(trainer.model_wrapped).__qualname__}",
        model_type=f"{type(trainer.model).__module__}.{type(trainer.model).__qualname__}",
        sharding=sharding_info(trainer.model_wrapped), tapo_metrics=metrics,
    )
    if dist.is_initialized():
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=args.pg_timeout))
    report.update(stage="done", finished=True)
    if dist.is_initialized():  # before exit: gloo's threads can abort an interpreter that shuts down with them
        dist.destroy_process_group()


def _counting_score(score, report: Report):
    """The surprise locator's ScoreFn, recording the rows this rank scored per call (after it returned)."""

    def counted(prompts, completions):
        out = score(prompts, completions)
        report.data.setdefault("score_calls", []).append(
            {"rows": len(prompts), "returned": len(out), "lengths_match": [len(o) for o in out] == [len(c) for c in completions]}
        )
        return out

    return counted


class _CountingConstructor:
    """The trainer's constructor, recording how many construction requests this rank got per call."""

    def __init__(self, inner, report: Report):
        self._inner, self._report = inner, report

    def construct(self, requests):
        counts = self._report.data.setdefault("construction_requests", [])
        counts.append(len(requests))
        self._report.update(stage="construct")
        return self._inner.construct(requests)

    def defer(self, requests):  # synthesis_schedule deferred: counted when the step chooses them
        counts = self._report.data.setdefault("construction_requests", [])
        counts.append(len(requests))
        self._report.update(stage="defer")
        return self._inner.defer(requests)

    def __getattr__(self, name):
        return getattr(self._inner, name)


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown: C++ destructors that run at shutdown (gloo's and the store's
    # threads) can abort a process whose run finished and whose report is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
