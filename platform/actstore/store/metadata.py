"""The store's root metadata: a pydantic model stored as the root group's ``actstore``
attribute, parsed with an explicit format-version check first.

Versions: 1, the first format; 2 adds the tokenizer inside the store (``tokenizer.file``,
``tokenizer/tokenizer.json``); 3 stores codes and indexes in a compact layout (``store/codes.py``,
``index/layout.py``), records where each SAE's files are (``saes[].origin``, ``revision``) and
keeps a copy of small local ones inside the store (``saes[].file``, ``saes/<name>/``). Older
stores are still read (their tokenizer and SAEs are loaded from the recorded sources) and
``actstore upgrade`` turns them into version 3.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actstore.errors import UnsupportedFormatError

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "ChatTemplateInfo",
    "IngestSummary",
    "RootMetadata",
    "SaeInfo",
    "SiteInfo",
    "StageInfo",
    "TokenizerInfo",
    "parse_root_metadata",
]

FORMAT_NAME: Literal["actstore"] = "actstore"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
ATTRIBUTE = "actstore"


class _Meta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatTemplateInfo(_Meta):
    """The chat template that rendered the store's chat records (``corpus.chat_template``)."""

    file: str = Field(description="Path of the template's Jinja source inside the store (tokenizer/chat_template.jinja).")
    sha256: str = Field(description="SHA-256 (hex) of that file's bytes.")
    add_generation_prompt: bool = Field(description="Whether each record ended with the template's generation prompt.")
    dropped_bos: bool = Field(description="Whether the template writes the BOS token itself and ingestion dropped it "
                              "from the front of each record (every context already starts with BOS).")


class TokenizerInfo(_Meta):
    """Which tokenizer made the token ids, and its special tokens."""

    source: dict[str, Any] = Field(description="The tokenizer source as configured (HFSource).")
    name_or_path: str = Field(description="The configured Hub id, folder, GGUF file or package.")
    vocab_size: int = Field(description="Number of token ids, added tokens included.")
    bos_token_id: int = Field(description="Id placed at position 0 of every context.")
    eos_token_id: int | None = Field(description="Id of the document separator, if any.")
    pad_token_id: int = Field(description="Id stored at padded positions.")
    file: str | None = Field(default=None, description="Path of the tokenizer's tokenizer.json inside the store "
                             "(format v2: tokenizer/tokenizer.json); None in format v1 stores.")
    sha256: str | None = Field(default=None, description="SHA-256 (hex) of the stored tokenizer.json.")
    special_tokens: dict[str, str] = Field(default_factory=dict, description="Special tokens by role "
                                           "(bos_token, eos_token, pad_token, unk_token) as text.")
    clean_up_spaces: bool = Field(default=False, description="Whether decoding removes spaces before punctuation "
                                  "(transformers' clean_up_tokenization, as the ingesting tokenizer applied it).")
    special_ids: list[int] = Field(default_factory=list, description="Ids of the tokenizer's special tokens other than "
                                   "unk (tokenizer.json added_tokens with special: true): inside a document they are "
                                   "flagged special (chat-template markers). Empty in stores written before.")
    chat_template: ChatTemplateInfo | None = Field(default=None, description="The chat template of the store's chat "
                                                   "records; None when the corpus had none.")


class SiteInfo(_Meta):
    """A captured activation site."""

    name: str = Field(description="TransformerLens-style name, e.g. blocks.12.hook_resid_post.")
    d: int = Field(description="Width of the site's vectors.")
    dtype: str = Field(description="Logical dtype of stored activations.")
    stored: bool = Field(description="Whether activations of this site are stored.")
    compression: Literal["none", "zstd", "shuffle-zstd"] = Field(
        default="none", description="Codec chain of the stored activations (schemas/STORE.md)."
    )
    stage: str = Field(default="extract", description="Manifest stage whose units commit this site's activations and "
                       "statistics: extract, or extract-<n> for a site added to an existing store by a later extraction.")


