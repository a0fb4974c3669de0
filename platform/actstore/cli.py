"""``actstore <verb>``: the command line. Thin: parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from actstore.cli_contrast import add_contrast_verb
from actstore.cli_live import add_live_verbs, add_sae_path_option, sae_paths
from actstore.errors import ActstoreError, ConfigError

__all__ = ["main", "run_id_of"]


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"


def _cmd_ingest(args: argparse.Namespace) -> int:
    from actstore.cluster.ingest import run_ingest
    from actstore.config import IngestConfig, load_config

    config = load_config(args.config, IngestConfig, **_overrides(args))
    store = run_ingest(config, workers=args.workers, progress=not args.quiet)
    return _print_info(store, as_json=False)


def _cmd_extract(args: argparse.Namespace) -> int:
    from actstore.cluster.extract import run_extract
    from actstore.config import ExtractConfig, load_config

    config = load_config(args.config, ExtractConfig, **_overrides(args))
    store = run_extract(config, progress=not args.quiet)
    return _print_info(store, as_json=False)


def _cmd_plan(args: argparse.Namespace) -> int:
    from actstore.config import ExtractConfig, load_config
    from actstore.extraction.estimate import estimate_run, model_flops_per_token
    from actstore.extraction.memory import worker_memory
    from actstore.extraction.plan import plan_extraction
    from actstore.models.loading import load_model_config, planned_weights_bytes, truncated_config

    config = load_config(args.config, ExtractConfig, **{"store.url": args.store})
    tokens = args.tokens or config.context.max_tokens
    if not tokens:
        raise ConfigError("say how many tokens to plan for: --tokens N (or context.max_tokens in the config)")
    plan, _ = plan_extraction(config, gpu_workers=args.device == "cuda", load=False)
    l0 = {name: float(v) for name, v in (item.split("=", 1) for item in args.l0)}
    blocks = plan.layers_needed
    model_config = load_model_config(config.model, shipped=True)
    weights = planned_weights_bytes(config.model, dtype=plan.model_dtype, layers=blocks)
    estimate = estimate_run(plan, tokens, l0=l0, doc_tokens=args.doc_tokens, weights_bytes=weights,
                            flops_per_token=model_flops_per_token(truncated_config(model_config, blocks), blocks, config.context.ctx_len),
                            worker=worker_memory(plan, model_config, weights, device_gb=args.device_memory_gb))
    print(json.dumps(estimate.as_dict(), indent=2) if args.json else estimate.render())
    return 0


def _cmd_run_id(args: argparse.Namespace) -> int:
    print(_run_id(args))
    return 0


def run_id_of(argv: Sequence[str]) -> str:
    """The run id of ``actstore extract ARGV`` (``CONFIG [--store URL] [--corpus GLOB]...``), as
    ``actstore run-id ARGV`` prints it: the same parser and overrides. Placeholder buckets raise
    :class:`ConfigError`."""
    return _run_id(_parser().parse_args(["run-id", *argv]))


def _run_id(args: argparse.Namespace) -> str:
    from actstore.cluster.preflight import refuse_placeholders
    from actstore.cluster.settings import redacted_config
    from actstore.config import ExtractConfig, load_config
    from actstore.store.runs import run_id

    config = load_config(args.config, ExtractConfig, **_overrides(args))
    refuse_placeholders(config)
    return run_id("extract", config.store.url, redacted_config(config))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config values given on the command line (``None``: keep the file's)."""
    return {"store.url": args.store, "corpus.paths": args.corpus,
            "context.max_tokens": getattr(args, "max_tokens", None),
            "workers.max_workers": getattr(args, "max_workers", None)}


