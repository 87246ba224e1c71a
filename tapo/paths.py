"""Whether a model or data name is a local path; below `tapo.models` and the dry run (`tapo.validate`)."""

from __future__ import annotations

from pathlib import Path


def looks_local(name: str) -> bool:
    """Whether a model or data name is a local path (rather than a hub id).

    An existing path, one starting with `.`, `/` or `~`, a data file name, a path of three or more
    parts, or `DIR/name` where DIR is an existing local folder is local; anything else (`owner/name`,
    a bare name) is a hub id.

    >>> looks_local("runs/x/model"), looks_local("./m"), looks_local("Qwen/Qwen3-8B"), looks_local("data.jsonl")
    (True, True, False, True)
    """
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        return True
    if path.suffix.lower() in (".jsonl", ".json", ".parquet"):
        return True
    return name.count("/") >= 2 or (name.count("/") == 1 and path.parent.is_dir())
