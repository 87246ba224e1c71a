"""Wall time of one `math_reward` call on 32 completions, 16 of them pathological (stuck in math-verify).

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/answer_check_batch.py [--timeout-s 5]
Prints seconds, how many of the 16 good items were scored right, and the timeouts and worker restarts.
The checking service is warmed first, so only the batch is timed.
"""

from __future__ import annotations

import argparse
import time

from tapo.rewards import configure_checking, is_correct, math_reward, verifier_stats

STUCK = [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{(10^{10})!}", r"\boxed{2^{2^{2^{2^{2^{2}}}}}}"]  # against gold "1"
GOOD = [(r"\boxed{2\sqrt{2}}", r"\sqrt{8}"), (r"\boxed{\{2,1\}}", r"\{1,2\}"), (r"\boxed{x=4}", "4"),
        (r"\boxed{(x+1)^2}", "x^2+2x+1")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    configure_checking(timeout_s=args.timeout_s)
    completions, golds = [], []
    for i in range(16):
        completions.append(STUCK[i % 3])
        golds.append("1")
        completion, gold = GOOD[i % 4]
        completions.append(completion)
        golds.append(gold)
    is_correct(r"\boxed{\sqrt{4}}", "2")  # start and warm the checking service
    before, started = verifier_stats(), time.monotonic()
    scores = math_reward(completions, golds)
    seconds, after = time.monotonic() - started, verifier_stats()
    print(f"{seconds:.1f} s, correct={sum(scores):.0f} of 16 good, timeouts={after.timeouts - before.timeouts}, "
          f"restarts={after.restarts - before.restarts}")


if __name__ == "__main__":
    main()
