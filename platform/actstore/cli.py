"""``actstore <verb>``: the command line. Thin: parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from actstore.errors import ActstoreError

__all__ = ["main"]


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

    config = load_config(args.config, IngestConfig, **{"store.url": args.store, "context.max_tokens": args.max_tokens})
    store = run_ingest(config, workers=args.workers, progress=not args.quiet)
    return _print_info(store, as_json=False)


def _cmd_extract(args: argparse.Namespace) -> int:
    from actstore.cluster.extract import run_extract
    from actstore.config import ExtractConfig, load_config

    config = load_config(args.config, ExtractConfig, **{"store.url": args.store, "context.max_tokens": args.max_tokens})
    store = run_extract(config, progress=not args.quiet)
    return _print_info(store, as_json=False)


def _cmd_run_id(args: argparse.Namespace) -> int:
    from actstore.cluster.settings import redacted_config
    from actstore.config import ExtractConfig, load_config
    from actstore.store.runs import run_id

    config = load_config(args.config, ExtractConfig, **{"store.url": args.store})
    print(run_id("extract", config.store.url, redacted_config(config)))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from actstore.store.store import open_store

    return _print_info(open_store(args.store), as_json=args.json)


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
    print(f"sites       {', '.join(info.sites) or '-'}")
    print(f"saes        {', '.join(info.saes) or '-'}")
    print(f"bytes       {_human_bytes(info.bytes)} ({info.bytes / max(info.n_tokens, 1):.2f} per document token)")
    return 0


def _job_parser(verbs: Any, verb: str, help_text: str, run: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(verb, help=help_text)
    parser.add_argument("config", help=f"{verb} config file, YAML or JSON")
    parser.add_argument("--store", help="store URL, overriding store.url")
    parser.add_argument("--max-tokens", type=int, help="cap on document tokens, overriding context.max_tokens")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actstore", description="Corpus-scale activation and SAE-code stores.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    verbs = parser.add_subparsers(dest="verb", required=True)

    ingest = _job_parser(verbs, "ingest", "tokenize a corpus into a store's token arrays", _cmd_ingest)
    ingest.add_argument("--workers", type=int, help="tokenizer workers (default: the cluster's CPUs)")
    _job_parser(verbs, "extract", "ingest if needed, capture sites, encode with SAEs, write the store", _cmd_extract)

    rid = verbs.add_parser("run-id", help="print the run id of an extract config (use it as the Ray Jobs submission id)")
    rid.add_argument("config", help="extract config file")
    rid.add_argument("--store", help="store URL, overriding store.url")
    rid.set_defaults(run=_cmd_run_id)

    info = verbs.add_parser("info", help="describe a store: metadata, units done, tokens, bytes")
    info.add_argument("store", help="store URL or path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actstore`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except ActstoreError as exc:
        print(f"actstore {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
