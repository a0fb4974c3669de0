"""A reader of actstore stores written from ``schemas/STORE.md`` alone: zarr-python, numpy,
ml_dtypes and pyarrow, and no actstore import (``test_conformance`` checks that by parsing this
file). It lists what the spec says a store holds, checks every array and group against it and
every object in the store against the list, and decodes the values the way the spec says.

When the spec changes, change this file from the spec's text, not from actstore's code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np
import pyarrow.parquet as pq
import zarr

# STORE.md "Tokens": name -> (dtype, fill)
TOKENS = {"ids": ("int32", 0), "doc": ("int64", -1), "pos": ("int32", -1), "flags": ("uint8", 4)}
HIST_BINS, L0_BINS = 58, 1025
# STORE.md "Statistics": name -> (per-unit dtype, merged dtype, shape of one row given the width)
SITE_STATS = {"count": ("int64", "int64", lambda d: ()), "sum": ("float64", "float64", lambda d: (d,)),
              "sumsq": ("float64", "float64", lambda d: ())}
SAE_STATS = {"tokens": ("int64", "int64", lambda d: ()), "fired": ("int64", "int64", lambda d: (d,)),
             "sum": ("float64", "float64", lambda d: (d,)), "max": ("float32", "float32", lambda d: (d,)),
             "hist": ("int32", "int64", lambda d: (d, HIST_BINS)), "l0_hist": ("int64", "int64", lambda d: (L0_BINS,)),
             "over_cap": ("int64", "int64", lambda d: ())}
# STORE.md "The token axis and units": the attributes an array may carry
ARRAY_ATTRIBUTES = {"logical_dtype", "per_token", "axes", "site", "sae", "hist_edges"}
FORMAT_VERSIONS = (1, 2, 3)
# STORE.md "Run records"
RUN_FIELDS = {"run_id", "attempt", "kind", "started", "ended", "status", "workers", "units_total", "units_skipped",
              "units_run", "units_retried", "worker_deaths", "tokens", "tokens_per_s", "storage_retries", "compute_seconds",
              "write_seconds", "failures"}
# STORE.md "The token axis and units": a chain's bytes-to-bytes codecs (name, configuration)
SHUFFLE_BLOCK = 1048576
# STORE.md "Output logits": name -> dtype
LOGITS = {"top_ids": "int32", "top_values": "float32", "bottom_ids": "int32", "bottom_values": "float32"}
LOGITS_ATTRIBUTE = "actstore_logits"
# STORE.md "Token profiles": name -> (dtype, one row of P per latent)
PROFILE = {"count": ("int64", False), "mass": ("float64", False), "token_id": ("int32", True),
           "token_count": ("int64", True), "token_mass": ("float64", True), "token_corpus": ("int64", True),
           "bigram_prev": ("int32", True), "bigram_id": ("int32", True), "bigram_count": ("int64", True),
           "bigram_mass": ("float64", True), "bigram_corpus": ("int64", True)}
# STORE.md "Explanations": column -> type (string columns may be Arrow string or large_string)
METRICS = {"balanced_accuracy": "float64", "precision": "float64", "recall": "float64", "f1": "float64",
           "auroc": "float64", "n": "int64", "precision_at_density": "float64", "yes_rate": "float64",
           "spread": "float64", "baseline": "float64", "informative": "bool"}
REQUIRED_COLUMNS = {
    "latent": "int64", "text": "string", "kind": "string", "author": "string", "template_hash": "string",
    "sampling": "string", "explainer_examples": "list<int64>", "test_examples": "list<int64>",
    "negative_examples": "list<int64>", "parsed": "bool", "raw": "string", "key": "string", "created": "string",
}
EXPLANATION_COLUMNS = {
    **REQUIRED_COLUMNS, "baseline_latent": "int64", "baseline_text": "string",
    **{f"{scorer}_{m}": dt for scorer in ("embedding", "detection", "fuzzing") for m, dt in METRICS.items()},
}
EXPLANATION_PART = re.compile(r"explanations/(?P<sae>[^/]+)/(?:part-(?P<part>[0-9a-f]{32})\.parquet|_committed/(?P<id>[0-9a-f]{32})\.json)")


def chain_codecs(chain: str, itemsize: int) -> list[tuple[str, dict[str, Any]]]:
    """The bytes-to-bytes codecs of a named chain."""
    if chain == "none":
        return []
    if chain == "zstd":
        return [("zstd", {"level": 0, "checksum": False})]
    assert chain == "shuffle-zstd", chain
    return [("blosc", {"cname": "zstd", "clevel": 1, "shuffle": "shuffle", "typesize": itemsize, "blocksize": SHUFFLE_BLOCK})]


class ArraySpec(NamedTuple):
    path: str
    logical: str
    shape: tuple[int, ...]
    per_token: bool
    fill: int | float | None = None
    codecs: list[tuple[str, dict[str, Any]]] | None = None  # bytes-to-bytes codecs; None: zstd level 0


def storage(logical: str) -> np.dtype:
    """bfloat16 is stored as uint16; everything else as itself."""
    return np.dtype(np.uint16) if logical == "bfloat16" else np.dtype(logical)


def view(values: np.ndarray, logical: str) -> np.ndarray:
    return values.view(ml_dtypes.bfloat16) if logical == "bfloat16" else values


def root_metadata(root: Path) -> dict[str, Any]:
    node = json.loads((root / "zarr.json").read_text())
    assert node["zarr_format"] == 3 and node["node_type"] == "group", node
    meta = node["attributes"]["actstore"]
    assert meta["format"] == "actstore" and meta["format_version"] in FORMAT_VERSIONS, meta
    return dict(meta)


def tokenizer_problems(root: Path, meta: dict[str, Any]) -> list[str]:
    """The stored tokenizer.json (format 2) and chat template against the root record: present,
    and their SHA-256."""
    file = meta["tokenizer"].get("file")
    if meta["format_version"] < 2:
        return [] if file is None else [f"tokenizer.file is {file!r} in a version 1 store"]
    out = [] if file == "tokenizer/tokenizer.json" else [f"tokenizer.file is {file!r}, the spec says 'tokenizer/tokenizer.json'"]
    template = meta["tokenizer"].get("chat_template")
    if template is not None and template["file"] != "tokenizer/chat_template.jinja":
        out.append(f"tokenizer.chat_template.file is {template['file']!r}, the spec says 'tokenizer/chat_template.jinja'")
    for name, record in ((file, meta["tokenizer"]), *([(template["file"], template)] if template else [])):
        if not (root / name).exists():
            out.append(f"{name}: missing")
            continue
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        if digest != record["sha256"]:
            out.append(f"{name}: SHA-256 {digest} differs from the recorded {record['sha256']}")
    return out


def sae_file_problems(root: Path, meta: dict[str, Any]) -> list[str]:
    """Each SAE's copy inside the store (format 3, ``saes[].file``): the folder ``saes/<name>``
    holding params.npz, or cfg.json and sae_weights.safetensors, whose bytes in that order hash
    to the SAE's sha256."""
    out = []
    for sae in meta["saes"]:
        file = sae.get("file")
        if file is None:
            continue
        if meta["format_version"] < 3 or file != f"saes/{sae['name']}":
            out.append(f"SAE {sae['name']}: file is {file!r} in a version {meta['format_version']} store")
            continue
        names = sorted(p.name for p in (root / file).iterdir()) if (root / file).is_dir() else []
        order = ["params.npz"] if names == ["params.npz"] else ["cfg.json", "sae_weights.safetensors"]
        if sorted(order) != names:
            out.append(f"{file}: holds {names}, the spec says params.npz or cfg.json + sae_weights.safetensors")
            continue
        digest = hashlib.sha256(b"".join((root / file / name).read_bytes() for name in order)).hexdigest()
        if digest != sae["sha256"]:
            out.append(f"{file}: SHA-256 {digest} differs from the SAE's sha256 {sae['sha256']}")
    return out