def _cmd_info(args: argparse.Namespace) -> int:
    from actstore.api import open_store

    return _print_info(open_store(args.store), as_json=args.json)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from actstore.upgrade import upgrade_store

    result = upgrade_store(args.store)
    if result.from_version == result.to_version and not result.recorded:
        print(f"{result.url}: already format v{result.to_version}; nothing to do")
    elif result.from_version != result.to_version:
        print(f"{result.url}: upgraded from format v{result.from_version} to v{result.to_version}")
    for name in result.recorded:
        print(f"{result.url}: SAE {name!r} recorded where its files are here (copied into the store when small)")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _print_info(store: object, *, as_json: bool) -> int:
    info = store.info()  # type: ignore[attr-defined]
    if as_json:
        print(json.dumps(info.to_dict(), indent=1))
        return 0
    state = "complete" if info.complete else "in progress"
    print(f"store       {info.url}  (format v{info.format_version}, actstore {info.actstore_version}, created {info.created})")
    print(f"state       {state}: {info.units_done}/{info.units_total} units done ({info.stage})")
    for name, stage in info.stages.items():
        print(f"  stage {name:<8} {stage['units_done']}/{stage['units_total']} units{'  finalized ' + stage['finalized_at'] if stage['complete'] else ''}")
    print(f"tokens      {info.n_tokens:,} document tokens in {info.n_ctx:,} contexts x {info.ctx_len} ({info.n_token_slots:,} slots)")
    print(f"documents   {info.n_documents:,}")
    print(f"tokenizer   {info.tokenizer}")
    print(f"model       {info.model or '-'}")
    for tag, name in info.models.items():
        print(f"  model {tag:<6} {name} (sites {tag}.blocks...)")
    print(f"sites       {', '.join(info.sites) or '-'}")
    print(f"saes        {', '.join(info.saes) or '-'}")
    print(f"bytes       {_human_bytes(info.bytes)} ({info.bytes / max(info.n_tokens, 1):.2f} per document token)")
    return 0


def _latents(args: argparse.Namespace) -> Any:
    from actstore.api import open_store

    return open_store(args.store).sae(args.sae)


def _emit(frame: Any, args: argparse.Namespace, text: Any) -> int:
    """``--json``: records, one JSON document; otherwise the verb's readable text."""
    if args.json:
        print(json.dumps(frame.to_dicts(), indent=1))
    else:
        print(text() if callable(text) else text)
    return 0


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _cmd_index(args: argparse.Namespace) -> int:
    from actstore.api import open_store
    from actstore.cluster.index import keep_logits, run_index
    from actstore.index.build import BUCKET_NNZ

    saes = args.sae or [s.name for s in open_store(args.store).meta.saes]
    for sae in saes:
        plan = run_index(args.store, sae, bucket_nnz=args.bucket_nnz or BUCKET_NNZ, block=args.block, progress=not args.quiet)
        print(f"index {sae}: {plan.nnz:,} occurrences of {plan.d_sae:,} latents over {len(plan.units)} units, "
              f"{plan.n_buckets} buckets")
    if not args.no_logits:
        print(keep_logits(open_store(args.store), saes))
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from actstore.cluster.encode import run_encode
    from actstore.cluster.index import run_index

    store = run_encode(args.store, args.sae, name=args.name, site=args.site, code_cap=args.code_cap,
                       value_dtype=args.value_dtype, progress=not args.quiet)
    sae = store.meta.saes[-1] if args.name is None else next(s for s in store.meta.saes if s.name == args.name)
    if args.index:
        run_index(args.store, sae.name, progress=not args.quiet)
    return _print_info(store, as_json=False)


def _cmd_train(args: argparse.Namespace) -> int:
    from actstore.config import TrainConfig, load_config
    from actstore.training.trainer import train_sae

    config = load_config(args.config, TrainConfig, **{"store.url": args.store, "out": args.out, "max_tokens": args.max_tokens})
    result = train_sae(config, progress=not args.quiet)
    print(f"saved {result.path}: {result.steps} steps, {result.tokens:,} tokens, explained variance "
          f"{result.explained_variance:.4f}, L0 {result.l0:.1f}, dead latents {result.dead}, input scale {result.input_scale:.4g}")
    return 0


def _cmd_top(args: argparse.Namespace) -> int:
    from actstore.query.render import render_examples

    latents = _latents(args)
    if args.quantiles:
        frame = latents.quantile_examples(args.latent, bins=args.quantiles, per_bin=args.k, kind=args.kind, window=args.window,
                                          where=args.where)
        return _emit(frame, args, lambda: render_examples(frame, color=_color(), lead=("bin",)))
    frame = latents.top_k(args.latent, k=args.k, window=args.window, per_doc=args.per_doc or None, where=args.where)
    return _emit(frame, args, lambda: render_examples(frame, color=_color(), lead=("rank",)) + _logits_line(latents, args.latent))


def _logits_line(latents: Any, latent: int) -> str:
    """The latent's kept output logits as two lines, or nothing when none are kept."""
    from actstore.errors import LogitsNotFoundError

    try:
        frame = latents.logits(latent)
    except LogitsNotFoundError:
        return ""
    side = lambda s: "  ".join(repr(t) for t in frame.filter(frame["side"] == s)["token"])  # noqa: E731
    return f"\noutput logits  top: {side('top')}\n           bottom: {side('bottom')}"


