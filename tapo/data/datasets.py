"""Math records from the built-in arithmetic task, local files or the Hub, and TRL prompts for them.

Every source becomes a list of `MathRecord(id, problem, answer)`. A malformed row is an error
that names the file, the row and what is wrong; it is never skipped silently.

Row numbers are 1-based: in a JSONL file the row number is the line number; in a JSON list, a
parquet file or a Hub split it is the record's position.

Local text files are UTF-8; a leading UTF-8 byte-order mark (what Windows editors and Excel
write) is dropped. Other encodings (Latin-1, UTF-16, ...) are errors that name the file, the
row (line) and the byte, and say how to convert the file, instead of a bare `UnicodeDecodeError`
or a misleading "invalid JSON" on the first row.
"""

from __future__ import annotations

import codecs
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BUILTIN_ARITHMETIC = "builtin:arithmetic"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
PROBLEM_KEYS = ("problem", "question", "prompt", "Problem", "Question")
ANSWER_KEYS = ("answer", "solution", "Answer", "final_answer")
ID_KEYS = ("id", "unique_id")
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
ARITHMETIC_OPTIONS = ("n", "seed", "n_steps", "max_operand")


@dataclass(frozen=True)
class MathRecord:
    """One math problem with its gold final answer."""

    id: str
    problem: str  # the bare problem text, no instruction, no chat template
    answer: str  # the gold final answer ("42", "\\frac{1}{2}"), not a worked solution


class DataError(ValueError):
    """A malformed data row; the message names the file (or data set), the row and the fault."""


