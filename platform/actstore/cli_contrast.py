"""The ``contrast`` verb: which latents differ between two document sets, tested per document."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_contrast_verb"]


def _cmd_contrast(args: argparse.Namespace) -> int:
    from actstore.api import open_store
    from actstore.errors import ConfigError

    if not args.a:
        raise ConfigError("say which documents to contrast: --a WHERE (a SQL WHERE clause over the documents table)")
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    found = open_store(args.store).sae(args.sae).contrast(args.a, args.b, unit=args.unit, prior=args.prior)
    print(json.dumps(found.to_dict(top=args.top), indent=1) if args.json else found.render(top=args.top))
    return 0


def add_contrast_verb(verbs: Any) -> None:
    """Register ``contrast`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = verbs.add_parser(
        "contrast", help="latents firing more in one document set than another (per-document rank test, BH q-values)")
    parser.add_argument("store", help="store URL or path")
    parser.add_argument("--sae", required=True, help="SAE name in the store")
    parser.add_argument("--a", help="side A: SQL WHERE clause over the documents table, e.g. \"source LIKE '%%asyncio%%'\"")
    parser.add_argument("--b", help="side B, likewise (default: every document not in A)")
    parser.add_argument("--unit", choices=["auto", "document", "context"], default="auto",
                        help="unit of the test (auto: documents when each side holds at least 10, else contexts)")
    parser.add_argument("--prior", type=float, default=1.0, help="pseudo-events of the log2 rate ratio's prior")
    parser.add_argument("--top", type=int, default=20, help="rows shown (most significant first)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (the web API's frame)")
    parser.set_defaults(run=_cmd_contrast)
