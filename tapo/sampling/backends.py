"""Choosing and loading a backend for a model name: vLLM on a CUDA GPU when it is installed, else transformers."""

from __future__ import annotations

from tapo.sampling.types import Sampler

BACKENDS = ("auto", "hf", "vllm")
DTYPES = ("bfloat16", "float16", "float32")  # the usual --dtype values (any floating torch dtype name works)


def resolve_backend(backend: str = "auto") -> str:
    """"hf" or "vllm": `auto` picks vLLM when it is importable and a CUDA GPU is present.

    An explicit `vllm` without vLLM installed is refused here, before a model is loaded or an
    output directory is touched, rather than as an ImportError deep inside the sampler.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "hf":
        return backend
    if backend == "vllm":
        if not _vllm_installed():
            raise ValueError("backend vllm: vLLM is not installed (pip install vllm, on a CUDA GPU); use backend hf")
        return backend
    import torch

    return "vllm" if _vllm_installed() and torch.cuda.is_available() else "hf"


def _vllm_installed() -> bool:
    import importlib.util
    import sys

    if "vllm" in sys.modules:  # imported already (or a stand-in a test put there)
        return True
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def check_dtype(dtype: str | None, *, backend: str) -> None:
    """Refuse a dtype name that is no floating-point torch dtype, before any model is loaded.

    `load_policy` looks the name up on `torch`, so a typo ("float33") used to surface as an
    AttributeError from inside torch, and a name that is no dtype ("Size", "int8") got further.
    """
    import torch

    if dtype is None or (backend == "vllm" and dtype == "auto"):
        return
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return
    usual = ", ".join(DTYPES + (("auto",) if backend == "vllm" else ()))
    raise ValueError(f"unknown dtype {dtype!r}: not a floating-point torch dtype; use one of {usual}")


def make_sampler(
    model_name: str, *, backend: str = "auto", dtype: str | None = None, seed: int = 0, **vllm_kwargs
) -> Sampler:
    """A sampler for a hub id, a local folder, or a built-in name (`tapo.models.load_policy`).

    `dtype` None picks bfloat16 on a GPU and float32 on a CPU (and vLLM's own choice under vLLM).
    """
    import torch

    from tapo.models import BUILTIN_PREFIX, builtin_folder, load_policy, load_tokenizer
    from tapo.sampling.hf import HFSampler

    chosen = resolve_backend(backend)
    check_dtype(dtype, backend=chosen)
    try:
        if chosen == "vllm":
            from tapo.sampling.vllm import VLLMSampler

            path = model_name
            if model_name.startswith(BUILTIN_PREFIX):
                if model_name == "builtin:tiny":
                    raise ValueError("builtin:tiny has no folder for vLLM; use --backend hf")
                path = str(builtin_folder(model_name))
            return VLLMSampler(path, load_tokenizer(model_name), dtype=dtype or "auto", seed=seed, **vllm_kwargs)
        cuda = torch.cuda.is_available()
        model, tokenizer = load_policy(model_name, dtype=dtype or ("bfloat16" if cuda else "float32"), seed=seed)
    except FileNotFoundError:
        raise  # "model folder not found: PATH" (tapo.models) already says what and where
    except OSError as error:  # not a folder, not on the Hub, or the Hub unreachable: transformers' long story
        raise ValueError(
            f"could not load model {model_name!r} (a local folder, a Hub id, or builtin:...): {error}"
        ) from error
    if cuda:
        model = model.to("cuda")
    return HFSampler(model, tokenizer)
