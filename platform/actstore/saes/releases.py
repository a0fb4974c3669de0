"""Gemma Scope releases: which SAE folders exist on the Hub, and what a release entry expands to.

The table ``gemma_scope_releases.json`` (package data) is SAELens' release table
(``sae_lens/pretrained_saes.yaml``) resolved for the Gemma Scope repositories: per Hub repository,
each folder ``layer_L/width_W`` with its ``average_l0_N`` variants and the canonical one (SAELens'
``<repo>-canonical`` release: the L0 closest to 100). Its ``source`` names the SAELens commit it
was read from; ``python -m actstore.saes.releases pretrained_saes.yaml COMMIT VERSION`` rewrites it.
Sites follow SAELens' Gemma 2 loader: ``res`` reads ``blocks.L.hook_resid_post``, ``mlp``
``blocks.L.hook_mlp_out`` and ``att`` ``blocks.L.attn.hook_z`` (n_heads * head_dim wide).

Nothing here guesses a folder: a layer, width or L0 the table lacks is refused, naming what exists.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from actstore.errors import ConfigError

__all__ = ["KINDS", "WIDTHS", "ReleaseSae", "expand_release", "gemma_scope_folder", "release_table", "table_from_saelens"]

Kind = Literal["res", "mlp", "att"]
KINDS: dict[str, str] = {"res": "blocks.{layer}.hook_resid_post", "mlp": "blocks.{layer}.hook_mlp_out",
                         "att": "blocks.{layer}.attn.hook_z"}
WIDTHS = {"4k": 4096, "16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072, "262k": 262144, "524k": 524288,
          "1m": 1048576}
TABLE = "gemma_scope_releases.json"
_REPO = re.compile(r"^google/(gemma-scope-\w+-(?:pt|it))-(res|mlp|att)$")
_FOLDER = re.compile(r"^layer_(\d+)/width_(\w+)/average_l0_(\d+)$")


@dataclass(frozen=True)
class ReleaseSae:
    """One SAE of a release: its Hub repository, folder (``average_l0_N``, never an alias) and site."""

    repo: str  # google/gemma-scope-2b-pt-res
    model: str  # the model it was trained on, as SAELens names it (gemma-2-2b)
    kind: str
    layer: int
    width: str
    l0: int

    @property
    def folder(self) -> str:
        return f"layer_{self.layer}/width_{self.width}/average_l0_{self.l0}"

    @property
    def path(self) -> str:
        """The Hub path ``repo/folder`` that ``load_sae`` reads."""
        return f"{self.repo}/{self.folder}"

    @property
    def site(self) -> str:
        return KINDS[self.kind].format(layer=self.layer)

    @property
    def d_sae(self) -> int:
        return WIDTHS[self.width]


@functools.cache
def release_table() -> dict[str, Any]:
    """The shipped table: ``{"source": {...}, "repos": {repo: {release, kind, model, folders}}}``."""
    return dict(json.loads(resources.files("actstore.saes").joinpath(TABLE).read_text()))


def _releases() -> dict[str, dict[str, dict[str, Any]]]:
    """release name -> kind -> its repository's entry (with the repo id under ``repo``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for repo, entry in release_table()["repos"].items():
        out.setdefault(entry["release"], {})[entry["kind"]] = {**entry, "repo": repo}
    return out


def expand_release(release: str, *, kinds: Sequence[str] | None, layers: Literal["all"] | Sequence[int], width: str,
                   l0: Literal["canonical"] | int) -> list[ReleaseSae]:
    """The SAEs of ``release`` (e.g. ``gemma-scope-2b-pt``) for ``kinds`` (default: all the
    release has) at ``layers`` (``all``: every layer the release has at this width) and ``width``,
    each at the ``l0`` folder (``canonical``: SAELens' canonical one), ordered by layer and then
    by where the site sits in a block. Refuses anything the table lacks, naming what it has."""
    known = _releases()
    if release not in known:
        raise ConfigError(f"unknown release {release!r}; the table (SAELens {release_table()['source']['version']}) has "
                          f"{sorted(known)}")
    wanted = list(kinds) if kinds is not None else [k for k in KINDS if k in known[release]]
    out = []
    for kind in wanted:
        if kind not in known[release]:
            raise ConfigError(f"release {release!r} has no {kind!r} SAEs; it has {sorted(known[release])}")
        entry = known[release][kind]
        at_width = {int(f.split("/")[0][6:]): v for f, v in entry["folders"].items() if f.endswith(f"/width_{width}")}
        if not at_width:
            widths = sorted({f.split("/")[1][6:] for f in entry["folders"]}, key=lambda w: WIDTHS.get(w, 0))
            raise ConfigError(f"{entry['repo']} has no width {width!r}; it has {widths}")
        chosen = sorted(at_width) if layers == "all" else list(layers)
        for layer in chosen:
            if layer not in at_width:
                raise ConfigError(f"{entry['repo']} has no layer {layer} at width {width}; it has layers "
                                  f"{_ranges(sorted(at_width))}")
            out.append(ReleaseSae(entry["repo"], entry["model"], kind, layer, width,
                                  _pick_l0(entry["repo"], f"layer_{layer}/width_{width}", at_width[layer], l0)))
    return sorted(out, key=lambda s: (s.layer, ("att", "mlp", "res").index(s.kind)))


