"""The browser's JSON API against the Python API, its errors and limits, S3, a store still being
written, and the Ray Serve deployment (HTTP through Starlette's test client or a real server)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from starlette.testclient import TestClient

import actstore
from actstore.errors import LogitsNotFoundError
from actstore.query.tokens import encode_text, find_sequences
from actstore.web.app import create_app
from tests.coded_store import SAE


@pytest.fixture(scope="module")
def client(web_store: Path) -> TestClient:
    return TestClient(create_app(str(web_store)))


@pytest.fixture(scope="module")
def latents(web_store: Path):
    return actstore.open(str(web_store)).sae(SAE)


def _latents_table(latents) -> pl.DataFrame:
    """The SAE page's table from the Python API: density joined to the current explanations and
    each judge's balanced accuracy of that explanation."""
    judges = latents.explanations().select("key", score_detection="detection_balanced_accuracy",
                                           score_fuzzing="fuzzing_balanced_accuracy")
    current = latents.explanations(current=True).join(judges, on="key").select(
        "latent", "kind", "author", "score", "score_detection", "score_fuzzing", label="text")
    return latents.density().drop("hist").join(current, on="latent", how="left").select(
        "latent", "count", "density", "mean", "max", "label", "kind", "author", "score", "score_detection", "score_fuzzing")


