"""Store metadata, format versions and unit visibility."""

import numpy as np
import pytest
import zarr

import actstore
from actstore.store._fs import Location, redact_storage_options
from actstore.store.layout import TOKEN_ARRAYS, UnitGrid, create_unit_array, token_array
from actstore.store.metadata import ATTRIBUTE, IngestSummary, RootMetadata, StageInfo, TokenizerInfo
from actstore.store.store import TOKENS_STAGE, Store


def _meta(**changes) -> RootMetadata:
    base = RootMetadata(
        actstore_version="test", created="2026-01-01T00:00:00+00:00",
        tokenizer=TokenizerInfo(source={"id": "t"}, name_or_path="t", vocab_size=10, bos_token_id=2, eos_token_id=1, pad_token_id=0),
        ctx_len=4, contexts_per_unit=2, n_ctx=5, n_units=3, packing="pack", separator="eos",
        ingest=IngestSummary(n_files=1, n_documents=1, n_tokens=10, skipped_empty=0, repaired_utf8=0, truncated_by_cap=False),
        stages={TOKENS_STAGE: StageInfo(units_total=3)},
    )
    return base.with_changes(**changes)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.create(Location(str(tmp_path / "s")), _meta())
    for name, (dtype, fill) in TOKEN_ARRAYS.items():
        create_unit_array(s.group, token_array(name), UnitGrid(5, 4, 2), (), dtype, fill_value=fill)
    return s


def test_metadata_round_trips(store: Store) -> None:
    again = actstore.open(store.location.url)
    assert again.meta == store.meta


def test_unknown_format_version_is_refused_clearly(store: Store) -> None:
    group = zarr.open_group(store.location.url, mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    group.attrs[ATTRIBUTE] = {**raw, "format_version": 99}
    with pytest.raises(actstore.UnsupportedFormatError, match="format version 99.*reads versions 1, 2, 3"):
        actstore.open(store.location.url)


def test_missing_store_and_foreign_group(tmp_path) -> None:
    with pytest.raises(actstore.StoreNotFoundError):
        actstore.open(str(tmp_path / "nothing"))
    zarr.open_group(str(tmp_path / "plain"), mode="w")
    with pytest.raises(FileNotFoundError, match="without actstore metadata"):
        actstore.open(str(tmp_path / "plain"))


def test_create_refuses_an_existing_store(store: Store) -> None:
    with pytest.raises(actstore.StoreExistsError):
        Store.create(store.location, _meta())


def test_readers_see_only_done_units(store: Store) -> None:
    store.array(token_array("ids"))[0:2] = np.full((2, 4), 7, np.int32)
    with pytest.raises(actstore.UnitNotDoneError):
        store.tokens(slice(0, 2))  # written but not committed
    store.manifests.commit(TOKENS_STAGE, 0, {})
    assert (store.tokens(slice(0, 2))["ids"] == 7).all()
    with pytest.raises(actstore.UnitNotDoneError):
        store.tokens(slice(0, 3))  # reaches into unit 1
    info = store.info()
    assert (info.units_done, info.units_total, info.complete) == (1, 3, False)


def test_scattered_contexts_read_alike_into_a_reused_buffer(store: Store) -> None:
    ids = np.arange(5 * 4, dtype=np.int32).reshape(5, 4)
    store.array(token_array("ids"))[:] = ids
    for unit in range(3):
        store.manifests.commit(TOKENS_STAGE, unit, {})
    path = token_array("ids")
    assert (store.read_contexts(path, np.array([3, 0, 4])) == ids[[3, 0, 4]]).all()  # any order, across shards
    buffer = np.full((6, 4), -1, np.int32)
    for contexts in ([0, 2, 3], [1], [0, 1, 2, 3, 4]):  # runs across shards, one context, all
        got = store.read_contexts(path, np.array(contexts), out=buffer)
        assert np.shares_memory(got, buffer) and (got == ids[contexts]).all() and (buffer[: len(contexts)] == ids[contexts]).all()
    with pytest.raises(ValueError, match="increasing contexts"):
        store.read_contexts(path, np.array([3, 0]), out=buffer)
    with pytest.raises(ValueError, match="int32"):
        store.read_contexts(path, np.array([0, 1]), out=np.empty((2, 4), np.int64))


def test_secrets_are_redacted() -> None:
    opts = {"key": "AKIA", "secret": "s3cr3t", "endpoint_url": "http://x", "client_kwargs": {"region_name": "r"}}
    red = redact_storage_options(opts)
    assert red["endpoint_url"] == "http://x" and red["client_kwargs"] == {"region_name": "r"}
    assert "AKIA" not in str(red) and "s3cr3t" not in str(red)
    assert "s3cr3t" not in repr(Location("s3://b/p", {"secret": "s3cr3t"}))


def test_activation_reads_respect_the_extract_stage(store: Store) -> None:
    from actstore.store.layout import activation_array

    create_unit_array(store.group, activation_array("blocks.0.hook_resid_post"), UnitGrid(5, 4, 2), (3,), "bfloat16")
    with pytest.raises(actstore.UnitNotDoneError):
        store.read(activation_array("blocks.0.hook_resid_post"), slice(0, 2))
    store.manifests.commit("extract", 0, {})
    assert store.read(activation_array("blocks.0.hook_resid_post"), slice(0, 2)).shape == (2, 4, 3)
    with pytest.raises(actstore.UnitNotDoneError):
        store.read(activation_array("blocks.0.hook_resid_post"), 4)  # context 4 is in unit 2
