"""Sites of several models over the same stored tokens: the model is named in the site.

A store's own model (the one its first extraction ran) has plain TransformerLens-style sites,
``blocks.12.hook_resid_post``; :data:`BASE` names it. A further model that reads the stored
tokens (``google/gemma-2-2b-it`` beside ``google/gemma-2-2b``) is known by a short tag given in
the extraction config (``models: {it: ...}``), and its sites are the tag, a dot, and the site:
``it.blocks.12.hook_resid_post``. Tags hold letters, digits, ``_`` and ``-`` (no dot, so the
split is unambiguous; all within the Zarr v3 recommended node-name characters), and neither
``base`` nor ``blocks``. Stores written before hold only plain sites, which read as before.
"""

from __future__ import annotations

import re

from actstore.errors import ConfigError

__all__ = ["BASE", "check_tag", "model_of", "site_for", "split_site"]

BASE = "base"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RESERVED = (BASE, "blocks")


def check_tag(tag: str) -> str:
    """``tag`` if it may name a further model, else :class:`ConfigError` saying why."""
    if not _TAG.match(tag) or tag in _RESERVED:
        raise ConfigError(f"model tag {tag!r} is not allowed: use letters, digits, _ and - (no dot), "
                          f"and neither of {list(_RESERVED)} ({BASE!r} names the store's own model)")
    return tag


def split_site(name: str) -> tuple[str, str]:
    """(model tag, site of that model): ``it.blocks.3.hook_z`` -> (``it``, ``blocks.3.hook_z``);
    a plain site is the store's own model's, :data:`BASE`."""
    tag, dot, rest = name.partition(".")
    if dot and tag != "blocks" and rest.startswith("blocks."):
        return tag, rest
    return BASE, name


def model_of(name: str) -> str:
    """The tag of the model a site belongs to (:data:`BASE` for a plain site)."""
    return split_site(name)[0]


def site_for(site: str, tag: str) -> str:
    """The store's name of ``site`` (a plain site) captured from the model ``tag``."""
    return site if tag == BASE else f"{tag}.{site}"