def _mid_latent(latents) -> int:
    density = latents.density().sort(["count", "latent"])
    return int(density["latent"][density.height // 2])


def test_json_api_answers_equal_the_python_api(client: TestClient, latents) -> None:
    latent = _mid_latent(latents)
    got = client.get(f"/api/sae/{SAE}/latent/{latent}", params={"k": 7, "window": 5, "bins": 3, "per_bin": 2}).json()
    assert got["top"] == latents.top_k(latent, k=7, window=5).to_dicts()
    for kind in ("count", "width"):
        assert got["quantiles"][kind] == latents.quantile_examples(latent, bins=3, per_bin=2, kind=kind, window=5).to_dicts()
    assert got["cofiring"]["exact"] and [{k: v for k, v in r.items() if k != "label"} for r in got["cofiring"]["rows"]] == \
        latents.cofiring(latent, top=20).to_dicts()
    try:  # the browser tests keep the logits in the shared store (`actstore logits`)
        assert got["logits"] == latents.logits(latent).to_dicts()
    except LogitsNotFoundError:
        assert got["logits"] == [] and "actstore logits" in got["logits_missing"]
    assert got["stats"] == latents.density(latent).to_dicts()[0]
    table = client.get(f"/api/sae/{SAE}", params={"sort": "density", "order": "asc", "min_density": 0.01,
                                                  "page": 2, "per_page": 10}).json()
    frame = _latents_table(latents)
    frame = frame.filter(frame["density"] >= 0.01).sort(["density", "latent"])
    assert table["total"] == frame.height and table["rows"] == frame.slice(10, 10).to_dicts()
    store = latents.store
    found = find_sequences(store, [(" of the store", encode_text(store, " of the store"))], limit=20, window=12)
    searched = client.get("/api/search", params={"text": " of the store"}).json()
    assert searched["matches"] == found.matches.to_dicts() and searched["total"] == found.total
    info = client.get("/api/store").json()
    assert info["info"] == store.info(with_bytes=False).to_dict()
    l0 = latents.l0_hist()
    assert info["saes"][0]["l0_hist"]["counts"] == l0[: np.flatnonzero(l0)[-1] + 1].tolist()
    assert sum(info["saes"][0]["density_hist"]["counts"]) + info["saes"][0]["dead"] == latents.info.d_sae


def test_explanation_panels_answer_like_the_python_api(client: TestClient, latents) -> None:
    current = latents.explanations(current=True)
    best = current.sort("score", descending=True, nulls_last=True)
    scored, labelled = int(best["latent"][0]), int(current.filter(pl.col("text") == "the word store")["latent"][0])
    full = _latents_table(latents)
    got = client.get(f"/api/sae/{SAE}", params={"sort": "score", "per_page": 500}).json()
    assert got["rows"] == full.sort(["score", "latent"], descending=[True, False], nulls_last=True).to_dicts()
    assert got["rows"][0]["latent"] == scored and got["rows"][0]["score"] == pytest.approx(0.85)
    assert got["explained"] == current.height == 3 and got["scorers"] == ["detection", "fuzzing"]
    got = client.get(f"/api/sae/{SAE}", params={"sort": "label", "order": "asc", "label": "FUTURE"}).json()
    future = full.filter(pl.col("label").str.to_lowercase().str.contains("future")).sort("label")
    assert got["rows"] == future.to_dicts() and got["total"] == 2  # the scored one and the hostile label
    got = client.get(f"/api/sae/{SAE}", params={"min_score": 0.5, "max_score": 0.9}).json()
    assert [r["latent"] for r in got["rows"]] == [scored]  # a label has no score: the labelled latent drops out
    by_label = client.get(f"/api/sae/{SAE}", params={"sort": "label", "per_page": 500}).json()["rows"]
    assert [r["label"] for r in by_label[:3]] == sorted(current["text"].to_list(), reverse=True)
    assert all(r["label"] is None for r in by_label[3:])  # unexplained latents last, either order

    for latent in (scored, labelled):
        shown = client.get(f"/api/sae/{SAE}/latent/{latent}", params={"k": 3, "bins": 1, "per_bin": 1}).json()
        table = latents.explanations(latent=latent)
        assert shown["explanations"][0]["key"] == current.filter(pl.col("latent") == latent)["key"][0]
        assert sorted(e["key"] for e in shown["explanations"]) == sorted(table["key"].to_list())
        assert [e["current"] for e in shown["explanations"]] == [True] + [False] * (table.height - 1)
    first = client.get(f"/api/sae/{SAE}/latent/{scored}").json()["explanations"]
    assert [(e["text"], e["score"], e["score_detection"]) for e in first] == [
        ("the future tense of verbs", pytest.approx(0.85), 0.9), (None, None, None), ("common words", pytest.approx(0.55), 0.6)]
    second = client.get(f"/api/sae/{SAE}/latent/{labelled}").json()["explanations"]
    assert (second[0]["text"], second[0]["kind"], second[0]["author"], second[0]["score"]) == ("the word store", "human", "ann", None)

    found = client.get("/api/search/latents", params={"text": "future tense"}).json()
    assert found["saes"] == [{"sae": SAE, "rows": latents.search("future tense", top=20).to_dicts()}]
    assert found["saes"][0]["rows"][0]["latent"] == scored
    example = client.get("/api/search/latents", params={"text": " of the store", "by": "example", "top": 5}).json()
    assert example["saes"][0]["rows"] == latents.search_by_example(" of the store", top=5).to_dicts() != []
    for params, message in (({"text": "x", "by": "magic"}, "by must be one of"), ({"text": " "}, "search text is empty"),
                            ({"text": "x", "top": 1000}, "top must be between")):
        answer = client.get("/api/search/latents", params=params)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.json()
    assert "at most 400" in client.get(f"/api/sae/{SAE}", params={"label": "x" * 401}).json()["error"]


def test_an_unexplained_feature_page_prints_a_label_command_that_runs(web_store: Path, tmp_path: Path) -> None:
    import html
    import re
    import shlex

    from actstore.cli import main

    shutil.copytree(web_store, tmp_path / "store")
    app = TestClient(create_app(str(tmp_path / "store")))
    explained = set(actstore.open(str(tmp_path / "store")).sae(SAE).explanations()["latent"].to_list())
    latent = next(i for i in range(100) if i not in explained)
    page = app.get(f"/sae/{SAE}/latent/{latent}").text
    assert "No explanations yet" in page
    assert app.get("/api/search/latents", params={"text": "digits"}).json()["saes"][0]["rows"] == []
    command = html.unescape(re.search(r"<code>(actstore label .*?)</code>", page).group(1))  # type: ignore[union-attr]
    argv = shlex.split(command)
    assert argv[-1] == "what it fires on"
    assert main([*argv[1:-1], "digits", "--author", "me"]) == 0
    shown = app.get(f"/api/sae/{SAE}/latent/{latent}").json()["explanations"]
    assert [(e["text"], e["kind"], e["author"], e["current"]) for e in shown] == [("digits", "human", "me", True)]
    assert "digits" in app.get(f"/sae/{SAE}", params={"label": "digit"}).text  # the server's caches follow the table
    assert [r["latent"] for r in app.get("/api/search/latents", params={"text": "digits"}).json()["saes"][0]["rows"]] == [latent]


def test_errors_are_json_with_a_message_and_requests_are_bounded(client: TestClient, latents) -> None:
    cases = {
        "/api/sae/nope": (404, "no SAE 'nope'"),
        f"/api/sae/{SAE}/latent/{latents.info.d_sae}": (400, "out of range"),
        f"/api/sae/{SAE}/latent/1?k=100000": (400, "k must be between 1 and 100"),
        f"/api/sae/{SAE}/latent/1?k=abc": (400, "k must be an integer"),
        f"/api/sae/{SAE}/latent/1?evil=1": (400, "unknown query parameters ['evil']"),
        f"/api/sae/{SAE}?sort=__class__": (400, "sort must be one of"),
        "/api/search?text=" + "x" * 500: (400, "at most 400"),
        "/api/search?text=" + "x" * 5000: (414, "longer than 4096 bytes"),
        "/api/nothing": (404, "Not Found"),
    }
    for path, (status, message) in cases.items():
        r = client.get(path)
        assert r.status_code == status and r.headers["content-type"] == "application/json", path
        assert message in r.json()["error"] and r.json()["status"] == status, (path, r.json())
    for method in ("post", "put", "delete", "patch"):  # read-only
        r = client.request(method, "/api/store")
        assert r.status_code == 405 and "read-only" in r.json()["error"]
    assert client.request("GET", "/api/store", content=b"x" * 10).status_code == 413
    page = client.get(f"/sae/{SAE}/latent/999999")  # pages show errors as a page, escaped
    assert page.status_code == 400 and "out of range" in page.text and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/static/../pyproject.toml", "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
                                  "/static/..%2f..%2fapp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
                                  "/sae/..%2f..%2fzarr.json"])