def sae_files(meta: dict[str, Any]) -> set[str]:
    """The objects of the SAE copies the root metadata names."""
    return {f"{sae['file']}/{name}" for sae in meta["saes"] if sae.get("file")
            for name in ("params.npz", "cfg.json", "sae_weights.safetensors")}


def tokenizer(root: Path, meta: dict[str, Any]) -> Any:
    """The stored tokenizer, with the ``tokenizers`` library as the spec says."""
    import tokenizers

    return tokenizers.Tokenizer.from_str((root / meta["tokenizer"]["file"]).read_text())


def arrow_type(t: Any) -> str:
    """A Parquet column's Arrow type in the spec's words."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{arrow_type(t.value_type)}>"
    return {"double": "float64", "float": "float32"}.get(str(t), str(t))


def explanation_problems(root: Path, sae: str) -> list[str]:
    """Each committed part of an SAE's explanations table: named by its manifest, with the rows
    and SHA-256 the manifest records and the spec's columns; a part without a manifest is allowed."""
    folder, out = root / "explanations" / sae, []
    for manifest in sorted((folder / "_committed").glob("*.json")):
        record = json.loads(manifest.read_text())
        if set(record) != {"part", "rows", "sha256", "created"} or record["part"] != f"part-{manifest.stem}.parquet":
            out.append(f"{manifest.relative_to(root)}: {record} is not {{part: part-<id>.parquet, rows, sha256, created}}")
            continue
        data = (folder / record["part"]).read_bytes()
        table = pq.read_table(folder / record["part"])
        columns = {f.name: arrow_type(f.type) for f in table.schema}
        if hashlib.sha256(data).hexdigest() != record["sha256"] or table.num_rows != record["rows"]:
            out.append(f"{manifest.relative_to(root)}: its part's SHA-256 or row count differs")
        if not REQUIRED_COLUMNS.items() <= columns.items() or not columns.items() <= EXPLANATION_COLUMNS.items():
            out.append(f"explanations/{sae}/{record['part']}: columns {columns}, the spec says {EXPLANATION_COLUMNS}")
    return out


