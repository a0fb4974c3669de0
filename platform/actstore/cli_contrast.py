"""The ``contrast`` verb: which latents differ between two document sets, or two models on the same tokens,
tested per document."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_contrast_verb"]


def _cmd_contrast(args: argparse.Namespace) -> int:
    from actstore.api import open_store
    from actstore.errors import ConfigError

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.models is not None:
        return _models(args)
    if args.where is not None:
        raise ConfigError("--where restricts a contrast of --models; contrast document sets with --a and --b")
    if not args.a:
        raise ConfigError("say which documents to contrast: --a WHERE (a SQL WHERE clause over the documents table), "
                          "or which models: --models A,B")
    store = open_store(args.store)
    found: Any = (store.contrast(args.a, args.b, unit=args.unit, prior=args.prior) if args.sae is None  # every SAE
                  else store.sae(args.sae).contrast(args.a, args.b, unit=args.unit, prior=args.prior))
    print(json.dumps(found.to_dict(top=args.top), indent=1) if args.json else found.render(top=args.top))
    return 0


def _models(args: argparse.Namespace) -> int:
    """``--models A,B``: latents of ``--sae`` (when given) and every stored site, model B against A."""
    from actstore.api import open_store
    from actstore.contrast.models import site_movement
    from actstore.errors import ConfigError
    from actstore.query.render import render_frame

    tags = [t.strip() for t in args.models.split(",")]
    if len(tags) != 2 or not all(tags):
        raise ConfigError(f"--models takes two model tags, A,B (base: the store's own model), got {args.models!r}")
    if args.a or args.b:
        raise ConfigError("--models compares two models on the same tokens; restrict the documents with --where, not --a/--b")
    store = open_store(args.store)
    if args.sae is None:
        moved = site_movement(store, tags[0], tags[1], where=args.where)
        print(json.dumps({"a": tags[0], "b": tags[1], "where": args.where, "site_rows": moved.to_dicts()}, indent=1)
              if args.json else render_frame(moved))
        return 0
    found = store.sae(args.sae).contrast_models(tags[0], tags[1], where=args.where, unit=args.unit)
    print(json.dumps(found.to_dict(top=args.top), indent=1) if args.json else found.render(top=args.top))
    return 0


def add_contrast_verb(verbs: Any) -> None:
    """Register ``contrast`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = verbs.add_parser(
        "contrast", help="latents firing more in one document set than another, or changing from one model to another "
        "on the same tokens (per-document rank tests, BH q-values)")
    parser.add_argument("store", help="store URL or path")
    parser.add_argument("--sae", help="SAE name in the store (without it: --a/--b contrast every SAE in one list, "
                        "q over all their latents; --models shows only how far each site moves)")
    parser.add_argument("--a", help="side A: SQL WHERE clause over the documents table, e.g. \"source LIKE '%%asyncio%%'\"")
    parser.add_argument("--b", help="side B, likewise (default: every document not in A)")
    parser.add_argument("--models", help="two models on the same tokens, A,B: their tags in the store (base: its own "
                        "model), e.g. base,it; per latent the paired change B - A tested per document, per site how far "
                        "the activations move")
    parser.add_argument("--where", help="with --models: compare only on the documents this SQL WHERE clause matches")
    parser.add_argument("--unit", choices=["auto", "document", "context"], default="auto",
                        help="unit of the test (auto: documents when each side holds at least 10, else contexts)")
    parser.add_argument("--prior", type=float, default=1.0, help="pseudo-events of the log2 rate ratio's prior")
    parser.add_argument("--top", type=int, default=20, help="rows shown (most significant first)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (the web API's frame)")
    parser.set_defaults(run=_cmd_contrast)
