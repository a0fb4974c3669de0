"""The tokenizer inside a store: ``tokenizer/tokenizer.json``, the Hugging Face ``tokenizers``
serialisation of the tokenizer that made the token ids, read back with the ``tokenizers``
library alone. A store copied away from the model's source (a gated Hub repo, an uninstalled
package) still decodes and encodes text, and readers never import transformers (seconds of
start-up for a CLI query).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actstore.errors import TokenizerError

if TYPE_CHECKING:
    import tokenizers

    from actstore.store._fs import SideFiles
    from actstore.store.metadata import TokenizerInfo

__all__ = ["CHAT_TEMPLATE_KEY", "TOKENIZER_KEY", "StoredTokenizer", "read_tokenizer", "tokenizer_difference",
           "tokenizer_sha256", "write_chat_template", "write_tokenizer"]

TOKENIZER_KEY = "tokenizer/tokenizer.json"
CHAT_TEMPLATE_KEY = "tokenizer/chat_template.jinja"


class StoredTokenizer:
    """Encode and decode exactly as the transformers fast tokenizer the store was ingested with
    (``encode(text, add_special_tokens=False)``, ``decode(ids)`` keeping special tokens).

    ``clean_up_spaces``: transformers' ``clean_up_tokenization`` after decoding (it removes
    spaces before punctuation); the store records whether the ingesting tokenizer applied it.
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, clean_up_spaces: bool = False) -> None:
        self.backend = backend
        self.clean_up_spaces = clean_up_spaces

    @classmethod
    def from_json(cls, text: str, *, clean_up_spaces: bool = False) -> StoredTokenizer:
        import tokenizers

        try:
            backend = tokenizers.Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"the stored tokenizer cannot be read: {exc}") from None
        return cls(backend, clean_up_spaces=clean_up_spaces)

    def __len__(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS unless ``add_special_tokens``)."""
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def special_ids(self) -> list[int]:
        """Ids of every token the tokenizer marks special: BOS/EOS/pad/unk and the rest of its
        added special tokens (chat-template markers such as ``<start_of_turn>``, ``<|im_start|>``,
        SmolLM2's ``<file_sep>``)."""
        return sorted(int(i) for i, token in self.backend.get_added_tokens_decoder().items() if token.special)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens included."""
        return self._clean(self.backend.decode(list(ids), skip_special_tokens=False))

    def batch_decode(self, sequences: Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` of each sequence (one call into the Rust library)."""
        texts = self.backend.decode_batch([list(s) for s in sequences], skip_special_tokens=False)
        return [self._clean(t) for t in texts]

    def _clean(self, text: str) -> str:
        if not self.clean_up_spaces:
            return text
        for before, after in _CLEAN_UP:
            text = text.replace(before, after)
        return text


# transformers' PreTrainedTokenizerBase.clean_up_tokenization, in its order
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def tokenizer_difference(a: str, b: str) -> str | None:
    """How two ``tokenizer.json`` texts differ in what token ids mean, in a few words (None: they
    do not): the model type, the vocabulary (id -> piece), the merge rules and the added tokens
    (id, text, special). Normalisation, pre-tokenisation and decoding settings are not compared:
    a second model reads stored ids, and these decide only how text becomes ids."""
    ja, jb = json.loads(a), json.loads(b)
    ma, mb = ja.get("model") or {}, jb.get("model") or {}
    if ma.get("type") != mb.get("type"):
        return f"tokenizer models {ma.get('type')!r} and {mb.get('type')!r}"
    va, vb = _pieces(ma), _pieces(mb)
    if va != vb:
        if len(va) != len(vb):
            return f"vocabularies of {len(va):,} and {len(vb):,} tokens"
        first = min(i for i in va if va[i] != vb.get(i))
        return f"token id {first} is {va[first]!r} in one and {vb.get(first)!r} in the other"
    ra, rb = _merges(ma), _merges(mb)
    if ra != rb:
        first = next((i for i, (x, y) in enumerate(zip(ra, rb, strict=False)) if x != y), min(len(ra), len(rb)))
        return f"merge rules differ from rule {first} on ({len(ra):,} and {len(rb):,} rules)"
    ta, tb = _added(ja), _added(jb)
    if ta != tb:
        token = min(ta ^ tb)
        return f"added tokens differ (id {token[0]}: {token[1]!r}, special={token[2]})"
    return None


def _pieces(model: dict[str, Any]) -> dict[int, str]:
    vocab = model.get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
        return {i: str(entry[0]) for i, entry in enumerate(vocab)}
    return {int(i): str(piece) for piece, i in vocab.items()}


def _merges(model: dict[str, Any]) -> list[tuple[str, ...]]:
    """BPE merge rules as pairs (tokenizers writes them as "a b" strings or, since 0.20, as lists)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]


def _added(data: dict[str, Any]) -> set[tuple[int, str, bool]]:
    return {(int(t["id"]), str(t["content"]), bool(t.get("special"))) for t in data.get("added_tokens") or []}


def tokenizer_sha256(text: str) -> str:
    """The SHA-256 (hex) of a ``tokenizer.json`` text, as the root metadata records it so that
    readers can tell a damaged or swapped file."""
    return hashlib.sha256(text.encode()).hexdigest()


def write_chat_template(files: SideFiles, text: str) -> None:
    """Store the Jinja source of the chat template that rendered the store's chat records at
    :data:`CHAT_TEMPLATE_KEY` (its SHA-256 goes into the metadata, :func:`tokenizer_sha256`)."""
    files.write_bytes(CHAT_TEMPLATE_KEY, text.encode())


def write_tokenizer(files: SideFiles, text: str) -> None:
    """Store a ``tokenizer.json`` text at :data:`TOKENIZER_KEY`."""
    files.write_bytes(TOKENIZER_KEY, text.encode())


def read_tokenizer(files: SideFiles, info: TokenizerInfo) -> StoredTokenizer:
    """The tokenizer stored with a store whose metadata names a file (format v2)."""
    if info.file is None:
        raise TokenizerError(f"the store at {files.location.url!r} holds no tokenizer file (format v1); "
                             "run `actstore upgrade STORE` to store one")
    try:
        text = files.read_bytes(info.file).decode()
    except FileNotFoundError:
        raise TokenizerError(f"the store at {files.location.url!r} lacks its tokenizer file {info.file!r}; "
                             "was it copied partly?") from None
    if info.sha256 is not None and tokenizer_sha256(text) != info.sha256:
        raise TokenizerError(f"the tokenizer file {info.file!r} of {files.location.url!r} does not match the "
                             f"SHA-256 in the store's metadata ({info.sha256[:12]}...)")
    return StoredTokenizer.from_json(text, clean_up_spaces=info.clean_up_spaces)