def _cmd_density(args: argparse.Namespace) -> int:
    from actstore.query.render import render_frame

    frame = _latents(args).density(args.latent, where=args.where)
    if args.latent is None:
        frame = frame.sort("count", descending=True).head(args.top)
    return _emit(frame, args, lambda: render_frame(frame.drop("hist")))


def _cmd_at(args: argparse.Namespace) -> int:
    from actstore.query.render import render_frame

    span = tuple(int(x) for x in args.span.split(":")) if args.span else None
    latents = _latents(args)
    frame = latents.features_at(ctx=args.ctx, doc=args.doc, span=span, agg=args.agg, top=args.top,
                                max_density=args.max_density, where=args.where)
    where = f"ctx {args.ctx}" if args.ctx is not None else f"doc {args.doc}"
    text = lambda: (f"{where}{' span ' + args.span if args.span else ''}: "  # noqa: E731
                    f"{json.dumps(latents.text_at(ctx=args.ctx, doc=args.doc, span=span))}\n{render_frame(frame)}")
    return _emit(frame, args, text)


def _cmd_cofiring(args: argparse.Namespace) -> int:
    from actstore.query.render import render_frame

    frame = _latents(args).cofiring(args.latent, top=args.top, where=args.where)
    return _emit(frame, args, lambda: render_frame(frame))


def _cmd_across(args: argparse.Namespace) -> int:
    from actstore.query.render import render_frame

    frame = _latents(args).across_layers(args.latent, window=None if args.window < 0 else args.window, top=args.top)
    return _emit(frame, args, lambda: render_frame(frame) if frame.height else "no other SAE within the window")


def _cmd_profile(args: argparse.Namespace) -> int:
    import polars as pl

    from actstore.query.render import render_frame

    latents = _latents(args)
    frame = latents.token_profile(args.latent)
    quoted = lambda c: pl.col(c).map_elements(lambda t: json.dumps(t, ensure_ascii=False), return_dtype=pl.String)  # noqa: E731
    shown = frame.filter(pl.col("rank") < args.top).select(
        "kind", quoted("prev"), quoted("token"), "count", "corpus", *(pl.col(c).round(3) for c in ("precision", "recall", "mass_share")))
    text = lambda: f"latent {args.latent}: {latents.profile_text(args.latent)}\n{render_frame(shown)}"  # noqa: E731
    return _emit(frame, args, text)


def _cmd_find(args: argparse.Namespace) -> int:
    from actstore.api import open_store
    from actstore.query.render import render_matches
    from actstore.query.tokens import find_sequences, text_forms

    store = open_store(args.store)
    forms = [(args.text, [int(x) for x in args.text.split(",")])] if args.ids else text_forms(store, args.text)
    found = find_sequences(store, forms, limit=args.limit, window=args.window, where=args.where)
    return _emit(found.matches, args, lambda: render_matches(found, color=_color()))


def _cmd_export(args: argparse.Namespace) -> int:
    from actstore.neuronpedia import export_neuronpedia

    features = [int(x) for x in args.latents.split(",")]
    summary = export_neuronpedia(_latents(args), features, args.out, model_id=args.model_id, source_id=args.source_id,
                                 k=args.k, where=args.where, **({"creator_id": args.creator_id} if args.creator_id else {}))
    print(f"wrote {summary.folder}: " + ", ".join(f"{name} {n}" for name, n in summary.rows.items()))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from actstore.web.server import serve

    if args.sae_path and not args.model:
        raise ConfigError("--sae-path says where the live model's SAEs are: it needs --model")
    serve(args.store, host=args.host, port=args.port, model=args.model, sae_paths=sae_paths(args.sae_path),
          workers=args.workers)
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    key = _latents(args).label(args.latent, args.text, author=args.author or os.environ.get("USER") or "unknown")
    print(f"labelled latent {args.latent} of {args.sae}: {args.text!r} ({key[:12]})")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from actstore.cluster.explain import run_explain
    from actstore.config import load_config
    from actstore.explain.config import ExplainConfig

    config = load_config(args.config, ExplainConfig) if args.config else ExplainConfig()
    ids = [int(x) for x in args.latents.split(",")] if args.latents else None
    s = run_explain(args.store, args.sae, latents=ids, densest=args.densest, config=config, progress=not args.quiet)
    print(f"made {s.made} explanations ({s.unparsed} answers unparsed) in {s.seconds:.0f} s, "
          f"{s.prompt_tokens:,} explainer prompt tokens; {s.cached} already done, "
          f"{s.skipped} latents skipped (too few occurrences)")
    return 0


