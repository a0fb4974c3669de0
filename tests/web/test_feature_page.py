"""The feature page's parts and the server's cache on the planted store (Starlette's test client):
the true top k, labels on every latent id, exact co-firing, similar decoder directions, document
names, the corpus search's total, refused parameters (NaN, infinities, huge numbers), and pages
answered again from the cache until a label changes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

import actstore
from actstore.query.tokens import encode_text, find_sequences
from actstore.web.app import create_app
from tests.planted_store import ALWAYS, PAIR_A, PAIR_B, PLANTED, RLO_LABEL, SPLIT, TWIN_A, TWIN_B


@pytest.fixture(scope="module")
def client(planted_store: Path) -> TestClient:
    return TestClient(create_app(str(planted_store)))


@pytest.fixture(scope="module")
def latents(planted_store: Path):
    return actstore.open(str(planted_store)).sae(PLANTED)


def test_feature_page_parts(client: TestClient, latents) -> None:
    got = client.get(f"/api/sae/{PLANTED}/latent/{SPLIT}", params={"k": 12, "window": 3}).json()
    top = latents.top_k(SPLIT, k=12, window=3)
    assert got["top"] == top.to_dicts() and len(got["top"]) == 12 and got["per_doc"] == 0  # the true top 12
    assert len({r["doc"] for r in got["top"]}) < 12  # several from one document
    one = client.get(f"/api/sae/{PLANTED}/latent/{SPLIT}", params={"k": 12, "per_doc": 1}).json()["top"]
    assert len({r["doc"] for r in one}) == len(one) == latents.top_k(SPLIT, k=12, per_doc=1).height
    assert {got["documents"][str(r["doc"])]["name"] for r in got["top"]} <= {f"doc-{i}" for i in range(30)}

    pair = client.get(f"/api/sae/{PLANTED}/latent/{PAIR_A}").json()
    cofiring = pair["cofiring"]
    assert cofiring["exact"] and cofiring["counted"] == cofiring["occurrences"] == pair["stats"]["count"]
    assert [{k: r[k] for k in ("latent", "together", "count", "jaccard")} for r in cofiring["rows"]] == \
        latents.cofiring(PAIR_A, top=20).to_dicts()
    labels = {r["latent"]: r["label"] for r in cofiring["rows"]}
    assert labels[PAIR_B] is None and labels[ALWAYS] == RLO_LABEL + " \x1b[2J"  # every latent id with its current label
    twin = client.get(f"/api/sae/{PLANTED}/latent/{TWIN_A}", params={"similar": 3}).json()["similar"]
    assert twin["missing"] is None and twin["rows"][0]["latent"] == TWIN_B and len(twin["rows"]) == 3
    assert twin["rows"][0]["cosine"] > 0.95 and "label" in twin["rows"][0]
    assert "actstore logits" in pair["logits_missing"]  # no model for this store: the page says what to run

    page = client.get(f"/sae/{PLANTED}/latent/{PAIR_A}").text
    assert '<span class="ctl" title="U+202E RIGHT-TO-LEFT OVERRIDE">RLO</span>evil.exe' in page  # shown, not obeyed
    assert "\u202e" not in page and "\x1b" not in page
    assert "exact: counted over all" in page and "Similar latents" in page


def test_corpus_search_counts_every_match_and_names_documents(client: TestClient, latents) -> None:
    store = latents.store
    found = find_sequences(store, [(" await", encode_text(store, " await"))], limit=5, window=12)
    got = client.get("/api/search", params={"text": " await", "limit": 5}).json()
    assert got["total"] == found.total > 5 and got["matches"] == found.matches.to_dicts()
    assert all(got["documents"][str(m["doc"])]["name"].startswith("doc-") for m in got["matches"])
    page = client.get("/search", params={"text": " await", "limit": 5}).text
    assert f"{found.total} matches for" in page and "showing the first 5" in page and ">doc-" in page
    text = "(url):\n    data"  # a newline is part of the text searched
    multi = client.get("/api/search", params={"text": text}).json()
    assert multi["total"] == find_sequences(store, [(text, encode_text(store, text))]).total > 0


@pytest.mark.parametrize(("path", "message"), [
    (f"/api/sae/{PLANTED}?min_density=nan", "min_density must be a finite number, got nan"),
    (f"/api/sae/{PLANTED}?min_density=inf", "min_density must be a finite number"),
    (f"/api/sae/{PLANTED}?max_score=-inf", "max_score must be a finite number"),
    (f"/api/sae/{PLANTED}?page=2000000", "page must be between 1 and 1000000"),
    (f"/api/sae/{PLANTED}/latent/1?k=1e3", "k must be an integer, got '1e3'"),
    (f"/api/sae/{PLANTED}/latent/1?per_doc=-1", "per_doc must be between 0 and 100"),
    (f"/api/sae/{PLANTED}/latent/1?similar=1000", "similar must be between 1 and 100"),
    ("/api/search?text=%20await&limit=-3", "limit must be between 1 and 200"),
    (f"/api/sae/{PLANTED}?page=100000000000000000000", "page must be between 1 and 1000000"),
])
def test_bad_parameters_are_400_with_the_limit(client: TestClient, path: str, message: str) -> None:
    r = client.get(path)
    assert r.status_code == 400 and message in r.json()["error"], r.json()
    assert client.get(path.replace("/api/", "/", 1)).status_code == 400  # the page refuses it too


def test_pages_come_from_the_cache_until_the_store_changes(planted_store: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(planted_store, tmp_path / "store")
    app = create_app(str(tmp_path / "store"))
    client, cache = TestClient(app), app.state.cache
    path = f"/sae/{PLANTED}/latent/{PAIR_B}"
    first = client.get(path)
    hits = cache.hits
    again = client.get(path)
    assert again.text == first.text and cache.hits == hits + 1 and again.headers["content-type"] == first.headers["content-type"]
    assert client.get(f"/api{path}").json() == client.get(f"/api{path}").json() and cache.hits == hits + 2
    actstore.open(str(tmp_path / "store")).sae(PLANTED).label(PAIR_B, "half of pair A", author="ann")
    changed = client.get(path)
    assert "half of pair A" in changed.text and cache.hits == hits + 2  # a new label: computed again
    assert 0 < cache.size <= cache.max_bytes
    assert TestClient(create_app(str(tmp_path / "store"), cache_bytes=0)).get(path).text == changed.text