def load_records(
    source: str | Path,
    *,
    split: str = "train",
    problem_key: str | None = None,
    answer_key: str | None = None,
    limit: int | None = None,
    subset: str | None = None,
    answer_fn: Callable[[str], str] | None = None,
    validate: bool = True,
    **arith_kwargs,
) -> list[MathRecord]:
    """Load math records from `source`.

    `source` is one of
      - `"builtin:arithmetic"`: the built-in task (`tapo.data.arithmetic.generate_problems`);
        `split` is "train" or "test"; `arith_kwargs` are n (default: `limit`, else 1000), seed,
        n_steps, max_operand;
      - a local `.jsonl`, `.json` or `.parquet` file (or a folder `datasets.load_dataset` reads);
      - a Hub data set id such as `"openai/gsm8k"` (with `subset="main"`), read with
        `datasets.load_dataset` at call time.

    Columns: the problem is the first of `problem, question, prompt, Problem, Question` a row
    has (a conversational `prompt` gives its last user message), the answer the first of
    `answer, solution, Answer, final_answer`; `problem_key` / `answer_key` override them.
    Answers are reduced to the final answer: GSM8K's `... #### 1,234` -> `1234`, a worked
    solution with `\\boxed{...}` -> the last boxed content. `answer_fn` then maps each answer
    (e.g. to strip a degree sign). Ids come from an `id` / `unique_id` column, else
    `<file stem>-<row>`. When `validate` and `tapo.rewards.validate_gold` exists, each gold
    answer is checked with it. `limit` keeps the first `limit` records.

    >>> load_records("builtin:arithmetic", n=2)[0].id
    'arith-train-0000'
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    source = str(source)
    if source == BUILTIN_ARITHMETIC or source.startswith("builtin:"):
        return _load_arithmetic(source, split=split, limit=limit, **arith_kwargs)
    if arith_kwargs:
        raise TypeError(
            f"options {', '.join(sorted(arith_kwargs))} apply only to {BUILTIN_ARITHMETIC!r}, not to {source!r}"
        )
    rows, label, stem = read_rows(source, split=split, subset=subset)
    return records_from_rows(
        rows,
        label=label,
        stem=stem,
        problem_key=problem_key,
        answer_key=answer_key,
        limit=limit,
        answer_fn=answer_fn,
        validate=validate,
    )


def records_from_rows(
    rows: Iterable[tuple[int, object]],
    *,
    label: str,
    stem: str,
    problem_key: str | None = None,
    answer_key: str | None = None,
    limit: int | None = None,
    answer_fn: Callable[[str], str] | None = None,
    validate: bool = True,
) -> list[MathRecord]:
    """Turn (row number, row) pairs into records; `label` names the source in errors."""
    validate_gold = _validate_gold() if validate else None
    records: list[MathRecord] = []
    first_row_of: dict[str, int] = {}
    if limit == 0:
        return records
    for row_no, row in rows:
        where = f"{label} row {row_no}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with problem and answer fields, got {type(row).__name__}")
        row = _without_bom_keys(row)
        problem = _problem_text(row, problem_key, where)
        answer = _answer_text(row, answer_key, where)
        if answer_fn is not None:
            answer = answer_fn(answer)
            if not answer.strip():
                raise DataError(f"{where}: answer is empty after answer_fn")
        if validate_gold is not None:
            validate_gold(answer, where=where)
        rid = _row_id(row, stem, row_no, where=where)
        if rid in first_row_of:
            raise DataError(f"{where}: duplicate id {rid!r} (first at row {first_row_of[rid]})")
        first_row_of[rid] = row_no
        records.append(MathRecord(id=rid, problem=problem, answer=answer))
        if limit is not None and len(records) >= limit:
            break  # before the next row is read: a later row is never decoded, let alone checked
    return records


def final_answer(answer: str) -> str:
    """The final answer inside a gold field: after GSM8K's `####` (commas dropped), else inside the last `\\boxed{}`.

    >>> final_answer("She makes 9 * 2 = $18.\\n#### 1,018")
    '1018'
    >>> final_answer("So the sum is $\\\\boxed{\\\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    >>> final_answer(" 42 ")
    '42'
    """
    if "####" in answer:
        tail = answer.rsplit("####", 1)[1].strip()
        if re.fullmatch(r"[-+]?\$?\d[\d,]*(\.\d+)?", tail):  # a number: "1,234", "$18"
            tail = tail.replace(",", "").replace("$", "")
        return tail
    boxed = last_boxed(answer)
    return boxed.strip() if boxed is not None else answer.strip()


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced; None if none.

    >>> last_boxed("a \\\\boxed{1} b \\\\boxed{\\\\frac{2}{3}}")
    '\\\\frac{2}{3}'
    """
    at = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if at < 0:
        return None
    i = text.index("{", at) + 1
    depth, start = 1, i
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
        i += 1
    return None


def format_prompt(
    problem: str,
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
) -> list[dict]:
    """A TRL conversational prompt: an optional system message, then the problem and the instruction.

    >>> format_prompt("What is 2 + 3?", system_prompt="Be brief.")  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'system', 'content': 'Be brief.'},
     {'role': 'user', 'content': 'What is 2 + 3?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'}]
    """
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    content = f"{problem}\n{instruction}" if instruction else problem
    messages.append({"role": "user", "content": content})
    return messages


def to_prompt_dataset(
    records: Sequence[MathRecord],
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
):
    """A `datasets.Dataset` for TRL: columns `prompt` (conversational), `answer`, `problem`, `query_id`."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [format_prompt(r.problem, instruction=instruction, system_prompt=system_prompt) for r in records],
            "answer": [r.answer for r in records],
            "problem": [r.problem for r in records],
            "query_id": [r.id for r in records],
        }
    )


def build_dataset(data):
    """The prompt dataset (`to_prompt_dataset`) of a run config's `data:` section (`tapo.config.DataSection`),
    as `tapo train` trains on it."""
    records = load_records(
        data.source,
        split=data.split,
        problem_key=data.problem_key,
        answer_key=data.answer_key,
        limit=data.limit,
        **(
            {"n": data.n, "seed": data.data_seed, "n_steps": _steps(data.n_steps), "max_operand": data.max_operand}
            if data.source == "builtin:arithmetic"
            else {}
        ),
    )
    return to_prompt_dataset(records, instruction=data.instruction, system_prompt=data.system_prompt)


def _steps(value):
    return tuple(value) if isinstance(value, list) else value


# --- reading sources ------------------------------------------------------------------------


def _load_arithmetic(source: str, *, split: str, limit: int | None, **options) -> list[MathRecord]:
    from tapo.data.arithmetic import generate_problems

    if source != BUILTIN_ARITHMETIC:
        raise ValueError(f"unknown built-in data set {source!r}; the built-in one is {BUILTIN_ARITHMETIC!r}")
    unknown = sorted(set(options) - set(ARITHMETIC_OPTIONS))
    if unknown:
        known = ", ".join(ARITHMETIC_OPTIONS)
        raise TypeError(f"unknown options for {BUILTIN_ARITHMETIC}: {', '.join(unknown)} (known: {known})")
    if isinstance(options.get("n_steps"), list):
        options["n_steps"] = tuple(options["n_steps"])
    options.setdefault("n", limit if limit is not None else 1000)
    problems = generate_problems(split=split, **options)
    if limit is not None:
        problems = problems[:limit]
    return [MathRecord(id=p.id, problem=p.question, answer=p.answer) for p in problems]


def read_rows(source: str, *, split: str, subset: str | None) -> tuple[Iterator[tuple[int, object]], str, str]:
    """(numbered rows, label for errors, stem for ids) of a local file or a Hub data set."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _jsonl_rows(path), str(source), path.stem
        if suffix == ".json":
            return _json_rows(path), str(source), path.stem
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return enumerate(pq.read_table(path).to_pylist(), start=1), str(source), path.stem
        raise ValueError(f"{source}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    label = f"{source} ({subset + ', ' if subset else ''}split {split})"
    if path.is_dir():  # before the path test below: `/data/gsm8k`, `./data`, `~/data` may be folders
        return enumerate(iter(_folder_dataset(path, split=split, subset=subset)), start=1), label, path.name
    if path.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"data file not found: {source}")
    import datasets  # a Hub id; imported here so `import tapo.data` stays light

    ds = datasets.load_dataset(source, subset, split=split)
    return enumerate(iter(ds), start=1), label, source.rstrip("/").split("/")[-1]


def _folder_dataset(path: Path, *, split: str, subset: str | None):
    """`datasets.load_dataset` of a local folder; whatever it fails on is a DataError naming the folder.

    `datasets` reports a malformed row as a DatasetGenerationError whose message names neither the
    file nor the fault; the fault is the innermost exception of its chain ("Trailing data at position
    39"), and the file and row are found by reading the folder's JSON files with this module's readers.
    Its other errors (an empty folder, an unknown split) say what is wrong themselves.
    """
    import datasets  # imported here so `import tapo.data` stays light

    try:
        return datasets.load_dataset(str(path), subset, split=split)
    except Exception as error:  # noqa: BLE001 - whatever datasets raises, the folder's files are what is wrong
        generic = isinstance(error, datasets.exceptions.DatasetGenerationError)
        cause = _innermost(error) if generic else error
        message = f"{path}: the data folder could not be read (datasets: {str(cause) or type(cause).__name__})"
        bad_row = _first_bad_row(path)
        raise DataError(f"{message}; {bad_row}" if bad_row else message) from error


def _innermost(error: BaseException) -> BaseException:
    """The last exception of `error`'s chain of causes (the one that says what is wrong)."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    return error


def _first_bad_row(folder: Path) -> str | None:
    """The DataError message of the first of `folder`'s JSON files that this module cannot read, else None."""
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows}
    for file in sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in readers):
        try:
            for _ in readers[file.suffix.lower()](file):
                pass
        except DataError as error:
            return str(error)
    return None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as e:
            where = f"{path} row {line_no}"
            raise DataError(f"{where}: invalid JSON at line {line_no}, column {e.colno}: {e.msg}") from None


