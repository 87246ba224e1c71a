"""`responses.jsonl` of an evaluation: one JSON row per sampled response, written a whole chunk at a time.

A chunk (one benchmark, one run, a fixed block of problems, all samples of each) is the unit of
work: its rows are appended with a single write and flushed to disk only once every response of
the chunk is generated and scored. An interruption can therefore leave at most one partly
written chunk at the end of the file, and at most one partly written line (cut anywhere, inside
a multi-byte character or just before its newline). `read_responses` drops an unparseable last
line; `append_rows` ends a last line that lacks its newline before it appends; the evaluation
then drops any chunk whose rows are not exactly the ones it plans and generates it again.

Row keys: benchmark, problem_id, run, sample, chunk, response, answer (extracted, or null),
gold, correct, n_tokens, finished; and problem_sha (a hash of the problem text the response
answers), which rows written by earlier versions lack, so it is not required.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

ROW_KEYS = ("benchmark", "problem_id", "run", "sample", "chunk", "response", "answer", "gold", "correct", "n_tokens", "finished")


def read_responses(path: str | Path) -> tuple[list[dict], int]:
    """(rows, number of lines dropped) of a responses file; a missing file has no rows.

    Only the last line may be broken (an interrupted write, possibly inside a multi-byte
    character), and it is dropped; a broken line anywhere else, or a row without the keys above,
    is an error naming the file and line. Lines end at "\\n" only: JSON leaves U+2028 and the
    like unescaped inside strings.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last complete row
    rows: list[dict] = []
    dropped = 0
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if number == len(lines):
                dropped += 1  # cut off by an interruption: that chunk is redone
                continue
            what = "UTF-8" if isinstance(error, UnicodeDecodeError) else "JSON"
            reason = error.reason if isinstance(error, UnicodeDecodeError) else error.msg
            raise ValueError(f"line {number} of {path} is not valid {what} ({reason}); was the file edited?") from error
        missing = [key for key in ROW_KEYS if key not in row] if isinstance(row, dict) else list(ROW_KEYS)
        if missing:
            raise ValueError(f"line {number} of {path} is not a response row: missing {', '.join(missing)}")
        rows.append(row)
    return rows, dropped


def append_rows(path: str | Path, rows: Sequence[dict]) -> None:
    """Append rows with one write, then flush them to disk (the chunk is on disk or not at all, bar a cut line).

    A last row whose newline is missing (its write was cut just before it) gets one first, so the
    new rows start on a line of their own.
    """
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def rewrite_rows(path: str | Path, rows: Iterable[dict]) -> None:
    """Replace the file by these rows atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