def explanations(root: Path, sae: str) -> Any:
    """Every committed row of an SAE's explanations table, in the order of the manifests' ids; a
    column a part lacks is null there."""
    import pyarrow as pa

    folder = root / "explanations" / sae
    parts = [json.loads(m.read_text())["part"] for m in sorted((folder / "_committed").glob("*.json"))]
    return pa.concat_tables([pq.read_table(folder / p) for p in parts], promote_options="default")


def logits_saes(root: Path, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """SAEs whose output logits are complete (their group carries the attribute): name -> attribute."""
    out = {}
    for sae in meta["saes"]:
        path = root / "logits" / sae["name"] / "zarr.json"
        if path.exists():
            attrs = json.loads(path.read_text()).get("attributes") or {}
            if LOGITS_ATTRIBUTE in attrs:
                out[sae["name"]] = dict(attrs[LOGITS_ATTRIBUTE])
    return out


def expected_arrays(root: Path, meta: dict[str, Any]) -> list[ArraySpec]:
    """Every array the spec says this store holds, from its root metadata and index attributes."""
    n_ctx, ctx_len, n_units = meta["n_ctx"], meta["ctx_len"], meta["n_units"]
    out = [ArraySpec(f"tokens/{n}", dt, (n_ctx, ctx_len), True, fill) for n, (dt, fill) in TOKENS.items()]
    for site in meta["sites"]:
        if site["stored"]:
            codecs = chain_codecs(site.get("compression", "none"), storage(site["dtype"]).itemsize)
            out.append(ArraySpec(f"activations/{site['name']}", site["dtype"], (n_ctx, ctx_len, site["d"]), True, codecs=codecs))
        merged = meta["stages"].get(site.get("stage", "extract"), {}).get("complete", False)
        for name, (unit_dt, merged_dt, tail) in SITE_STATS.items():
            out.append(ArraySpec(f"stats/sites/{site['name']}/units/{name}", unit_dt, (n_units, *tail(site["d"])), False))
            if merged:
                out.append(ArraySpec(f"stats/sites/{site['name']}/{name}", merged_dt, tail(site["d"]) or (1,), False))
    for sae in meta["saes"]:
        name, shape = sae["name"], (n_ctx, ctx_len, sae["code_cap"])
        if meta["format_version"] >= 3:
            ids = "uint16" if sae["d_sae"] <= 65536 else "uint32"
            out += [ArraySpec(f"codes/{name}/latent", ids, shape, True, 0, chain_codecs("shuffle-zstd", storage(ids).itemsize)),
                    ArraySpec(f"codes/{name}/value", sae["value_dtype"], shape, True, 0,
                              chain_codecs("shuffle-zstd", storage(sae["value_dtype"]).itemsize))]
        else:
            out += [ArraySpec(f"codes/{name}/idx", "int32", shape, True, -1),
                    ArraySpec(f"codes/{name}/val", sae["value_dtype"], shape, True, 0)]
        out.append(ArraySpec(f"codes/{name}/l0", "int32", (n_ctx, ctx_len), True))
        merged = meta["stages"].get(sae["stage"], {}).get("complete", False)
        for stat, (unit_dt, merged_dt, tail) in SAE_STATS.items():
            out.append(ArraySpec(f"stats/saes/{name}/units/{stat}", unit_dt, (n_units, *tail(sae["d_sae"])), False))
            if merged:
                out.append(ArraySpec(f"stats/saes/{name}/{stat}", merged_dt, tail(sae["d_sae"]) or (1,), False))
        plan = index_plan(root, name)
        if plan is not None:
            for b in range(plan["n_buckets"]):
                lo = b * plan["latents_per_bucket"]
                n_lat = min(lo + plan["latents_per_bucket"], plan["d_sae"]) - lo
                nnz = int(np.asarray(zarr.open_array(str(root / bucket(name, b, "offsets")), mode="r")[-1]))
                out.append(ArraySpec(bucket(name, b, "offsets"), "int64", (n_lat + 1,), False))
                if plan.get("block") is None:
                    out += [ArraySpec(bucket(name, b, "token"), "int64", (nnz,), False),
                            ArraySpec(bucket(name, b, "value"), plan["value_dtype"], (nnz,), False)]
                else:
                    out += [ArraySpec(bucket(name, b, "token_gap"), "int64", (nnz,), False, None, chain_codecs("shuffle-zstd", 8)),
                            ArraySpec(bucket(name, b, "value"), plan["value_dtype"], (nnz,), False, None,
                                      chain_codecs("shuffle-zstd", storage(plan["value_dtype"]).itemsize))]
            top, d_sae = plan.get("profile_top", 0), plan["d_sae"]
            out += [ArraySpec(f"index/{name}/profile/{a}", dt, (d_sae, top) if wide else (d_sae,), False)
                    for a, (dt, wide) in PROFILE.items() if top]
    for name, attrs in logits_saes(root, meta).items():
        d_sae = next(s["d_sae"] for s in meta["saes"] if s["name"] == name)
        out += [ArraySpec(f"logits/{name}/{a}", dt, (d_sae, attrs["k"]), False) for a, dt in LOGITS.items()]
    return out


def bucket(sae: str, b: int, name: str) -> str:
    return f"index/{sae}/b{b:05d}/{name}"


def index_plan(root: Path, sae: str) -> dict[str, Any] | None:
    path = root / "index" / sae / "zarr.json"
    if not path.exists():
        return None
    return dict(json.loads(path.read_text())["attributes"]["actstore_index"])


def check_store(root: Path) -> dict[str, tuple[str, str]]:
    """Check the store against the spec; return {array: (zarr dtype, logical dtype)} of every
    array checked. Raises AssertionError listing every difference."""
    meta = root_metadata(root)
    specs = expected_arrays(root, meta)
    problems: list[str] = []
    checked: dict[str, tuple[str, str]] = {}
    for spec in specs:
        if not (root / spec.path / "zarr.json").exists():
            problems.append(f"{spec.path}: missing")
            continue
        arr = zarr.open_array(str(root / spec.path), mode="r")
        attrs = dict(arr.attrs)
        found = {"dtype": str(arr.dtype), "shape": tuple(arr.shape), "logical_dtype": attrs.get("logical_dtype"),
                 "per_token": attrs.get("per_token")}
        want = {"dtype": str(storage(spec.logical)), "shape": spec.shape, "logical_dtype": spec.logical, "per_token": spec.per_token}
        if spec.fill is not None:
            found["fill"], want["fill"] = arr.fill_value, spec.fill
        for key in want:
            if found[key] != want[key]:
                problems.append(f"{spec.path}: {key} is {found[key]!r}, the spec says {want[key]!r}")
        extra = set(attrs) - ARRAY_ATTRIBUTES
        if extra:
            problems.append(f"{spec.path}: attributes {sorted(extra)} are not in the spec")
        problems += layout_problems(root, spec, meta["contexts_per_unit"])
        checked[spec.path] = (str(arr.dtype), str(attrs.get("logical_dtype")))
    problems += tokenizer_problems(root, meta) + sae_file_problems(root, meta)
    problems += unlisted_objects(root, meta, {s.path for s in specs})
    for sae in meta["saes"]:
        problems += explanation_problems(root, sae["name"])
    assert not problems, "store differs from STORE.md:\n" + "\n".join(problems)
    return checked


ZSTD = [("zstd", {"level": 0, "checksum": False})]


def layout_problems(root: Path, spec: ArraySpec, contexts_per_unit: int) -> list[str]:
    """The array's codec chain and shard size against the spec: ``bytes`` (little-endian) then the
    spec's bytes-to-bytes codecs, inside ``sharding_indexed`` (index: ``bytes``, ``crc32c``) when
    sharded; shards of ``contexts_per_unit`` contexts (per-token) or one row (per-unit)."""
    node = json.loads((root / spec.path / "zarr.json").read_text())
    codecs, shard = node["codecs"], node["chunk_grid"]["configuration"]["chunk_shape"]
    out = []
    if codecs[0]["name"] == "sharding_indexed":
        config = codecs[0]["configuration"]
        index = [c["name"] for c in config["index_codecs"]]
        if index != ["bytes", "crc32c"] or config["index_location"] != "end":
            out.append(f"{spec.path}: shard index {index} at {config['index_location']}, the spec says bytes, crc32c at end")
        codecs = config["codecs"]
    endian = {} if storage(spec.logical).itemsize == 1 else {"configuration": {"endian": "little"}}
    if codecs[0] != {"name": "bytes", **endian}:
        out.append(f"{spec.path}: first codec {codecs[0]}, the spec says bytes {endian}")
    chain = [(c["name"], c.get("configuration", {})) for c in codecs[1:]]
    want = ZSTD if spec.codecs is None else spec.codecs
    if chain != want:
        out.append(f"{spec.path}: codecs {chain}, the spec says {want}")
    if spec.per_token and shard[0] != contexts_per_unit:
        out.append(f"{spec.path}: shards of {shard[0]} contexts, the spec says {contexts_per_unit}")
    if not spec.per_token and spec.path.split("/")[-2] == "units" and shard[0] != 1:
        out.append(f"{spec.path}: {shard[0]} rows per chunk, the spec says one")
    return out


def unlisted_objects(root: Path, meta: dict[str, Any], arrays: set[str]) -> list[str]:
    """Objects in the store that the spec does not name."""
    groups = {"/".join(a.split("/")[:i]) for a in arrays for i in range(1, a.count("/") + 1)}
    with_attributes = {f"index/{s['name']}": "actstore_index" for s in meta["saes"]}
    with_attributes |= {f"logits/{name}": LOGITS_ATTRIBUTE for name in logits_saes(root, meta)}
    side_files = {meta["tokenizer"].get("file"), (meta["tokenizer"].get("chat_template") or {}).get("file")}
    side_files |= sae_files(meta)
    stages = {"tokens", "extract"} | {s["stage"] for s in meta["saes"]} | {s.get("stage", "extract") for s in meta["sites"]}
    stages |= {f"index-{s['name']}" for s in meta["saes"]} | {f"index-{s['name']}-map" for s in meta["saes"]}
    manifest = re.compile(r"_manifests/(?P<stage>[^/]+)/\d{8}\.json")
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "zarr.json" or rel in side_files or any(rel == f"{a}/zarr.json" or rel.startswith(f"{a}/c/") for a in arrays):
            continue
        group = rel[: -len("/zarr.json")] if rel.endswith("/zarr.json") else None
        if group is not None and (group in groups or group in with_attributes):
            node = json.loads(path.read_text())
            allowed = {with_attributes[group]} if group in with_attributes else set()
            if node["node_type"] != "group" or set(node.get("attributes") or {}) != allowed:
                out.append(f"{rel}: a {node['node_type']} with attributes {sorted(node.get('attributes') or {})}, the spec says {sorted(allowed)}")
            continue
        m = manifest.fullmatch(rel)
        if m and m["stage"] in stages:
            record = json.loads(path.read_text())
            if (record.get("stage"), record.get("unit")) != (m["stage"], int(path.stem)):
                out.append(f"{rel}: stage {record.get('stage')!r}, unit {record.get('unit')!r} differ from its name")
            continue
        if re.fullmatch(r"_runs/\d{4}-\d\d-\d\dT\d{6}\+0000-[0-9a-f]{8}\.json", rel):
            fields = set(json.loads(path.read_text()))
            if fields != RUN_FIELDS:
                out.append(f"{rel}: run record fields {sorted(fields ^ RUN_FIELDS)} differ from the spec")
            continue
        if re.fullmatch(r"documents/part-\d{6}\.parquet", rel):
            continue
        m = EXPLANATION_PART.fullmatch(rel)
        if m and m["sae"] in {s["name"] for s in meta["saes"]}:
            continue
        out.append(f"{rel}: not in the spec")
    return out


# -- decoding, as the spec says --------------------------------------------------------------

def done_units(root: Path, stage: str) -> list[int]:
    return sorted(int(p.stem) for p in (root / "_manifests" / stage).glob("*.json"))


def read(root: Path, path: str) -> np.ndarray:
    arr = zarr.open_array(str(root / path), mode="r")
    return view(np.asarray(arr[...]), str(arr.attrs["logical_dtype"]))


def documents(root: Path) -> Any:
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(p) for p in sorted((root / "documents").glob("part-*.parquet"))])


