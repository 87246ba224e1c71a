"""The built-in tiny test model: a 2-layer Qwen2 (hidden 64) and a byte-level BPE tokenizer trained on the
arithmetic task in well under a second; deterministic for a seed, no download. Also where built-in
models are cached.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def cache_dir() -> Path:
    """Where converted built-in models live: $TAPO_CACHE, else ~/.cache/tapo."""
    return Path(os.environ.get("TAPO_CACHE", Path.home() / ".cache" / "tapo"))


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
