"""The explanations table: committed parts only, append-only, S3; labels, current view, search."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

import actstore
from actstore.cli import main
from actstore.errors import ConfigError
from actstore.explain.table import (
    CURRENT_SCHEMA,
    EXPLANATION_SCHEMA,
    PartCache,
    append_explanations,
    current_explanations,
    human_row,
    scan_explanations,
)
from actstore.query.tokens import encode_text
from actstore.store._fs import Location, SideFiles
from actstore.store.codes import read_codes
from tests.coded_store import SAE


def _auto(latent: int, text: str, detection: float, fuzzing: float, *, parsed: bool = True) -> dict:
    return {"latent": latent, "text": text if parsed else None, "kind": "auto", "author": "m", "parsed": parsed,
            "raw": text, "key": f"k{latent}{text}", "created": "2026-01-01T00:00:00+00:00",
            "detection_balanced_accuracy": detection, "fuzzing_balanced_accuracy": fuzzing,
            "detection_informative": True, "fuzzing_informative": True}


def test_table_on_s3_reads_only_committed_parts(s3_endpoint: str, s3_bucket: str) -> None:
    location = Location(f"s3://{s3_bucket}/store", {"endpoint_url": s3_endpoint})
    store = SimpleNamespace(files=SideFiles(location))
    first = append_explanations(store, "sae", [_auto(1, "dates", 0.9, 0.8), _auto(1, "numbers", 0.6, 0.7)])
    second = append_explanations(store, "sae", [_auto(2, "commas", 0.55, 0.5), _auto(2, "junk", 0, 0, parsed=False)])
    assert first != second
    store.files.write_bytes("explanations/sae/part-orphan.parquet", b"a writer died before committing")
    frame = scan_explanations(store, "sae").collect()
    assert frame.schema == EXPLANATION_SCHEMA and frame.height == 4
    append_explanations(store, "sae", [human_row(2, "the comma", author="ann")])
    current = current_explanations(scan_explanations(store, "sae"))
    assert current.schema == CURRENT_SCHEMA
    assert current.select("latent", "text", "kind").rows() == [(1, "dates", "auto"), (2, "the comma", "human")]
    assert current["score"][0] == pytest.approx(0.85)
    # what "current" means without informative scores: a profile beats an unscored answer, not the newest row
    unscored = {**_auto(3, "newest words", 0.5, 0.5), "created": "2026-01-03T00:00:00+00:00",
                "detection_informative": False, "fuzzing_informative": False}
    profile = {**_auto(3, 'the token " x"', 0.5, 0.5), "kind": "profile", "author": "token-profile",
               "detection_informative": False, "fuzzing_informative": False}
    append_explanations(store, "sae", [unscored, profile])
    third = current_explanations(scan_explanations(store, "sae")).filter(pl.col("latent") == 3).row(0, named=True)
    assert (third["kind"], third["score"]) == ("profile", None)
    append_explanations(store, "sae", [{**unscored, "key": "k3b", "text": "scored words", "fuzzing_informative": True,
                                        "fuzzing_auroc": 0.7}])
    third = current_explanations(scan_explanations(store, "sae")).filter(pl.col("latent") == 3).row(0, named=True)
    assert (third["text"], third["score"]) == ("scored words", pytest.approx(0.7))  # its informative judge only
    with pytest.raises(ConfigError, match="unknown explanation columns"):
        append_explanations(store, "sae", [{"latent": 1, "api_key": "x"}])


def test_a_cache_reads_each_committed_part_once(tmp_path: Path) -> None:
    store = SimpleNamespace(files=SideFiles(Location(str(tmp_path))))
    first = append_explanations(store, "sae", [_auto(1, "dates", 0.9, 0.8)])
    cache = PartCache()
    assert scan_explanations(store, "sae", cache=cache).collect()["text"].to_list() == ["dates"]
    (tmp_path / f"explanations/sae/part-{first}.parquet").unlink()  # read already: not read again
    append_explanations(store, "sae", [human_row(2, "the comma", author="ann")])
    assert sorted(scan_explanations(store, "sae", cache=cache).collect()["text"].to_list()) == ["dates", "the comma"]
    with pytest.raises(FileNotFoundError):  # without the cache every part is read
        scan_explanations(store, "sae")


def test_labels_from_python_and_cli_then_search(explain_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(explain_store)
    latents = actstore.open(url).sae(SAE)
    latents.label(5, "closing parenthesis of a call", author="ann")
    assert main(["label", url, "--sae", SAE, "--latent", "7", "the word fox in animal sentences", "--author", "bob"]) == 0
    latents.label(5, "closing parenthesis after an argument", author="ann")  # a later label wins
    table = latents.explanations()
    assert table.filter(pl.col("latent") == 5).height == 2 and set(table["kind"]) == {"human"}
    current = latents.explanations(current=True)
    assert current.filter(pl.col("latent") == 5)["text"].item() == "closing parenthesis after an argument"
    hits = latents.search("fox animal")
    assert hits["latent"][0] == 7 and hits["kind"][0] == "human" and hits["density"][0] is not None
    assert latents.search("parenthesis")["latent"].to_list() == [5]  # one row per latent
    assert latents.search("zebra").is_empty()
    latents.label(9, "the letter x in algebra", author="ann")
    found = latents.search("x")  # one-character words count; token profiles holding "x" match too
    assert found.filter(pl.col("kind") == "human")["latent"].to_list() == [9] and set(found["kind"]) <= {"human", "profile"}
    capsys.readouterr()
    assert main(["search", url, "--sae", SAE, "fox", "--json"]) == 0
    assert '"latent": 7' in capsys.readouterr().out
    with pytest.raises(ConfigError, match="out of range"):
        latents.label(10_000, "nope", author="ann")
    assert main(["label", url, "--sae", SAE, "--latent", "1", "  "]) == 2  # a clear error, nothing written
    assert latents.explanations(latent=1).is_empty()


def test_search_by_example_finds_a_latent_that_fires_there(explain_store: Path) -> None:
    store = actstore.open(str(explain_store))
    latents = store.sae(SAE)
    text = " sparse autoencoder"
    places = store.find_tokens(text, limit=None, window=0)
    assert places.height > 0
    hits = latents.search_by_example(text, top=5)
    assert hits.height > 0 and hits["evidence"].is_sorted(descending=True)
    best = int(hits["latent"][0])
    n = len(encode_text(store, text))
    idx = read_codes(store, SAE, slice(None), values=False).idx.reshape(-1, 20)
    ctx_len = store.meta.ctx_len
    flat = [c * ctx_len + p + j for c, p in zip(places["ctx"], places["pos"], strict=True) for j in range(n)]
    assert np.isin(best, idx[flat]).item()  # it really fires on the text's tokens
    assert store.find_tokens(" zebra quokka", limit=1).is_empty()
    assert latents.search_by_example(" zebra quokka").is_empty()  # nowhere in the store: no latents
