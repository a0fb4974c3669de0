"""Ingestion on the real local Ray cluster: exactness, worker-count independence, S3, bad input."""

from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

import actstore
from actstore.cli import main as cli
from actstore.cluster.ingest import run_ingest
from actstore.config import IngestConfig
from actstore.store.layout import FLAG_BOS, FLAG_EOS, TOKEN_ARRAYS, token_array
from tests.conftest import start_moto
from tests.helpers import sample_records, write_jsonl

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _config(url: str, paths: list[str], tokenizer: Path, **context) -> IngestConfig:
    return IngestConfig.model_validate({
        "store": {"url": url},
        "corpus": {"paths": paths, "key_field": "id", "metadata_fields": ["lang", "n"]},
        "tokenizer": {"id": str(tokenizer)},
        "context": {"ctx_len": 16, "contexts_per_unit": 3, **context},
    })


@pytest.fixture
def corpus(tmp_path) -> list[str]:
    write_jsonl(tmp_path / "a.jsonl", sample_records(30, seed=1))
    write_jsonl(tmp_path / "b.jsonl.gz", [*sample_records(20, seed=2), {"text": "", "id": "empty"}], compression="gzip")
    (tmp_path / "c.txt").write_text("a plain text document.\n")
    return [str(tmp_path / "*.jsonl*"), str(tmp_path / "c.txt")]


def _array_hashes(store: actstore.Store) -> dict[str, str]:
    return {n: hashlib.sha256(np.ascontiguousarray(store.read(token_array(n), slice(None))).tobytes()).hexdigest()
            for n in TOKEN_ARRAYS}


def _check_exact(store: actstore.Store, tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    t = store.tokens(slice(None))
    docs = store.documents().collect()
    texts = {}
    for path in sorted({*docs["source"]}):
        if path.endswith(".txt"):
            texts[(path, 0)] = Path(path).read_text()
        else:
            import gzip
            raw = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else Path(path).read_bytes()
            for row, line in enumerate(raw.decode().splitlines()):
                texts[(path, row)] = json.loads(line)["text"]
    assert docs["doc"].to_list() == list(range(len(docs)))
    for row in docs.iter_rows(named=True):
        m = (t["doc"] == row["doc"]) & (t["flags"] == 0)
        stored = t["ids"][m][np.argsort(t["pos"][m])]
        expected = tok(texts[(row["source"], row["row"])], add_special_tokens=False)["input_ids"]
        assert stored.tolist() == expected[: row["n_tokens_stored"]]
    assert (t["flags"][:, 0] == FLAG_BOS).all() and (t["ids"][:, 0] == tok.bos_token_id).all()
    assert int((t["flags"] == 0).sum()) == store.meta.ingest.n_tokens == int(docs["n_tokens_stored"].sum())


def test_ingest_is_exact_and_independent_of_worker_count(tmp_path, corpus, tiny_tokenizer) -> None:
    one = run_ingest(_config(str(tmp_path / "one"), corpus, tiny_tokenizer), workers=1)
    two = run_ingest(_config(str(tmp_path / "two"), corpus, tiny_tokenizer), workers=2)
    _check_exact(one, tiny_tokenizer)
    assert _array_hashes(one) == _array_hashes(two)
    assert one.documents().collect().drop("source").equals(two.documents().collect().drop("source"))
    meta = one.meta
    assert meta.ingest.n_documents == 51 and meta.ingest.skipped_empty == 1 and meta.ingest.n_files == 3
    assert meta.stages["tokens"].complete and one.info().complete
    docs = one.documents().collect()
    assert {"doc", "source", "row", "key", "n_tokens", "n_tokens_stored", "lang", "n"} <= set(docs.columns)
    assert not (tmp_path / "one" / "_staging").exists()


def test_document_packing_and_token_cap(tmp_path, corpus, tiny_tokenizer) -> None:
    store = run_ingest(_config(str(tmp_path / "s"), corpus, tiny_tokenizer, packing="document", max_tokens=300))
    _check_exact(store, tiny_tokenizer)
    t = store.tokens(slice(None))
    assert store.meta.ingest.n_tokens == 300 and store.meta.ingest.truncated_by_cap
    for row in range(t["doc"].shape[0]):
        assert len(set(t["doc"][row][t["doc"][row] >= 0].tolist())) == 1
    assert (t["flags"] == FLAG_EOS).sum() == store.meta.ingest.n_documents


def test_tokenizing_stops_at_the_cap(tmp_path, tiny_tokenizer) -> None:
    # a bad line after the first batch of documents, and a bad file after the first file: neither
    # is read once max_tokens is reached (one stager, so files go in order)
    good = "".join(json.dumps(r) + "\n" for r in sample_records(300, seed=4))
    (tmp_path / "a.jsonl").write_text(good + "{oops\n")
    (tmp_path / "b.jsonl").write_text("{oops\n")
    config = _config(str(tmp_path / "s"), [str(tmp_path / "*.jsonl")], tiny_tokenizer, max_tokens=200)
    store = run_ingest(config, workers=1)
    assert store.meta.ingest.n_tokens == 200 and store.meta.ingest.n_files == 1
    with pytest.raises(actstore.CorpusError, match=r"a\.jsonl:301: not valid JSON"):  # the proof: uncapped, it is read
        run_ingest(_config(str(tmp_path / "t"), [str(tmp_path / "a.jsonl")], tiny_tokenizer), workers=1)


def test_rerun_is_a_no_op_and_changed_settings_are_refused(tmp_path, corpus, tiny_tokenizer) -> None:
    url = str(tmp_path / "s")
    first = run_ingest(_config(url, corpus, tiny_tokenizer))
    hashes = _array_hashes(first)
    again = run_ingest(_config(url, corpus, tiny_tokenizer))
    assert _array_hashes(again) == hashes
    with pytest.raises(actstore.StoreMismatchError, match=r"context\.ctx_len: store has 16, now 32"):
        run_ingest(_config(url, corpus, tiny_tokenizer, ctx_len=32))


def test_ingest_into_s3_through_s3fs(tmp_path, corpus, tiny_tokenizer, s3_endpoint, s3_bucket) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for path in sorted(Path(corpus[0]).parent.iterdir()):
        fs.put_file(str(path), f"{s3_bucket}/corpus/{path.name}")
    opts = {"endpoint_url": s3_endpoint}
    config = IngestConfig.model_validate({
        "store": {"url": f"s3://{s3_bucket}/runs/r1", "storage_options": opts},
        "corpus": {"paths": [f"s3://{s3_bucket}/corpus/*.jsonl*", f"s3://{s3_bucket}/corpus/c.txt"],
                   "storage_options": opts, "key_field": "id", "metadata_fields": ["lang", "n"]},
        "tokenizer": {"id": str(tiny_tokenizer)},
        "context": {"ctx_len": 16, "contexts_per_unit": 3},
    })
    remote = run_ingest(config)
    local = run_ingest(_config(str(tmp_path / "local"), corpus, tiny_tokenizer))
    assert _array_hashes(remote) == _array_hashes(local)
    reopened = actstore.open(f"s3://{s3_bucket}/runs/r1", storage_options=opts)
    assert reopened.info().complete and reopened.info().n_tokens == local.meta.ingest.n_tokens
    assert reopened.documents().collect()["n_tokens_stored"].to_list() == local.documents().collect()["n_tokens_stored"].to_list()


def test_wrong_s3_credentials_fail_before_work(tmp_path, corpus, tiny_tokenizer) -> None:
    proc, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # this server checks credentials
    try:
        config = _config("s3://bucket-x/run", corpus, tiny_tokenizer)
        config = config.model_copy(update={"store": config.store.model_copy(update={
            "storage_options": {"endpoint_url": endpoint, "key": "AKIAWRONG", "secret": "wrong-secret"}})})
        with pytest.raises(actstore.StorageAccessError, match="access denied") as err:
            run_ingest(config)
        assert "wrong-secret" not in str(err.value)
    finally:
        proc.terminate()


def test_missing_bucket(corpus, tiny_tokenizer, s3_endpoint) -> None:
    config = _config("s3://no-such-bucket/run", corpus, tiny_tokenizer)
    config = config.model_copy(update={"store": config.store.model_copy(update={"storage_options": {"endpoint_url": s3_endpoint}})})
    with pytest.raises(actstore.StorageAccessError, match="does not exist"):
        run_ingest(config)


def test_unknown_tokenizer_and_empty_corpus(tmp_path, corpus, tiny_tokenizer) -> None:
    bad = IngestConfig.model_validate({**_config(str(tmp_path / "s"), corpus, tiny_tokenizer).model_dump(),
                                       "tokenizer": {"id": str(tmp_path / "no-tokenizer-here")}})
    with pytest.raises(actstore.TokenizerError, match="cannot load tokenizer"):
        run_ingest(bad)
    assert not (tmp_path / "s").exists() or not actstore.Store.exists(actstore.store.store.Location(str(tmp_path / "s")))
    write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}, {"text": ""}])
    with pytest.raises(actstore.CorpusError, match="holds no tokens.*2 documents were empty"):
        run_ingest(_config(str(tmp_path / "e"), [str(tmp_path / "empty.jsonl")], tiny_tokenizer))


