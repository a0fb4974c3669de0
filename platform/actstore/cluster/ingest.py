"""The ingestion job on Ray: stage files on tokenizer actors, plan, pack units, finalize.

Everything the cluster runs is a plain function of :mod:`actstore.corpus`; this module only
places it. The result does not depend on the number of workers: documents are ordered by
sorted file URL and row, and the packing plan is computed once, on the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from tqdm.auto import tqdm

from actstore._version import __version__
from actstore.cluster.preflight import preflight
from actstore.cluster.runtime import cluster_cpus, ensure_ray, run_on_pool, unwrapped_errors
from actstore.cluster.settings import redacted_config, settings_differences
from actstore.config import IngestConfig
from actstore.corpus.chat import chat_template_source
from actstore.corpus.ingest import build_plan, pack_unit, write_documents_part
from actstore.corpus.packing import PackPlan
from actstore.corpus.sources import SourceFile, expand_sources
from actstore.corpus.staging import FileSummary, clear_staging, stage_file
from actstore.corpus.tokenize import load_tokenizer, tokenizer_info, tokenizer_json
from actstore.errors import CorpusError, StoreMismatchError
from actstore.store._fs import Location, SideFiles
from actstore.store.layout import TOKEN_ARRAYS, UnitGrid, create_unit_array, token_array
from actstore.store.metadata import (
    ChatTemplateInfo,
    IngestSummary,
    RootMetadata,
    StageInfo,
    TokenizerInfo,
)
from actstore.store.store import TOKENS_STAGE, Store, utc_now
from actstore.store.tokenizer import (
    CHAT_TEMPLATE_KEY,
    tokenizer_sha256,
    write_chat_template,
    write_tokenizer,
)

__all__ = ["open_existing", "run_ingest"]

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=1)
class _Stager:
    """Holds one tokenizer and tokenizes whole files into staging."""

    def __init__(self, tokenizer: Any, config: IngestConfig, location: Location) -> None:
        self.tokenizer, self.config, self.location = tokenizer, config, location

    def stage(self, job: tuple[int, SourceFile]) -> FileSummary:
        index, source = job
        return stage_file(index, source, self.config.corpus, self.tokenizer, self.location,
                          limit=self.config.context.max_tokens)


@ray.remote(num_cpus=1)
def _pack(location: Location, plan: PackPlan, unit: int) -> int:
    return pack_unit(Store.open(location.url, storage_options=location.storage_options, mode="r+", probe=False), plan, unit)


def run_ingest(config: IngestConfig, *, workers: int | None = None, progress: bool = False) -> Store:
    """Ingest the configured corpus into the configured store and return the store.

    Validates paths, credentials and the tokenizer before any work; resumes an interrupted
    ingestion of the same settings; refuses a store made with different settings.
    """
    location = Location(config.store.url, dict(config.store.storage_options))
    preflight(config, location)
    sources = expand_sources(config.corpus.paths, fmt=config.corpus.format, storage_options=config.corpus.storage_options)
    existing = open_existing(location, config)
    if existing is not None and existing.meta.stages[TOKENS_STAGE].complete:
        logger.info("%s: tokens already ingested; nothing to do", location.url)
        return existing
    tokenizer = load_tokenizer(config.tokenizer)
    tok = tokenizer_info(tokenizer, config.tokenizer)
    template = chat_template_source(tokenizer) if config.corpus.chat_template else None  # refused here, before any work
    if template is not None:
        tok = tok.model_copy(update={"chat_template": ChatTemplateInfo(
            file=CHAT_TEMPLATE_KEY, sha256=tokenizer_sha256(template),
            add_generation_prompt=config.corpus.add_generation_prompt, dropped_bos="bos_token" in template)})
    ensure_ray(config.ray)
    with unwrapped_errors(), _staging_removed_on_failure(location):
        summaries = _stage_all(sources, tokenizer, config, location, workers, progress)
        plan, truncated = build_plan(location, summaries, config.context, tok)
        if existing is None and template is not None:
            write_chat_template(SideFiles(location), template)  # before the metadata that names it
        store = existing or _create_store(location, config, tok, tokenizer_json(tokenizer), plan, summaries, truncated)
        if store.meta.n_ctx != plan.n_ctx:
            raise StoreMismatchError(
                f"{location.url}: the corpus now packs into {plan.n_ctx} contexts, the store holds "
                f"{store.meta.n_ctx}; the corpus changed since this store was made. Use a new store URL."
            )
        _pack_all(store, plan, progress)
        _write_documents(location, summaries, plan)
    clear_staging(location)
    store.update_meta(stages={**store.meta.stages, TOKENS_STAGE: StageInfo(
        units_total=store.meta.n_units, complete=True, finalized_at=utc_now())})
    logger.info("%s: ingested %d documents, %d tokens", location.url, store.meta.ingest.n_documents, store.meta.ingest.n_tokens)
    return store


@contextlib.contextmanager
def _staging_removed_on_failure(location: Location) -> Iterator[None]:
    """A failed attempt removes the staging it wrote: every attempt re-stages all files anyway,
    and a store URL holding only ``_staging/`` would look like a half-written store."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a failed cleanup
            clear_staging(location)
        raise


