"""Load a tokenizer from an HF id, local folder or GGUF file (through transformers, for
ingestion), and describe it for the store: its special tokens and its ``tokenizer.json``.

Readers do not come here: they decode with the copy inside the store
(:mod:`actstore.store.tokenizer`); :func:`source_tokenizer` is their fallback for format v1
stores, which hold no copy.
"""

from __future__ import annotations

import logging
from typing import Any

from actstore._hf import resolve_source
from actstore.config import HFSource
from actstore.errors import TokenizerError
from actstore.store.metadata import TokenizerInfo
from actstore.store.tokenizer import TOKENIZER_KEY, StoredTokenizer, tokenizer_sha256

__all__ = ["load_tokenizer", "source_tokenizer", "special_token_ids", "tokenizer_info", "tokenizer_json"]

logger = logging.getLogger(__name__)

SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
# text whose decoding shows whether a tokenizer removes spaces before punctuation
_CLEAN_UP_PROBE = "a . b , c ! d ? e 's"


def load_tokenizer(source: HFSource) -> Any:
    """A transformers fast tokenizer; unknown ids, unreadable files and tokenizers without a
    ``tokenizers`` backend (the store keeps its ``tokenizer.json``) raise :class:`TokenizerError`."""
    from transformers import AutoTokenizer

    resolved = resolve_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, **resolved.kwargs())
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise TokenizerError(
            f"cannot load tokenizer {resolved.name!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Give a Hub id reachable from this machine, a local folder with tokenizer files, or a GGUF file."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(
            f"tokenizer {resolved.name!r} ({type(tokenizer).__name__}) has no `tokenizers` backend; actstore "
            "stores the tokenizer.json of a fast tokenizer. Give a folder or Hub id with a tokenizer.json."
        )
    return tokenizer


def tokenizer_json(tokenizer: Any) -> str:
    """The ``tokenizer.json`` text of a transformers fast tokenizer."""
    return str(tokenizer.backend_tokenizer.to_str())


def tokenizer_info(tokenizer: Any, source: HFSource) -> TokenizerInfo:
    """Special-token ids the packer needs, and what a reader needs to decode from the store's
    copy (:data:`~actstore.store.tokenizer.TOKENIZER_KEY`, which ingestion writes). A BOS token
    is required: every context starts with it."""
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
        file=TOKENIZER_KEY,
        sha256=tokenizer_sha256(tokenizer_json(tokenizer)),
        special_tokens={role: str(getattr(tokenizer, role)) for role in SPECIAL_ROLES if getattr(tokenizer, role, None)},
        clean_up_spaces=_cleans_up_spaces(tokenizer),
        special_ids=special_token_ids(tokenizer),
    )


def special_token_ids(tokenizer: Any) -> list[int]:
    """Ids flagged special inside documents: the tokenizer's special tokens (chat-template markers,
    BOS, EOS...: :meth:`StoredTokenizer.special_ids`) except the unknown token, which stands for
    text the vocabulary cannot spell."""
    ids = StoredTokenizer(tokenizer.backend_tokenizer).special_ids()
    return [i for i in ids if i != tokenizer.unk_token_id]


def _cleans_up_spaces(tokenizer: Any) -> bool:
    """Whether transformers' decode removes spaces before punctuation for this tokenizer. Found
    by decoding a probe both ways: transformers' own rule depends on its version and the model."""
    ids = tokenizer.encode(_CLEAN_UP_PROBE, add_special_tokens=False)
    return bool(tokenizer.decode(ids) != tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=False))


def source_tokenizer(source: HFSource) -> StoredTokenizer:
    """The tokenizer of a store without a stored copy (format v1), loaded from its recorded
    source through transformers (slow to import; needs the source on this machine)."""
    tokenizer = load_tokenizer(source)
    return StoredTokenizer(tokenizer.backend_tokenizer, clean_up_spaces=_cleans_up_spaces(tokenizer))