def _cmd_explanations(args: argparse.Namespace) -> int:
    from actstore.explain.table import readable
    from actstore.query.render import render_frame

    latents = _latents(args)
    frame = latents.explanations(current=args.current, latent=args.latent)
    shown = readable(latents.explanations(latent=args.latent), current=args.current)
    return _emit(frame, args, lambda: render_frame(shown))


def _cmd_search(args: argparse.Namespace) -> int:
    from actstore.query.render import render_frame

    if args.sae is None:  # every SAE of the store, one ranked list
        from actstore.api import open_store

        if args.where:
            raise ConfigError("--where filters one SAE's search by example: give --sae")

        frame = open_store(args.store).search(args.text, top=args.top, by_example=args.by_example)
        return _emit(frame, args, lambda: render_frame(frame) if frame.height else "no matches")
    latents = _latents(args)
    if args.where and not args.by_example:
        raise ConfigError("--where filters the documents --by-example searches; explanations are not documents")
    frame = (latents.search_by_example(args.text, top=args.top, where=args.where) if args.by_example
             else latents.search(args.text, top=args.top))
    return _emit(frame, args, lambda: render_frame(frame) if frame.height else "no matches")


def _query_parser(verbs: Any, verb: str, help_text: str, run: Any, *, latent: bool | None = True,
                  json_flag: bool = True, sae_required: bool = True, where: bool = True) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(verb, help=help_text)
    parser.add_argument("store", help="store URL or path")
    parser.add_argument("--sae", required=sae_required,
                        help="SAE name in the store" + ("" if sae_required else " (default: every SAE, one ranked list)"))
    if where:
        _where_flag(parser)
    if latent is not None:
        parser.add_argument("--latent", type=int, required=latent, help="latent id")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON records")
    parser.set_defaults(run=run)
    return parser


def _where_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--where", help="only documents matching this SQL WHERE clause over the documents table, "
                                        "e.g. \"source LIKE '%%asyncio%%'\"")