def test_bad_line_in_a_worker_names_file_and_line_and_leaves_no_staging(tmp_path, tiny_tokenizer) -> None:
    good, path = tmp_path / "a-good.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(codecs.BOM_UTF8 + b'{"text": "a file saved with a byte-order mark"}\n')
    path.write_text('{"text": "fine"}\n{oops\n')
    config = _config(str(tmp_path / "s"), [str(good), str(path)], tiny_tokenizer)
    with pytest.raises(actstore.CorpusError, match=r"bad\.jsonl:2: not valid JSON"):
        run_ingest(config, workers=1)  # one worker: the good file is staged before the bad one fails
    assert not actstore.Store.exists(actstore.store.store.Location(str(tmp_path / "s")))
    assert not (tmp_path / "s" / "_staging").exists()  # nothing of the failed attempt is left
    path.write_text('{"text": "fine"}\n')
    store = run_ingest(config, workers=1)
    assert store.meta.ingest.stripped_bom == 1 and store.meta.ingest.n_documents == 2


def test_cli_ingest_and_info_json(tmp_path, corpus, tiny_tokenizer, capsys) -> None:
    cfg = tmp_path / "ingest.json"
    cfg.write_text(_config(str(tmp_path / "cli"), corpus, tiny_tokenizer).model_dump_json())
    assert cli(["ingest", str(cfg), "-q", "--store", str(tmp_path / "cli2")]) == 0
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "cli2"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] is True and info["units_done"] == info["units_total"] > 0
    assert info["n_tokens"] > 0 and info["bytes"] > 0
    assert cli(["info", str(tmp_path / "nothing")]) == 2
    assert "no actstore store" in capsys.readouterr().err
