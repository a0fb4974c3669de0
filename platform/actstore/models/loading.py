"""Loading causal LMs from an HF id, a local folder or a GGUF file, in a chosen dtype and device."""

from __future__ import annotations

import logging
from typing import Any

from actstore._hf import resolve_source
from actstore.config import HFSource
from actstore.errors import ConfigError

__all__ = ["load_model", "load_model_config", "resolve_attn_implementation", "torch_dtype"]

logger = logging.getLogger(__name__)


def torch_dtype(name: str) -> Any:
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ConfigError(f"unsupported model dtype {name!r}; use float32, bfloat16 or float16") from None


def load_model_config(source: HFSource) -> Any:
    """The model's transformers config, without loading weights (for validation on the driver)."""
    from transformers import AutoConfig

    resolved = resolve_source(source)
    try:
        return AutoConfig.from_pretrained(resolved.path_or_id, **resolved.kwargs())
    except Exception as exc:
        raise ConfigError(f"cannot load the config of model {resolved.name!r}: {type(exc).__name__}: {exc}") from None


def resolve_attn_implementation(model_type: str, configured: str | None) -> str | None:
    """Gemma 2 needs eager attention: SDPA ignores its attention-logit soft-capping."""
    if model_type == "gemma2":
        if configured not in (None, "eager"):
            raise ConfigError(f"Gemma 2 needs attn_implementation 'eager' (soft-capping), not {configured!r}")
        return "eager"
    return configured


def load_model(source: HFSource, *, dtype: str, device: str, attn_implementation: str | None = None) -> Any:
    """A causal LM in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_source(source)
    config = load_model_config(source)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), **resolved.kwargs()}
    attn = resolve_attn_implementation(config.model_type, attn_implementation)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path_or_id, **kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot load model {resolved.name!r}: {type(exc).__name__}: {exc}") from None
    logger.info("loaded %s (%s) on %s", resolved.name, dtype, device)
    return model.to(device).eval()  # type: ignore[arg-type]