def _json_rows(path: Path) -> Iterator[tuple[int, object]]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines in a .json file
            yield from _jsonl_rows(path)
            return
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if isinstance(data, dict):
        wrapped = next((data[k] for k in ("data", "rows", "examples", "records") if isinstance(data.get(k), list)), None)
        columns = [v for v in data.values() if isinstance(v, list)]
        if wrapped is not None:  # {"data": [{...}, ...]}
            data = wrapped
        elif columns and len(columns) == len(data) and len({len(v) for v in columns}) == 1:  # {"problem": [...], ...}
            data = [dict(zip(data, values)) for values in zip(*columns)]
        else:
            keys = ", ".join(map(str, data))
            raise DataError(f"{path}: expected a list of objects (or a 'data' list, or columns), got keys {keys}")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects, got {type(data).__name__}")
    yield from enumerate(data, start=1)


# --- text encoding ---------------------------------------------------------------------------

# Byte-order marks of encodings that are not UTF-8, longest first (UTF-32 LE starts like UTF-16 LE).
FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, a leading UTF-8 BOM dropped; read line by line, not whole.

    Any other encoding is a DataError naming the file, the row (line) and the offending byte,
    raised when that line is reached (rows before it are read as usual).
    """
    path = Path(path)
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = _drop_utf8_bom(path, raw, where=f"{path} row 1")
            yield line_no, _decode_line(raw, path=path, where=f"{path} row {line_no}")


def read_text(path: str | Path) -> str:
    """The whole text of a UTF-8 file (a leading BOM dropped); another encoding is a DataError naming the line."""
    path = Path(path)
    data = _drop_utf8_bom(path, path.read_bytes(), where=f"{path} line 1")
    try:
        return _decode_line(data, path=path, where=str(path))
    except DataError:  # name the line: decode line by line up to the bad one
        for line_no, raw in enumerate(data.split(b"\n"), start=1):
            _decode_line(raw, path=path, where=f"{path} line {line_no}")
        raise


def _drop_utf8_bom(path: Path, head: bytes, *, where: str) -> bytes:
    """`head` without a UTF-8 byte-order mark; a UTF-16 / UTF-32 one is a DataError saying how to convert."""
    for bom, encoding in FOREIGN_BOMS:
        if head.startswith(bom):
            raise DataError(
                f"{where}: the file is {encoding} text (it starts with a {encoding} byte-order mark), not UTF-8; "
                f"save it as UTF-8, e.g. {_iconv(path, encoding)}"
            )
    return head[len(codecs.BOM_UTF8) :] if head.startswith(codecs.BOM_UTF8) else head


def _decode_line(raw: bytes, *, path: Path, where: str) -> str:
    """UTF-8 text of `raw`, or a DataError naming the byte, its column and a likely encoding.

    NUL bytes are valid UTF-8 but never appear in a text data file; they are how UTF-16 without a
    byte-order mark looks ("{" is 7b 00), which would otherwise surface as a puzzling JSON error.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
        guess, source = "Latin-1 or Windows-1252", "CP1252"
    else:
        if "\x00" not in text:
            return text
        bad = raw.index(b"\x00")
        guess, source = "UTF-16 without a byte-order mark", "UTF-16LE"
    column = len(raw[:bad].decode("utf-8", errors="replace")) + 1
    raise DataError(
        f"{where}: not UTF-8 text (byte 0x{raw[bad]:02x} at column {column}; the file looks {guess}); "
        f"save it as UTF-8, e.g. {_iconv(path, source)}"
    )


