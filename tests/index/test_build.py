"""The feature-major index equals a brute-force computation from the token-major codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.cluster.index import run_index
from actstore.index.layout import bucket_array, index_stage, map_stage
from actstore.index.postings import descending_key
from actstore.index.reference import occurrences_reference
from actstore.store.layout import FLAG_BOS
from tests.coded_store import BLOCK, BUCKET_NNZ, SAE
from tests.helpers import store_hashes

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _index_as_lists(store, latents_: range | None = None) -> dict[int, list[tuple[int, float]]]:
    latents = store.sae(SAE)
    out = {}
    for latent in latents_ or range(latents.info.d_sae):
        tokens, values = latents.postings(latent)
        if tokens.size:
            out[latent] = list(zip(tokens.tolist(), values.tolist(), strict=True))
    return out


def _index_hashes(path: Path) -> dict[str, str]:
    return {k: v for k, v in store_hashes(actstore.open(str(path))).items() if k.startswith("index/")}


def test_index_equals_brute_force(coded_store: Path) -> None:
    store = actstore.open(str(coded_store))
    plan = store.sae(SAE).index
    assert plan.complete and plan.n_buckets > 2 and plan.units == list(range(store.meta.n_units))
    reference = occurrences_reference(store, SAE)
    assert _index_as_lists(store) == reference  # every occurrence, same order
    assert plan.nnz == sum(len(v) for v in reference.values())
    # BOS (position 0 of every context) is never indexed, and the codes do hold BOS latents
    flags = store.read("tokens/flags", slice(None)).reshape(-1)
    bos = np.flatnonzero(flags & FLAG_BOS)
    indexed = np.concatenate([store.sae(SAE).postings(lat)[0] for lat in reference])
    assert not np.isin(indexed, bos).any()
    assert (store.read(f"codes/{SAE}/l0", slice(None)).reshape(-1)[bos] > 0).any()
    # staging is gone once the build completes
    assert not (coded_store / f"_staging/index/{SAE}").exists()


def test_descending_key_orders_any_float() -> None:
    values = np.array([0.5, -1.0, 3.0, 0.0, -0.0, 1e-30, -7.5, np.inf], np.float32)
    order = np.argsort(descending_key(values), kind="stable")
    assert values[order].tolist() == sorted(values.tolist(), reverse=True)


def test_interrupted_build_resumes_to_the_same_bytes(coded_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy)
    before = _index_hashes(coded_store)
    store = actstore.open(str(copy), mode="r+")
    plan = store.sae(SAE).index
    # as if killed mid-reduce: two buckets unwritten, the plan not yet complete, staging back
    group = store.group[f"index/{SAE}"]
    group.attrs["actstore_index"] = {**dict(group.attrs["actstore_index"]), "complete": False, "nnz": None}
    for unit in plan.units:
        store.files.remove(f"_manifests/{map_stage(SAE)}/{unit:08d}.json")
    for bucket in (0, plan.n_buckets - 1):
        store.files.remove(f"_manifests/{index_stage(SAE)}/{bucket:08d}.json")
        shutil.rmtree(copy / bucket_array(SAE, bucket, ""))
    store.files.remove(f"_manifests/{index_stage(SAE)}/{1:08d}.json")  # a bucket written but not committed
    resumed = run_index(str(copy), SAE, bucket_nnz=BUCKET_NNZ, block=BLOCK)
    assert resumed.complete and _index_hashes(copy) == before


def test_index_on_a_store_being_written_covers_committed_units(coded_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy)
    last = actstore.open(str(copy)).meta.n_units - 1
    (copy / f"_manifests/extract/{last:08d}.json").unlink()  # the last unit is not committed yet
    plan = run_index(str(copy), SAE, bucket_nnz=BUCKET_NNZ, block=BLOCK)
    store = actstore.open(str(copy))
    assert plan.units == list(range(last))
    assert _index_as_lists(store) == occurrences_reference(store, SAE)


def test_index_on_s3(coded_store: Path, s3_endpoint: str, s3_bucket: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    # what indexing and top_k read: metadata, token arrays, the codes, `fired`, the tokenizer, manifests
    for part in ("zarr.json", "tokens/ids", "tokens/doc", "tokens/flags", f"codes/{SAE}/latent", f"codes/{SAE}/value", f"codes/{SAE}/l0",
                 f"stats/saes/{SAE}/fired", "tokenizer", "_manifests/tokens", "_manifests/extract"):
        fs.put(str(coded_store / part), f"{s3_bucket}/store/{part}", recursive=True)
    url, opts = f"s3://{s3_bucket}/store", {"endpoint_url": s3_endpoint}
    run_index(url, SAE, storage_options=opts, bucket_nnz=BUCKET_NNZ, block=BLOCK)
    remote, local = actstore.open(url, storage_options=opts), actstore.open(str(coded_store))
    some = range(0, local.sae(SAE).info.d_sae, 9)
    assert _index_as_lists(remote, some) == _index_as_lists(local, some)
    latent = int(local.sae(SAE).density().sort("count")["latent"][-1])
    assert remote.sae(SAE).top_k(latent, k=5).equals(local.sae(SAE).top_k(latent, k=5))


@pytest.mark.parametrize("split", ["dense latents", "whole latents"])
def test_buckets_larger_than_memory_are_reduced_in_slices(coded_store: Path, tmp_path: Path, monkeypatch, split: str) -> None:
    """Run here, without Ray, with chunks of 16 and shards of 64 and a memory limit below every
    bucket's size, so each is reduced in slices: of 40 entries, dense latents split by value, or
    of whole latents (a limit over 8x the largest latent); blocks cross slices, arrays span
    shards; the postings still equal the brute force, and the token profiles, counted group of
    units by group of units, those of the build in one piece."""
    from actstore.index import reduce
    from actstore.index.build import map_unit, plan_index
    from actstore.index.layout import INDEX_ATTRIBUTE, index_group
    from actstore.index.profile import create_profile_arrays, read_profile

    monkeypatch.setattr(reduce, "CHUNK", 16)
    monkeypatch.setattr(reduce, "SHARD", 64)
    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy, ignore=shutil.ignore_patterns("index", "_manifests"))
    shutil.copytree(coded_store / "_manifests", copy / "_manifests", ignore=shutil.ignore_patterns("index-*"))
    store = actstore.open(str(copy), mode="r+")
    limit = 40 if split == "dense latents" else 8 * int(store.sae(SAE).density()["count"].max()) + 8
    plan = plan_index(store, SAE, bucket_nnz=2000 if split == "dense latents" else 10**6, block=BLOCK)
    store.group.require_group(index_group(SAE)).attrs[INDEX_ATTRIBUTE] = plan.model_dump(mode="json")
    create_profile_arrays(store, plan)
    counts = np.array([map_unit(store, plan, u) for u in plan.units])
    starts = np.cumsum(counts, axis=1) - counts
    sizes = [reduce.reduce_bucket(store, plan, b, np.stack([starts[:, b], counts[:, b]], 1), limit=limit)
             for b in range(plan.n_buckets)]
    assert min(sizes) > limit  # every bucket in slices, its spill objects removed once written
    assert not any((copy / f"_staging/index/{SAE}/{plan.build_id}").glob("b*-*.bin"))
    store.group[index_group(SAE)].attrs[INDEX_ATTRIBUTE] = plan.model_copy(update={"nnz": sum(sizes), "complete": True}).model_dump(mode="json")
    assert len(list((copy / bucket_array(SAE, 0, "token_gap") / "c").iterdir())) > 1  # several shards
    fresh = actstore.open(str(copy))
    assert _index_as_lists(fresh) == occurrences_reference(fresh, SAE)
    ours, whole = read_profile(fresh, SAE, slice(None)), read_profile(actstore.open(str(coded_store)), SAE, slice(None))
    for name in ours.keys() - {"token_corpus", "bigram_corpus"}:  # those the driver writes after the reduces
        assert np.allclose(ours[name], whole[name], rtol=1e-12), name