def _job_parser(verbs: Any, verb: str, help_text: str, run: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(verb, help=help_text)
    parser.add_argument("config", help=f"{verb} config file, YAML or JSON")
    parser.add_argument("--store", help="store URL, overriding store.url")
    parser.add_argument("--corpus", action="append", help="corpus path or glob, overriding corpus.paths (repeatable)")
    parser.add_argument("--max-tokens", type=int, help="cap on document tokens, overriding context.max_tokens")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
    return parser


_MAX_WORKERS_HELP = ("workers to ask for at once, overriding workers.max_workers (an autoscaler adds nodes for "
                     "those the cluster cannot hold yet)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actstore", description="Corpus-scale activation and SAE-code stores.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    verbs = parser.add_subparsers(dest="verb", required=True)

    ingest = _job_parser(verbs, "ingest", "tokenize a corpus into a store's token arrays", _cmd_ingest)
    ingest.add_argument("--workers", type=int, help="tokenizer workers (default: the cluster's CPUs)")
    extract = _job_parser(verbs, "extract", "ingest if needed, capture sites, encode with SAEs, write the store", _cmd_extract)
    extract.add_argument("--max-workers", type=int, help=_MAX_WORKERS_HELP)

    plan = verbs.add_parser("plan", help="estimate an extraction before running it: bytes, objects, requests, memory, GPU-hours")
    plan.add_argument("config", help="extract config file")
    plan.add_argument("--tokens", type=int, help="document tokens to plan for (default: context.max_tokens)")
    plan.add_argument("--l0", action="append", default=[], metavar="SAE=L0", help="an SAE's mean L0 (default: from its path)")
    plan.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="worker kind (sets dtype 'auto')")
    plan.add_argument("--doc-tokens", type=float, default=1000, help="mean document length in tokens (EOS separators)")
    plan.add_argument("--device-memory-gb", type=float, default=80,
                      help="memory of a worker's device: decides whether the SAEs fit beside the model (default 80, an H100)")
    plan.add_argument("--store", help="store URL, overriding store.url")
    plan.add_argument("--json", action="store_true", help="print JSON")
    plan.set_defaults(run=_cmd_plan)

    rid = verbs.add_parser("run-id", help="print the run id of an extract config (use it as the Ray Jobs submission id)")
    rid.add_argument("config", help="extract config file")
    rid.add_argument("--store", help="store URL, overriding store.url")
    rid.add_argument("--corpus", action="append", help="corpus path or glob, overriding corpus.paths (repeatable)")
    rid.add_argument("--max-tokens", type=int, help="cap on document tokens, overriding context.max_tokens")
    rid.add_argument("--max-workers", type=int, help=_MAX_WORKERS_HELP)
    rid.set_defaults(run=_cmd_run_id)

    info = verbs.add_parser("info", help="describe a store: metadata, units done, tokens, bytes")
    info.add_argument("store", help="store URL or path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_cmd_info)

    upgrade = verbs.add_parser("upgrade", help="upgrade an older store in place to the current format "
                               "(v1 -> v2: store the tokenizer inside it, loaded once from its recorded source)")
    upgrade.add_argument("store", help="store URL or path")
    upgrade.set_defaults(run=_cmd_upgrade)

    index = verbs.add_parser("index", help="build the feature-major index of SAEs (all by default), with Ray tasks")
    index.add_argument("store", help="store URL or path")
    index.add_argument("--sae", action="append", help="SAE name (repeat for several)")
    index.add_argument("--bucket-nnz", type=int, help="occurrences per latent bucket at most (memory of one reduce "
                       "task; default: the index config's default)")
    index.add_argument("--block", type=int, help="occurrences per block of a latent's list (default: the existing "
                       "index's, else 4096; another value builds the index again)")
    index.add_argument("--no-logits", action="store_true", help="do not also keep the output logits (W_dec @ W_U) "
                       "when the model and SAE files are on this machine")
    index.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    index.set_defaults(run=_cmd_index)

    enc = verbs.add_parser("encode", help="add an SAE's codes from stored activations (no model run), unit by unit")
    enc.add_argument("store", help="store URL or path")
    enc.add_argument("--sae", required=True, help="SAE: SAELens folder, Gemma Scope params.npz or Hub path")
    enc.add_argument("--name", help="name in the store (default: the SAE folder's name)")
    enc.add_argument("--site", help="stored site it reads (default: the SAE's hook_name)")
    enc.add_argument("--code-cap", type=int, default=256, help="latents stored per token")
    enc.add_argument("--value-dtype", choices=["float32", "float16", "bfloat16"], default="bfloat16",
                     help="stored dtype of code values (default bfloat16: rounded to nearest; float32: exact)")
    enc.add_argument("--index", action="store_true", help="build its feature-major index afterwards")
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    enc.set_defaults(run=_cmd_encode)

    train = verbs.add_parser("train-sae", help="train a TopK or JumpReLU SAE on a stored site; saves a SAELens folder")
    train.add_argument("config", help="train config file, YAML or JSON")
    train.add_argument("--store", help="store URL, overriding store.url")
    train.add_argument("--out", help="output folder, overriding out")
    train.add_argument("--max-tokens", type=int, help="stop after this many tokens, overriding max_tokens")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=_cmd_train)

    top = _query_parser(verbs, "top", "top contexts of a latent, firing token highlighted", _cmd_top)
    top.add_argument("--k", type=int, default=20, help="examples (per bin with --quantiles)")
    top.add_argument("--window", type=int, default=12, help="tokens either side")
    top.add_argument("--per-doc", type=int, default=0, help="examples per document at most (default 0: no limit, the true top k)")
    top.add_argument("--quantiles", type=int, metavar="BINS", help="sample from this many activation bins instead")
    top.add_argument("--kind", choices=["count", "width"], default="count", help="equal-count or equal-width bins")

    density = _query_parser(verbs, "density", "fraction of tokens each latent fires on, mean, max, histogram",
                            _cmd_density, latent=False)
    density.add_argument("--top", type=int, default=20, help="densest latents shown (without --latent)")

    at = _query_parser(verbs, "at", "latents firing on a stored context or document span", _cmd_at, latent=None)
    where = at.add_mutually_exclusive_group(required=True)
    where.add_argument("--ctx", type=int, help="context index")
    where.add_argument("--doc", type=int, help="document index")
    at.add_argument("--span", help="START:STOP positions (in the context, or token offsets in the document)")
    at.add_argument("--agg", choices=["max", "sum"], default="max")
    at.add_argument("--top", type=int, default=20)
    at.add_argument("--max-density", type=float, help="leave out latents denser than this")

    cof = _query_parser(verbs, "cofiring", "latents firing on the same tokens, by Jaccard", _cmd_cofiring)
    cof.add_argument("--top", type=int, default=20)
    across = _query_parser(verbs, "across", "a latent across layers: the other SAEs' latents by decoder cosine and "
                           "co-firing", _cmd_across, where=False)
    across.add_argument("--window", type=int, default=2, help="layers either side (-1: every SAE of the store)")
    across.add_argument("--top", type=int, default=3, help="latents per SAE and measure")

    prof = _query_parser(verbs, "profile", "the tokens and bigrams a latent fires on: precision, recall, mass (exact)",
                         _cmd_profile)
    prof.add_argument("--top", type=int, default=8, help="tokens and bigrams shown of each (the JSON has all kept)")

    find = verbs.add_parser("find", help="stored contexts containing a text (as typed and word-initial) or token ids")
    find.add_argument("store", help="store URL or path")
    find.add_argument("text", help="text (searched as typed and with a leading space), or comma-separated ids with --ids")
    find.add_argument("--ids", action="store_true", help="TEXT is token ids")
    find.add_argument("--limit", type=int, default=20)
    find.add_argument("--window", type=int, default=12)
    find.add_argument("--json", action="store_true", help="print JSON records")
    _where_flag(find)
    find.set_defaults(run=_cmd_find)

    export = _query_parser(verbs, "export", "write latents in Neuronpedia's bulk-import format (gzipped JSONL)",
                           _cmd_export, latent=None, json_flag=False)
    export.add_argument("--latents", required=True, help="comma-separated latent ids")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--model-id", required=True, help="Neuronpedia model id, e.g. gemma-2-2b")
    export.add_argument("--source-id", required=True, help="Neuronpedia source (layer) id, e.g. 12-gemmascope-res-16k")
    export.add_argument("--creator-id", help="an existing Neuronpedia user id (default: clkht01d40000jv08hvalcvly, the user "
                                             "Neuronpedia's own seed creates; see docs/neuronpedia.md)")
    export.add_argument("--k", type=int, default=20, help="top examples per latent")
    add_live_verbs(verbs)
    add_contrast_verb(verbs)

    srv = verbs.add_parser("serve", help="browse a store in a web browser (read-only; 127.0.0.1 by default)")
    srv.add_argument("store", help="store URL or path")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (another one makes it reachable from other machines)")
    srv.add_argument("--port", type=int, default=8000, help="port")
    srv.add_argument("--model", action="store_true",
                     help="load the store's model and SAEs: features on your text and steering (needs torch)")
    srv.add_argument("--workers", type=int, help="server processes (default: one per CPU, at most 4; 1 with --model)")
    add_sae_path_option(srv)
    srv.set_defaults(run=_cmd_serve)

    label = _query_parser(verbs, "label", "add a manual label of a latent (its current explanation)", _cmd_label,
                          json_flag=False, where=False)
    label.add_argument("text", help="the label")
    label.add_argument("--author", help="who labels (default: $USER)")

    explain = _query_parser(verbs, "explain", "explain latents with an LLM and score the explanations (resumable)",
                            _cmd_explain, latent=None, json_flag=False, where=False)
    which = explain.add_mutually_exclusive_group(required=True)
    which.add_argument("--latents", help="comma-separated latent ids")
    which.add_argument("--densest", type=int, help="the N latents firing most often")
    explain.add_argument("--config", help="explain config, YAML or JSON (schemas/explain-config.schema.json)")
    explain.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    table = _query_parser(verbs, "explanations", "list a SAE's labels and explanations with their scores",
                          _cmd_explanations, latent=False, where=False)
    table.add_argument("--current", action="store_true",
                       help="one per latent: latest label, else best-scored (informative scorers), else its token profile")

    search = _query_parser(verbs, "search", "find latents by their explanations (BM25), or by example text",
                           _cmd_search, latent=None, sae_required=False)
    search.add_argument("text", help="words to look for in explanations, or text to look up with --by-example")
    search.add_argument("--by-example", action="store_true",
                        help="latents firing unusually high where the stored corpus holds TEXT")
    search.add_argument("--top", type=int, default=20)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actstore`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # here, not at exit: a closed pipe raises where it is handled below
        return code
    except ActstoreError as exc:
        _stop_ray()
        print(f"actstore {args.verb}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:  # the reader went away (`actstore info | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not raise again
        return 1


def _stop_ray() -> None:
    """Shut down a Ray this process started or joined, so that its shutdown messages (actors
    killed, GCS going away) come before actstore's error line instead of after it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