def _pick_l0(repo: str, folder: str, found: dict[str, Any], l0: Literal["canonical"] | int) -> int:
    if l0 == "canonical":
        if found.get("canonical") is None:
            raise ConfigError(f"SAELens' table names no canonical SAE for {repo}/{folder}; choose l0 from {found['l0']}")
        return int(found["canonical"])
    if l0 not in found["l0"]:
        raise ConfigError(f"{repo}/{folder} has no average_l0_{l0}; it has average_l0_N for N in {found['l0']}")
    return int(l0)


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}-{v}" if v != start else str(v))
            start = None
    return ", ".join(parts)


def gemma_scope_folder(path: str) -> ReleaseSae | None:
    """The release SAE a Hub path such as ``google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82``
    names, when the table lists it (its shape is then known without downloading it)."""
    parts = path.strip("/").split("/")
    repo, folder = "/".join(parts[:2]), "/".join(parts[2:])
    entry = release_table()["repos"].get(repo)
    match = _FOLDER.match(folder)
    if entry is None or match is None:
        return None
    layer, width, l0 = int(match.group(1)), match.group(2), int(match.group(3))
    if l0 not in entry["folders"].get(f"layer_{layer}/width_{width}", {}).get("l0", []):
        return None
    return ReleaseSae(repo, entry["model"], entry["kind"], layer, width, l0)


def table_from_saelens(data: dict[str, Any], *, commit: str, version: str) -> dict[str, Any]:
    """The shipped table from SAELens' parsed ``pretrained_saes.yaml``: every ``google/gemma-scope-*``
    repository of SAE sites (``-res``, ``-mlp``, ``-att``; embedding SAEs and transcoders left out),
    its folders' L0 variants and the canonical one."""
    repos: dict[str, dict[str, Any]] = {}
    for name, release in sorted(data.items()):
        match = _REPO.match(str(release.get("repo_id", "")))
        if match is None or name != release["repo_id"].split("/")[1] + ("-canonical" if name.endswith("-canonical") else ""):
            continue
        entry = repos.setdefault(release["repo_id"], {"release": match.group(1), "kind": match.group(2), "folders": {}})
        if name.endswith("-canonical") or "model" not in entry:  # the canonical release names 9b-it's model right
            entry["model"] = release["model"]
        for sae in release["saes"]:
            found = _FOLDER.match(sae["path"])
            if found is None:  # embedding/width_4k/...: reads hook_embed, not a site
                continue
            folder = entry["folders"].setdefault(f"layer_{found.group(1)}/width_{found.group(2)}", {"l0": [], "canonical": None})
            if name.endswith("-canonical"):
                folder["canonical"] = int(found.group(3))
            else:
                folder["l0"] = sorted({*folder["l0"], int(found.group(3))})
    for entry in repos.values():
        entry["folders"] = dict(sorted(entry["folders"].items(), key=lambda kv: tuple(map(_number, kv[0].split("/")))))
    return {"source": {"repository": "https://github.com/jbloomAus/SAELens", "path": "sae_lens/pretrained_saes.yaml",
                       "commit": commit, "version": version,
                       "note": "folders per Gemma Scope Hub repository as SAELens lists them; canonical = the folder of "
                               "SAELens' <repo>-canonical release (the L0 closest to 100)"},
            "repos": dict(sorted(repos.items()))}


def _number(part: str) -> tuple[int, int]:
    """Sort key of layer_12 / width_16k: by the number (widths by their size)."""
    tail = part.split("_", 1)[1]
    return (WIDTHS[tail], 0) if tail in WIDTHS else (int(tail), 0)


if __name__ == "__main__":  # python -m actstore.saes.releases pretrained_saes.yaml COMMIT VERSION
    import yaml

    table = table_from_saelens(yaml.safe_load(Path(sys.argv[1]).read_text()), commit=sys.argv[2], version=sys.argv[3])
    target = Path(__file__).with_name(TABLE)
    flat = re.sub(r"[\[{][^\[\]{}]*[\]}]", lambda m: " ".join(m.group(0).split()), json.dumps(table, indent=1))
    target.write_text(flat + "\n")  # innermost lists and mappings on one line each
    print(f"{target}: {sum(len(r['folders']) for r in table['repos'].values())} folders in {len(table['repos'])} repositories")