def open_existing(location: Location, config: IngestConfig) -> Store | None:
    """The store at ``location`` if there is one, refusing it when its ingest settings differ."""
    if not Store.exists(location):
        return None
    store = Store.open(location.url, storage_options=location.storage_options, mode="r+")
    differences = settings_differences(_with_defaults(store.meta.configs.get("ingest", {})), redacted_config(config),
                                       kind="ingest")
    if differences:
        raise StoreMismatchError(
            f"the store at {location.url!r} was ingested with different settings: "
            + "; ".join(differences) + ". Use a new store URL, or the original settings to resume."
        )
    return store


def _with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded ingest config with the fields added since it was written at their defaults (a
    default keeps the old behaviour), so that a store made before a new option is not refused."""
    try:
        return redacted_config(IngestConfig.model_validate(recorded))
    except ValueError:  # a field since removed or changed: compare as recorded
        return recorded


def _stage_all(sources: list[SourceFile], tokenizer: Any, config: IngestConfig, location: Location,
               workers: int | None, progress: bool) -> list[FileSummary]:
    n = max(1, min(workers or cluster_cpus(), len(sources)))
    tokenizer_ref = ray.put(tokenizer)
    actors = [_Stager.remote(tokenizer_ref, config, location) for _ in range(n)]  # type: ignore[attr-defined]
    bar = tqdm(total=len(sources), desc="tokenize", unit="file", disable=not progress)
    done: dict[int, FileSummary] = {}

    def finished(summary: FileSummary) -> None:
        done[summary.index] = summary
        bar.update(1)

    try:
        summaries = list(run_on_pool(actors, "stage", _until_cap(sources, done, config.context.max_tokens), on_result=finished))
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
    return sorted(summaries, key=lambda s: s.index)


def _until_cap(sources: list[SourceFile], done: dict[int, FileSummary], cap: int | None) -> Iterator[tuple[int, SourceFile]]:
    """Files to stage, in order, until the files finished so far from the first one hold ``cap``
    tokens: the cap keeps a prefix of the corpus, so no later file can contribute."""
    for job in enumerate(sources):
        prefix = 0
        for i in range(job[0]):
            if i not in done:
                break
            prefix += done[i].n_tokens
        if cap is not None and prefix >= cap:
            logger.info("max_tokens (%d) reached after %d of %d files; the rest are not read", cap, job[0], len(sources))
            return
        yield job


def _create_store(location: Location, config: IngestConfig, tok: TokenizerInfo, tokenizer_text: str, plan: PackPlan,
                  summaries: list[FileSummary], truncated: bool) -> Store:
    grid = UnitGrid(plan.n_ctx, config.context.ctx_len, config.context.contexts_per_unit)
    if grid.n_ctx == 0:
        raise CorpusError(f"the corpus {config.corpus.paths} holds no tokens (all {sum(s.skipped_empty for s in summaries)} documents were empty)")
    meta = RootMetadata(
        actstore_version=__version__,
        created=utc_now(),
        tokenizer=tok,
        ctx_len=grid.ctx_len,
        contexts_per_unit=grid.contexts_per_unit,
        n_ctx=grid.n_ctx,
        n_units=grid.n_units,
        packing=config.context.packing,
        separator=config.context.separator,
        ingest=IngestSummary(
            n_files=len(summaries),
            n_documents=int(np.count_nonzero(plan.doc_len)),
            n_tokens=int(plan.doc_len.sum()),
            skipped_empty=sum(s.skipped_empty for s in summaries),
            repaired_utf8=sum(s.repaired_utf8 for s in summaries),
            stripped_bom=sum(s.stripped_bom for s in summaries),
            truncated_by_cap=truncated,
            chat_records=sum(s.chat_records for s in summaries),
        ),
        stages={TOKENS_STAGE: StageInfo(units_total=grid.n_units)},
        configs={"ingest": redacted_config(config)},
    )
    write_tokenizer(SideFiles(location), tokenizer_text)  # before the metadata that names it
    store = Store.create(location, meta)
    for name, (dtype, fill) in TOKEN_ARRAYS.items():
        create_unit_array(store.group, token_array(name), grid, (), dtype, fill_value=fill,
                          attributes={"axes": ["ctx", "pos"]})
    return store


def _pack_all(store: Store, plan: PackPlan, progress: bool) -> None:
    todo = sorted(set(range(store.meta.n_units)) - set(store.units_done(TOKENS_STAGE)))
    plan_ref = ray.put(plan)
    refs = [_pack.remote(store.location, plan_ref, u) for u in todo]  # type: ignore[call-arg]
    with tqdm(total=len(todo), desc="pack", unit="unit", disable=not progress) as bar:
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            ray.get(ready)
            bar.update(1)


def _write_documents(location: Location, summaries: list[FileSummary], plan: PackPlan) -> None:
    first = 0
    for summary in summaries:
        mask = plan.doc_file == summary.index
        n_stored = plan.doc_len[mask]
        if len(n_stored) or summary.n_documents:
            write_documents_part(location, summary, first, n_stored)
        first += len(n_stored)