def test_no_path_traversal(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "[project]" not in r.text and "root:" not in r.text and "zarr_format" not in r.text


def test_neuronpedia_export_button_returns_the_export(client: TestClient, latents) -> None:
    latent = _mid_latent(latents)
    r = client.get(f"/api/sae/{SAE}/latent/{latent}/neuronpedia.zip", params={"model_id": "gemma-2-2b", "source_id": "1-res"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:  # actstore.neuronpedia's layout, zipped
        read = lambda name: [json.loads(x) for x in gzip.decompress(zf.read(f"gemma-2-2b/1-res/{name}")).splitlines()]  # noqa: E731
        features, acts = read("features/batch-0.jsonl.gz"), read("activations/batch-0.jsonl.gz")
    assert [f["index"] for f in features] == [str(latent)] and features[0]["modelId"] == "gemma-2-2b"
    assert acts and {a["layer"] for a in acts} == {"1-res"}
    bad = client.get(f"/api/sae/{SAE}/latent/{latent}/neuronpedia.zip", params={"model_id": "../../x"})
    assert bad.status_code == 400 and "model id must be" in bad.json()["error"]


def test_on_s3(web_store: Path, s3_endpoint: str, s3_bucket: str, client: TestClient, latents) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for part in ("zarr.json", "tokens", "codes", "stats", "index", "_manifests", "explanations", "logits", "documents"):  # what the browser reads
        fs.put(str(web_store / part), f"{s3_bucket}/store/{part}", recursive=True)
    remote = TestClient(create_app(f"s3://{s3_bucket}/store", storage_options={"endpoint_url": s3_endpoint}))
    latent = _mid_latent(latents)
    for path in (f"/api/sae/{SAE}/latent/{latent}?k=5&bins=2&per_bin=1", f"/api/sae/{SAE}?per_page=20"):
        here, there = client.get(path).json(), remote.get(path).json()
        assert {k: v for k, v in there.items() if k != "logits_missing"} == \
            {k: v for k, v in here.items() if k != "logits_missing"}  # the message names the store's URL
    page = remote.get(f"/sae/{SAE}/latent/{latent}")
    shown = remote.get(f"/api/sae/{SAE}/latent/{latent}").json()
    examples = len(shown["top"]) + len(shown["quantiles"]["count"]) + len(shown["quantiles"]["width"])
    assert page.status_code == 200 and page.text.count('<mark class="focus"') == examples


def test_a_store_still_being_written(web_store: Path, tmp_path: Path) -> None:
    """Before the last unit commits and the index exists: the summary, the latents table (from
    committed units) and search work, a feature page says what to run; the view follows commits."""
    from actstore.store.store import Store

    url = tmp_path / "store"
    shutil.copytree(web_store, url)
    shutil.rmtree(url / "index")
    last = sorted((url / "_manifests/extract").iterdir())[-1]
    manifest = last.read_bytes()
    last.unlink()
    writer = Store.open(str(url), mode="r+")
    writer.update_meta(stages={**writer.meta.stages, "extract": writer.meta.stages["extract"].model_copy(
        update={"complete": False, "finalized_at": None})})
    app = TestClient(create_app(str(url), refresh_s=0.0))
    summary = app.get("/api/store").json()
    units = summary["info"]["units_total"]
    assert not summary["info"]["complete"] and summary["info"]["units_done"] == units - 1
    assert summary["saes"][0]["indexed"] is False
    partial = _latents_table(actstore.open(str(url)).sae(SAE)).sort(["count", "latent"], descending=[True, False])
    table = app.get(f"/api/sae/{SAE}", params={"per_page": 500}).json()
    assert table["rows"] == partial.to_dicts()
    assert sum(r["count"] for r in table["rows"]) < actstore.open(str(web_store)).sae(SAE).density()["count"].sum()
    r = app.get(f"/api/sae/{SAE}/latent/3")
    assert r.status_code == 404 and "actstore index" in r.json()["error"]
    assert "being written" in app.get("/").text and "no index yet" in app.get("/").text
    last.write_bytes(manifest)  # the unit commits
    assert app.get("/api/store").json()["info"]["units_done"] == units


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ray_serve_deployment_serves_the_same_app(web_store: Path, client: TestClient, ray_cluster: None) -> None:
    from ray import serve

    from actstore.web.deployment import browser_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(browser_app(str(web_store), num_cpus=0), name="browser", route_prefix="/browser")
        path = f"/api/sae/{SAE}?per_page=5"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/browser{path}", timeout=60) as r:
            assert json.loads(r.read()) == client.get(path).json()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/browser/", timeout=60) as r:
            page = r.read().decode()
        assert '<svg class="plot"' in page and 'href="/browser/static/app.css"' in page  # links keep the prefix
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/browser/static/app.css", timeout=60) as r:
            assert r.status == 200
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def live_client(web_store: Path):
    from actstore.live import open_session

    session = open_session(str(web_store), device="cpu")
    return session, TestClient(create_app(str(web_store), session=session))


def test_live_api_answers_equal_the_session(live_client) -> None:
    session, client = live_client
    got = client.get("/api/features", params={"text": "the future of the store", "top": 3}).json()
    frame = session.features("the future of the store", top=3)
    flat = [{"pos": t["pos"], "token_id": t["token_id"], "token": t["token"], **f} for t in got["tokens"] for f in t["latents"]]
    assert flat == frame.drop("special").to_dicts()
    latent = int(frame["latent"][0])
    steer = client.get(f"/api/sae/{SAE}/latent/{latent}/steer",
                       params={"prompt": "the future", "strength": 8, "strengths": "0,8", "max_new_tokens": 3}).json()
    result = session.steer("the future", [(SAE, latent, 8.0)], unit="max", max_new_tokens=3)
    assert (steer["default_text"], steer["steered_text"]) == (result.default_text, result.steered_text)
    sweep = session.sweep("the future", (SAE, latent, 0.0), strengths=[0.0, 8.0], unit="max", max_new_tokens=3)
    assert steer["sweep"] == sweep.to_dicts()
    for path, params, message in (
            ("/api/features", {"text": "x" * 401}, "at most 400"), ("/api/features", {"text": "a", "top": 50}, "top must be"),
            (f"/api/sae/{SAE}/latent/{latent}/steer", {"prompt": "a", "max_new_tokens": 500}, "max_new_tokens must be"),
            (f"/api/sae/{SAE}/latent/{latent}/steer", {"prompt": "a", "strengths": "1,2,3,4,5,6,7,8,9"}, "1 to 8 strengths"),
            (f"/api/sae/{SAE}/latent/{latent}/steer", {"prompt": ""}, "prompt is empty")):
        answer = client.get(path, params=params)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.json()


def test_live_panels_without_a_model_say_how_to_attach(client: TestClient) -> None:
    answer = client.get("/api/features", params={"text": "the future"})
    assert answer.status_code == 404 and "--model" in answer.json()["error"]
    assert "--model" in client.get("/search", params={"mine": "the future"}).text
    assert "--model" in client.get(f"/sae/{SAE}/latent/1/steer", params={"prompt": "a"}).text
    assert "--model" in client.get(f"/sae/{SAE}/latent/1").text
