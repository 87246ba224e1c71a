"""`tapo eval`: Pass@k, maj@k and avg@n of a model on benchmarks, under the paper's protocol by default."""

from __future__ import annotations

import argparse


def offline_benchmark_message(error, requested: list[str]) -> str:
    """A benchmark that needs the Hub, unreachable: the reason, then the `--benchmarks` that works offline.

    Every requested registry name without an offline copy is swapped for a file path at once (the
    default list has two), so the suggested command does not fail on the next one.

    >>> from tapo.data import BENCHMARKS, BenchmarkUnavailableError
    >>> error = BenchmarkUnavailableError("could not load benchmark 'aime24'", BENCHMARKS["aime24"])
    >>> offline_benchmark_message(error, ["aime24"])  # doctest: +ELLIPSIS
    "could not load benchmark 'aime24'; without network access, ... pass its path: --benchmarks path/to/aime24.jsonl"
    """
    from tapo.data.benchmarks import BENCHMARKS, has_offline_copy, local_hint

    def fixed(name: str) -> str:
        key = name.lower()
        if key == error.spec.name or (key in BENCHMARKS and not has_offline_copy(key)):
            return f"path/to/{key}.jsonl"
        return name

    swapped = [b.lower() for b in requested if fixed(b) != b]
    usage = f"--benchmarks {','.join(fixed(b) for b in requested)}"
    also = f" ({' and '.join(swapped)} have no offline copy here)" if len(swapped) > 1 else ""
    return f"{error.reason}; {local_hint(error.spec, usage=usage)}{also}"


def _run(args: argparse.Namespace) -> int:
    from tapo.data import BenchmarkUnavailableError
    from tapo.evaluation.run import RESPONSES, RESULT_JSON, RESULT_MD, EvalProtocol, evaluate, template_kwargs
    from tapo.evaluation.tables import result_markdown

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    protocol = EvalProtocol(
        samples=args.samples,
        runs=args.runs,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    chat_template_kwargs = template_kwargs(args.chat_template_kwargs, where="--chat-template-kwargs")
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    try:
        result = evaluate(
            args.model,
            benchmarks,
            output_dir=args.output,
            protocol=protocol,
            batch_size=args.batch_size,
            limit=args.limit,
            backend=args.backend,
            dtype=args.dtype,
            instruction=args.instruction,
            system_prompt=args.system_prompt,
            chat_template_kwargs=chat_template_kwargs,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except BenchmarkUnavailableError as error:
        raise ValueError(offline_benchmark_message(error, benchmarks)) from None
    print(result_markdown(result))
    print(f"wrote {args.output}/{RESULT_JSON}, {args.output}/{RESULT_MD}, {args.output}/{RESPONSES}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a model on math benchmarks (Pass@k, maj@k, avg@n; resumable)",
        description=(
            "Sample every problem --samples times in each of --runs runs and report Pass@k (unbiased), maj@k "
            "and avg@n, mean ± std over runs. Rerunning into the same --output resumes an interrupted evaluation."
        ),
    )
    p.add_argument("--model", required=True, help="hub id, local folder, or built-in name (builtin:tiny, builtin:tiny-arith, ...)")
    p.add_argument(
        "--benchmarks", default="aime24,aime25,hmmt25",
        help="comma-separated registry names (aime24, aime25, hmmt25, math500, gsm8k) or local .jsonl/.json/.parquet files",
    )
    p.add_argument("--samples", type=int, default=5, help="samples per problem in each run: n of Pass@k (default 5)")
    p.add_argument("--runs", type=int, default=16, help="evaluation runs averaged over (default 16)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature; 0 = greedy (default 0.6)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling top-p (default 0.9)")
    p.add_argument("--max-tokens", type=int, default=32768, help="most tokens per response (default 32768)")
    p.add_argument("--seed", type=int, default=0, help="base seed; every chunk's seed derives from it (default 0)")
    p.add_argument("--output", required=True, help="evaluation directory: result.json, result.md, responses.jsonl")
    p.add_argument("--batch-size", type=int, help="problems per generation call (default: 8 with transformers, 256 with vLLM)")
    p.add_argument("--limit", type=int, help="only the first N problems of each benchmark, for a quick look")
    p.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto",
                   help="generation engine; auto = vLLM when installed and a CUDA GPU is present, else transformers")
    p.add_argument("--dtype", help="model dtype (default: bfloat16 on GPU, float32 on CPU)")
    # The prompt must be the one the model was trained with (the run config's data.instruction,
    # data.system_prompt and trainer.chat_template_kwargs): given here, as TRL takes them, never guessed.
    p.add_argument("--instruction", metavar="TEXT",
                   help="the text after each problem, as data.instruction of the training config "
                        "(default: the training default, step-by-step reasoning with a \\boxed{} answer)")
    p.add_argument("--system-prompt", help="a system message before each problem (default: none, as in training)")
    p.add_argument("--chat-template-kwargs", metavar="JSON",
                   help="chat template arguments as a JSON object, as trainer.chat_template_kwargs of the training "
                        "config; Qwen3 non-thinking runs (recipes/paper): '{\"enable_thinking\": false}'")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier evaluation in --output instead of resuming it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