def postings(root: Path, sae: str, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat token, value) of one latent from its index bucket, ranked: value descending, ties by
    token ascending (blocks decoded as STORE.md says: prefix sums within each block, then each
    block ranked)."""
    plan = index_plan(root, sae)
    assert plan is not None and plan["complete"]
    b, i = divmod(latent, plan["latents_per_bucket"])
    offsets = read(root, bucket(sae, b, "offsets"))
    lo, hi = int(offsets[i]), int(offsets[i + 1])
    value = read(root, bucket(sae, b, "value"))[lo:hi]
    if plan.get("block") is None:
        return read(root, bucket(sae, b, "token"))[lo:hi], value
    gaps, size = read(root, bucket(sae, b, "token_gap"))[lo:hi], plan["block"]
    tokens, values = [], []
    for start in range(0, hi - lo, size):
        token, val = np.cumsum(gaps[start : start + size]), value[start : start + size]
        assert (np.diff(token) > 0).all(), "a block's tokens ascend"
        order = np.lexsort((token, -val.astype(np.float64)))
        tokens.append(token[order])
        values.append(val[order])
    if not tokens:
        return np.zeros(0, np.int64), value
    return np.concatenate(tokens), np.concatenate(values)


def codes(root: Path, sae: str, version: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids with -1 in empty slots, values) [tokens, code_cap] in either layout: in version 3,
    slot s holds a latent exactly when s < l0."""
    if version < 3:
        return read(root, f"codes/{sae}/idx"), read(root, f"codes/{sae}/val")
    latent, l0 = read(root, f"codes/{sae}/latent"), read(root, f"codes/{sae}/l0")
    full = np.arange(latent.shape[-1]) < l0[..., None]
    return np.where(full, latent.astype(np.int32), -1), read(root, f"codes/{sae}/value")