def _iconv(path: Path, encoding: str) -> str:
    return f"`iconv -f {encoding} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`"


# --- one row --------------------------------------------------------------------------------


def _problem_text(row: dict, key: str | None, where: str) -> str:
    key = _pick_key(row, key, PROBLEM_KEYS, where, what="problem")
    value = row[key]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):  # conversational prompt
        users = [m.get("content") for m in value if m.get("role") == "user"]
        value = users[-1] if users else None
    if value is None:
        raise DataError(f"{where}: problem ({key!r}) is missing (null)")
    if not isinstance(value, str):
        raise DataError(f"{where}: problem ({key!r}) is not text (got {type(value).__name__})")
    _check_unicode(value, where=where, what=f"problem ({key!r})")
    if not value.strip():
        raise DataError(f"{where}: problem is empty")
    return value.strip()


def _answer_text(row: dict, key: str | None, where: str) -> str:
    key = _pick_key(row, key, ANSWER_KEYS, where, what="answer")
    value = row[key]
    if value is None:
        raise DataError(f"{where}: answer ({key!r}) is missing (null)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: answer ({key!r}) is not text or a number (got {type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity: no answer to check
        raise DataError(f"{where}: answer ({key!r}) is {value!r}, not a number an answer can be checked against")
    if isinstance(value, float):
        value = str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    _check_unicode(text, where=where, what=f"answer ({key!r})")
    if not text.strip():
        raise DataError(f"{where}: answer is empty")
    answer = final_answer(text)
    if not answer:
        raise DataError(f"{where}: answer is empty after reducing {text[-40:]!r} to its final answer")
    return answer


def _check_unicode(text: str, *, where: str, what: str) -> None:
    """Refuse text with a lone surrogate (JSON's `"\\ud83d"` without its pair): it passes every other check
    here, then fails in `datasets.Dataset.from_dict` (UTF-8 cannot encode it) with no file or row.

    >>> _check_unicode("1 + \\ud83d", where="a.jsonl row 3", what="problem")
    Traceback (most recent call last):
    ...
    tapo.data.datasets.DataError: a.jsonl row 3: problem is not valid Unicode (a lone surrogate, U+D83D, at character 5)
    """
    at = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if at is not None:
        raise DataError(f"{where}: {what} is not valid Unicode (a lone surrogate, U+{ord(text[at]):04X}, "
                        f"at character {at + 1})")


def _pick_key(row: dict, key: str | None, defaults: tuple[str, ...], where: str, *, what: str) -> str:
    has = ", ".join(map(str, row)) or "no fields"
    if key is not None:
        if key not in row:
            raise DataError(f"{where}: missing key {key!r} (has: {has})")
        return key
    for k in defaults:
        if k in row:
            return k
    raise DataError(f"{where}: missing key {defaults[0]!r} for the {what} (tried: {', '.join(defaults)}; has: {has})")


def _without_bom_keys(row: dict) -> dict:
    """The row with a byte-order mark dropped from its keys: a CSV saved with a BOM and converted to
    parquet or JSON names its first column "\\ufeffproblem", which would read as a missing 'problem'."""
    if not any(isinstance(k, str) and k.startswith("\ufeff") for k in row):
        return row
    return {k.lstrip("\ufeff") if isinstance(k, str) else k: v for k, v in row.items()}


def _row_id(row: dict, stem: str, row_no: int, *, where: str) -> str:
    for k in ID_KEYS:
        value = row.get(k)
        if value is not None and str(value).strip():
            _check_unicode(str(value), where=where, what=f"id ({k!r})")
            return str(value).strip()
    return f"{stem}-{row_no}"


def _validate_gold() -> Callable[..., None] | None:
    """`tapo.rewards.validate_gold` when that module provides it, else None."""
    try:
        rewards = importlib.import_module("tapo.rewards")
    except ModuleNotFoundError as e:
        if e.name in ("tapo.rewards", "tapo"):
            return None
        raise
    return getattr(rewards, "validate_gold", None)
