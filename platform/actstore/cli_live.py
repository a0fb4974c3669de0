"""The live model's verbs: ``inspect`` (features on a text), ``steer`` and ``logits``.

Every parameter is checked against the store's metadata before the model loads (seconds), so
an empty prompt, an unknown SAE or a latent out of range fails at once in one line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from actstore.errors import ConfigError

__all__ = ["add_live_verbs", "add_sae_path_option", "sae_paths"]


def sae_paths(pairs: list[str] | None) -> dict[str, str]:
    """``--sae-path NAME=PATH`` options as a mapping (a name given twice is refused)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--sae-path takes NAME=PATH (an SAE of the store, and where its files are), got {pair!r}")
        if name in out:
            raise ConfigError(f"--sae-path names SAE {name!r} twice")
        out[name] = path
    return out


def add_sae_path_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae-path", action="append", metavar="NAME=PATH",
                        help="load the store's SAE NAME from PATH (a folder, params.npz or Hub path) instead of where "
                             "the store records it (repeat for several)")


def _preflight(args: argparse.Namespace, saes: list[str] | None) -> Any:
    """Checks that need only the store's metadata (the SAEs named, --sae-path's names); the store."""
    import actstore

    store = actstore.open(args.store)
    names = {s.name for s in store.meta.saes}
    unknown = sorted({*(saes or []), *sae_paths(args.sae_path)} - names)
    if unknown:
        raise ConfigError(f"the store at {args.store!r} has no SAE {unknown}; it has {sorted(names) or 'none'}")
    if store.meta.model is None:
        raise ConfigError(f"the store at {args.store!r} records no model (it was only ingested)")
    return store


def _session(args: argparse.Namespace, saes: list[str] | None) -> Any:
    from actstore.live.session import open_session

    return open_session(args.store, saes=saes, device=args.device, sae_paths=sae_paths(args.sae_path))


def _cmd_inspect(args: argparse.Namespace) -> int:
    from actstore.live.checks import check_number, check_text
    from actstore.query.render import render_frame

    check_text(args.text)
    check_number("--top", args.top, lo=1, integer=True)
    if args.max_density is not None:
        check_number("--max-density", args.max_density, lo=0, hi=1)
    _preflight(args, args.sae)
    session = _session(args, args.sae)
    frame = session.features(args.text, top=args.top, rank=args.rank, max_density=args.max_density,
                             include_special=args.include_special, chat=args.chat)
    if args.json:
        print(json.dumps(frame.to_dicts(), indent=1))
        return 0
    shown = frame.drop("token_id", "special", "label") if frame["label"].null_count() == len(frame) else frame
    print(render_frame(shown.with_columns(shown["token"].str.replace_all("\n", "\\n", literal=True))))
    return 0


def _check_steer(args: argparse.Namespace) -> None:
    """The steering parameters against the store, before the model loads."""
    from actstore.live.checks import check_latent, check_number, check_sampling, check_text

    check_text(args.prompt, "prompt")
    check_number("--strength", args.strength)
    check_sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed, max_new_tokens=args.max_new_tokens)
    store = _preflight(args, [args.sae])
    check_latent(store.meta.saes, args.sae, args.latent)
    if args.unit == "max" and not float(store.sae(args.sae).density(args.latent)["max"][0]) > 0:
        raise ConfigError(f"latent {args.latent} of {args.sae!r} never fired in the store: --unit max has no scale; "
                          "use --unit raw")


def _cmd_steer(args: argparse.Namespace) -> int:
    _check_steer(args)
    session = _session(args, [args.sae])
    result = session.steer(args.prompt, [(args.sae, args.latent, args.strength)], method=args.method,
                           positions=args.positions, unit=args.unit, include_special=args.include_special,
                           temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, chat=args.chat)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    steered = result.tokens.filter(result.tokens["run"] == "steered")
    default = result.tokens.filter(result.tokens["run"] == "default")
    print(f"prompt    {session.tokenizer.decode(result.prompt_ids)!r} ({len(result.prompt_ids)} tokens)")
    print(f"default   {result.default_text!r}")
    print(f"steered   {result.steered_text!r}")
    print(f"latent {args.latent} of {args.sae} on generated tokens: mean {default['activation'].mean() or 0:.4g} (default), "
          f"{steered['activation'].mean() or 0:.4g} (steered; {steered['activation_before'].mean() or 0:.4g} before the edit)")
    print(f"steered positions: {_ranges(result.steered_positions)}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def _ranges(positions: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    for p in positions:
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ", ".join(out) or "none"


def _cmd_logits(args: argparse.Namespace) -> int:
    from actstore.live.logits import keep_output_logits

    _preflight(args, args.sae)
    session = _session(args, args.sae)
    for sae in sorted(session.saes):
        out = keep_output_logits(session, sae)
        print(f"logits {sae}: top and bottom {out.top_ids.shape[1]} tokens of W_dec @ W_U for {out.top_ids.shape[0]:,} latents")
    return 0


def add_live_verbs(verbs: Any) -> None:
    """Register ``inspect``, ``steer`` and ``logits`` on the CLI's subparsers."""
    def common(verb: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(verb, help=help_text)
        parser.add_argument("store", help="store URL or path (its model and SAEs are loaded)")
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        add_sae_path_option(parser)
        parser.set_defaults(run=run)
        return parser

    inspect = common("inspect", "features of the store's SAEs on a text, per token", _cmd_inspect)
    inspect.add_argument("text", help="the text (newlines kept; in a shell: $'line 1\\nline 2')")
    inspect.add_argument("--sae", action="append", help="SAE name (repeat; default all)")
    inspect.add_argument("--top", type=int, default=5, help="latents per token")
    inspect.add_argument("--rank", choices=["value", "percentile"], default="value")
    inspect.add_argument("--max-density", type=float, help="leave out latents denser than this (0 to 1)")
    inspect.add_argument("--include-special", action="store_true", help="keep BOS and special tokens")
    inspect.add_argument("--chat", action="store_true", help="the text as a user turn of the model's chat template")
    inspect.add_argument("--json", action="store_true", help="print JSON records")

    steer = common("steer", "generate with and without steering a latent, same seed, side by side", _cmd_steer)
    steer.add_argument("prompt", help="the prompt (newlines kept)")
    steer.add_argument("--sae", required=True)
    steer.add_argument("--latent", type=int, required=True)
    steer.add_argument("--strength", type=float, required=True,
                       help="add: coefficient of W_dec[latent] (negative subtracts); clamp: the value; any finite number")
    steer.add_argument("--method", choices=["add", "clamp"], default="add")
    steer.add_argument("--unit", choices=["raw", "max"], default="raw", help="max: strength x the latent's store maximum")
    steer.add_argument("--positions", choices=["all", "prompt", "generated"], default="all")
    steer.add_argument("--include-special", action="store_true", help="steer BOS and special tokens too")
    steer.add_argument("--max-new-tokens", type=int, default=32)
    steer.add_argument("--temperature", type=float, default=0.5, help=">= 0; 0: greedy")
    steer.add_argument("--top-p", type=float, default=1.0, help="in (0, 1]")
    steer.add_argument("--seed", type=int, default=16, help="0 to 4294967295")
    steer.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    steer.add_argument("--json", action="store_true", help="print JSON: default and steered side by side")

    logits = common("logits", "compute and keep each SAE's output logits (W_dec @ W_U), shown by `top`", _cmd_logits)
    logits.add_argument("--sae", action="append", help="SAE name (repeat; default all)")
