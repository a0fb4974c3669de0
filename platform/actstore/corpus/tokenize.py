"""Load a tokenizer from an HF id, local folder or GGUF file, and read its special tokens."""

from __future__ import annotations

import logging
from typing import Any

from actstore._hf import resolve_source
from actstore.config import HFSource
from actstore.errors import TokenizerError
from actstore.store.metadata import TokenizerInfo

__all__ = ["load_tokenizer", "tokenizer_info"]

logger = logging.getLogger(__name__)


def load_tokenizer(source: HFSource) -> Any:
    """A transformers tokenizer; unknown ids and unreadable files raise :class:`TokenizerError`."""
    from transformers import AutoTokenizer

    resolved = resolve_source(source)
    try:
        return AutoTokenizer.from_pretrained(resolved.path_or_id, **resolved.kwargs())
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise TokenizerError(
            f"cannot load tokenizer {resolved.name!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Give a Hub id reachable from this machine, a local folder with tokenizer files, or a GGUF file."
        ) from None


def tokenizer_info(tokenizer: Any, source: HFSource) -> TokenizerInfo:
    """Special-token ids the packer needs. A BOS token is required: every context starts with it."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise TokenizerError(
            f"tokenizer {tokenizer.name_or_path!r} has no BOS token; actstore starts every context with BOS"
        )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos if eos is not None else bos
    return TokenizerInfo(
        source=source.model_dump(exclude_none=True),
        name_or_path=source.package or source.gguf_file or str(source.id),
        vocab_size=len(tokenizer),
        bos_token_id=int(bos),
        eos_token_id=None if eos is None else int(eos),
        pad_token_id=int(pad),
    )