def profile_from_codes(root: Path, sae: str, latent: int) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int]]:
    """A latent's firings by (preceding token id or -1, token id), and the indexed tokens by the
    same key, from the tokens and codes as "Token profiles" defines them."""
    flags = read(root, "tokens/flags")
    ids = read(root, "tokens/ids").astype(np.int64)
    idx = codes(root, sae, root_metadata(root)["format_version"])[0]
    excluded = (flags & index_plan(root, sae)["exclude_flags"]) != 0  # type: ignore[index]
    prev = np.full(ids.shape, -1, np.int64)
    prev[:, 1:] = np.where(excluded[:, :-1], -1, ids[:, :-1])
    keys = np.stack([prev[~excluded], ids[~excluded]], 1)
    fires = (idx == latent).any(-1)[~excluded]
    return _counted(keys[fires]), _counted(keys)


def _counted(keys: np.ndarray) -> dict[tuple[int, int], int]:
    if keys.size == 0:
        return {}
    found, counts = np.unique(keys, axis=0, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(found, counts, strict=True)}


def occurrences_from_codes(root: Path, sae: str, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """The same list derived from the token-major codes: tokens whose flags intersect the index's
    ``exclude_flags`` left out, value descending, ties by token ascending."""
    plan = index_plan(root, sae)
    assert plan is not None
    flags = read(root, "tokens/flags").reshape(-1)
    ids, vals = codes(root, sae, root_metadata(root)["format_version"])
    idx, val = ids.reshape(flags.size, -1), vals.reshape(flags.size, -1)
    rows, slots = np.nonzero((idx == latent) & ((flags & plan["exclude_flags"]) == 0)[:, None])
    values = val[rows, slots]
    order = np.lexsort((rows, -values.astype(np.float64)))
    return rows[order].astype(np.int64), values[order]