class SaeInfo(_Meta):
    """An SAE whose codes the store holds."""

    name: str
    site: str = Field(description="Site the SAE reads.")
    architecture: Literal["jumprelu", "topk", "relu"]
    d_in: int
    d_sae: int
    k: int | None = Field(default=None, description="K of a TopK SAE.")
    code_cap: int = Field(description="Latents kept per token (the width of the code arrays).")
    value_dtype: str = Field(description="Logical dtype of stored code values.")
    source: str = Field(description="Where the SAE was loaded from: an absolute local path (origin local) or a Hub "
                        "path owner/repo/folder (origin hub); in stores before version 3, the path as configured.")
    sha256: str = Field(description="Content hash of the SAE's parameter file(s): SHA-256 over the bytes of params.npz, "
                        "or of cfg.json then sae_weights.safetensors.")
    origin: Literal["local", "hub"] | None = Field(default=None, description="Whether source is a local path or a Hub "
                                                  "path; None in stores before version 3.")
    revision: str | None = Field(default=None, description="Hub revision of a Hub SAE, as configured (None: the "
                                 "default branch).")
    file: str | None = Field(default=None, description="Folder inside the store holding a copy of the SAE's files under "
                             "their own names (saes/<name>; local SAEs of at most 256 MiB, version 3); None: not copied, "
                             "load it from source.")
    input_dtype: str | None = Field(default=None, description="Codes are the encoder (in float32) applied to the site's "
                                    "activations cast to this dtype, the site's storage dtype: encoding the stored "
                                    "activations reproduces them bit for bit. None in stores written before this rule.")
    input_scale: float = Field(default=1.0, description="Activations are multiplied by this before encoding.")
    weights_dtype: str = Field(default="float32", description="Codes are the float32 encoder of the SAE's parameters "
                               "rounded to this dtype (float32: as stored in its files; bfloat16: rounded to nearest even).")
    stage: str = Field(default="extract", description="Manifest stage whose units commit this SAE's codes and statistics: "
                       "extract, extract-<n> (added with new sites by a later extraction) or encode-<name> (added later from "
                       "stored activations).")


class StageInfo(_Meta):
    """A stage of work done unit by unit (tokens, extract, ...)."""

    units_total: int
    complete: bool = Field(default=False, description="Set by the stage's finalize step.")
    finalized_at: str | None = None


class IngestSummary(_Meta):
    """What ingestion read, kept and skipped."""

    n_files: int
    n_documents: int = Field(description="Documents stored (skipped ones not counted).")
    n_tokens: int = Field(description="Document tokens stored (BOS, separators and padding not counted).")
    skipped_empty: int = Field(description="Documents skipped because they produced no tokens.")
    repaired_utf8: int = Field(description="Documents whose invalid UTF-8 was replaced (encoding_errors=replace).")
    stripped_bom: int = Field(default=0, description="Files that began with a UTF-8 byte-order mark, which was dropped.")
    truncated_by_cap: bool = Field(description="Whether max_tokens cut the corpus short.")
    chat_records: int = Field(default=0, description="Chat records rendered through the chat template (read before a "
                              "max_tokens cap; the documents table's format column marks the stored ones).")


class RootMetadata(_Meta):
    """Everything a reader needs to interpret the arrays below the root group."""

    format: Literal["actstore"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    actstore_version: str
    created: str = Field(description="ISO 8601 UTC time the store was created.")
    tokenizer: TokenizerInfo
    ctx_len: int
    contexts_per_unit: int
    n_ctx: int = Field(description="Contexts in the store (length of the token axis).")
    n_units: int = Field(description="ceil(n_ctx / contexts_per_unit).")
    packing: Literal["pack", "document"]
    separator: Literal["eos", "none"]
    ingest: IngestSummary
    model: dict[str, Any] | None = Field(default=None, description="Model source and dtype, once extracted.")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Further models over the same tokens, by tag (their sites are "
        "<tag>.<site>), each described like `model`."
    )
    sites: list[SiteInfo] = Field(default_factory=list)
    saes: list[SaeInfo] = Field(default_factory=list)
    stages: dict[str, StageInfo] = Field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Job configs by kind, with secrets redacted."
    )

    def with_changes(self, **changes: Any) -> RootMetadata:
        """A validated copy with fields replaced."""
        return RootMetadata.model_validate({**self.model_dump(), **changes})


def parse_root_metadata(attrs: dict[str, Any], url: str) -> RootMetadata:
    """Parse root attributes, refusing unknown formats before looking at any other field."""
    raw = attrs.get(ATTRIBUTE)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise UnsupportedFormatError(f"{url!r} is a Zarr group but not an actstore store")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise UnsupportedFormatError(
            f"store {url!r} has format version {version!r}; this actstore reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Upgrade actstore (or re-create the store)."
        )
    return RootMetadata.model_validate(raw)
