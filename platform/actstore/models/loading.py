"""Loading causal LMs from an HF id, a local folder or a GGUF file, in a chosen dtype and device.

Extraction needs the blocks up to its deepest site and nothing after them, so a worker loads a
truncated base model (the config cut to ``layers`` blocks, no LM head) straight onto its device:
transformers reads from the safetensors shards only the tensors of modules that exist, so the
later blocks are never read, and no full copy is made in host memory first.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from actstore._hf import resolve_source
from actstore.config import HFSource
from actstore.errors import ConfigError
from actstore.models.shapes import shipped_config

__all__ = ["load_model", "load_model_config", "planned_weights_bytes", "resolve_attn_implementation", "spread_map",
           "torch_dtype", "truncated_config", "weights_bytes"]

logger = logging.getLogger(__name__)


def torch_dtype(name: str) -> Any:
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ConfigError(f"unsupported model dtype {name!r}; use float32, bfloat16 or float16") from None


def load_model_config(source: HFSource, *, shipped: bool = False) -> Any:
    """The model's transformers config, without loading weights (for validation on the driver).
    With ``shipped``, a model whose shapes ship with actstore (:mod:`actstore.models.shapes`:
    Gemma 2, SmolLM2-135M) is answered from them, without the Hub: for planning and validation only."""
    from transformers import AutoConfig

    known = shipped_config(source) if shipped else None
    if known is not None:
        return known
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


def truncated_config(config: Any, layers: int) -> Any:
    """A copy of a model config with only the first ``layers`` decoder blocks."""
    total = int(config.num_hidden_layers)
    if not 1 <= layers <= total:
        raise ConfigError(f"the model has {total} blocks; cannot keep {layers}")
    cut = copy.deepcopy(config)
    cut.num_hidden_layers = layers
    if isinstance(getattr(cut, "layer_types", None), list):  # per-block attention kinds (Gemma 2: sliding/full)
        cut.layer_types = cut.layer_types[:layers]
    return cut


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def weights_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers (what a worker holds on its device)."""
    tensors = [*model.parameters(), *model.buffers()]
    unique = {id(t): t.numel() * t.element_size() for t in tensors}  # a tied weight is one Parameter: counted once
    return sum(unique.values())


def planned_weights_bytes(source: HFSource, *, dtype: str, layers: int) -> int:
    """Bytes of weights a worker will hold for the first ``layers`` blocks, from the config alone
    (the model is built on the meta device: no weights are read or allocated; shipped shapes serve
    known models without the Hub)."""
    import torch
    from transformers import AutoModel

    config = truncated_config(load_model_config(source, shipped=True), layers)
    with torch.device("meta"), _quiet_transformers():
        model = AutoModel.from_config(config, dtype=torch_dtype(dtype))
    return weights_bytes(model)


def spread_map(blocks: int, devices: Sequence[str]) -> dict[str, str]:
    """A device map of a truncated base model over ``devices``: contiguous runs of blocks, as
    even as they divide (the first devices take one more), the embedding on the first device
    and the final norm on the last. Keys are module names of the base model."""
    if not devices:
        raise ConfigError("no devices to spread the model over")
    n = len(devices)
    placement = {"embed_tokens": devices[0], "rotary_emb": devices[0], "norm": devices[-1]}
    for block in range(blocks):
        placement[f"layers.{block}"] = devices[min(n - 1, block * n // blocks)]
    return placement


def load_model(source: HFSource, *, dtype: str, device: str, attn_implementation: str | None = None,
               layers: int | None = None, devices: Sequence[str] | None = None) -> Any:
    """A model in eval mode on ``device``: the causal LM, or with ``layers`` its base model (no
    LM head) with only the first ``layers`` blocks, loaded straight onto ``device``. With
    ``devices`` (and ``layers``), the blocks are spread over those devices (:func:`spread_map`;
    transformers moves activations between them)."""
    from transformers import AutoModel, AutoModelForCausalLM

    resolved = resolve_source(source)
    config = load_model_config(source)
    placement: Any = {"": device} if not devices or layers is None else spread_map(layers, devices)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "device_map": placement, **resolved.kwargs()}
    attn = resolve_attn_implementation(config.model_type, attn_implementation)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    try:
        if layers is None:
            model = AutoModelForCausalLM.from_pretrained(resolved.path_or_id, **kwargs)
        else:  # the later blocks' tensors are "unexpected" by design: no load report for them
            with _quiet_transformers():
                model = AutoModel.from_pretrained(resolved.path_or_id, config=truncated_config(config, layers), **kwargs)
    except Exception as exc:
        raise ConfigError(f"cannot load model {resolved.name!r}: {type(exc).__name__}: {exc}") from None
    kept = "all" if layers is None else f"{layers} of {config.num_hidden_layers}"
    logger.info("loaded %s (%s, %s blocks) on %s: %.2f GB of weights", resolved.name, dtype, kept,
                ", ".join(sorted(set(placement.values()))), weights_bytes(model) / 1e9)
    return model.eval()
