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


SCORED = [c for s in ("embedding", "detection", "fuzzing") for c in (f"score_{s}", f"informative_{s}")]


def _latents_table(latents) -> pl.DataFrame:
    """The SAE page's table from the Python API: density joined to the current explanations and
    each scorer's number of that explanation (AUROC, else balanced accuracy) and its check."""
    judges = latents.explanations().select("key", *[e for s in ("embedding", "detection", "fuzzing") for e in (
        pl.coalesce(f"{s}_auroc", f"{s}_balanced_accuracy").alias(f"score_{s}"), pl.col(f"{s}_informative").alias(f"informative_{s}"))])
    current = latents.explanations(current=True).join(judges, on="key").select(
        "latent", "kind", "author", "score", *SCORED, label="text")
    return latents.density().drop("hist").join(current, on="latent", how="left").select(
        "latent", "count", "density", "mean", "max", "label", "kind", "author", "score", *SCORED)


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
    assert got["profile"] == latents.token_profile(latent).to_dicts() != [] and got["profile_text"] == latents.profile_text(latent)
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
    assert [(e["text"], e["score"], e["score_detection"], e["informative_fuzzing"]) for e in first] == [
        ("the future tense of verbs", pytest.approx(0.85), 0.9, True), (None, None, None, None),
        ("common words", pytest.approx(0.6), 0.6, False)]  # its uninformative fuzzing judge is left out of the score
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
    for part in ("zarr.json", "tokens", "codes", "stats", "index", "_manifests", "explanations", "logits", "documents", "saes",
                 "tokenizer"):  # what the browser reads
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


def _forwards(session) -> list[int]:
    """A counter of the model's forward passes (a hook on the model, which runs as it is)."""
    calls: list[int] = []
    session.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_live_parameters_are_checked_before_the_model_runs(live_client, latents) -> None:
    session, client = live_client
    latent = int(latents.density().sort("count")["latent"][-1])
    d_sae = latents.info.d_sae
    steer, events = f"/api/sae/{SAE}/latent/{latent}/steer", f"/api/sae/{SAE}/latent/{latent}/steer/events"
    forwards = _forwards(session)
    for path, params, status, message in (
            (steer, {"prompt": "a", "strength": "nan"}, 400, "strength must be a finite number in [-100, 100], got nan"),
            (steer, {"prompt": "a", "strength": "inf"}, 400, "strength must be a finite number in [-100, 100], got inf"),
            (steer, {"prompt": "a", "strength": "-101"}, 400, "strength must be a finite number in [-100, 100], got -101.0"),
            (steer, {"prompt": "a", "strengths": "0,-inf"}, 400, "strength must be a finite number in [-100, 100], got -inf"),
            (steer, {"prompt": "a", "seed": "1e20"}, 400, "seed must be an integer, got '1e20'"),
            (steer, {"prompt": "a", "seed": str(10**20)}, 400, "seed must be an integer in [0, 4294967295], got 100000000000000000000"),
            (steer, {"prompt": "a", "seed": "-1"}, 400, "seed must be an integer in [0, 4294967295], got -1"),
            (steer, {"prompt": "a", "max_new_tokens": 0}, 400, "max_new_tokens must be an integer in [1, 64], got 0"),
            (f"/api/sae/{SAE}/latent/{d_sae}/steer", {"prompt": "a"}, 400, f"latent {d_sae} is out of range"),
            ("/api/sae/nope/latent/1/steer", {"prompt": "a"}, 404, "no SAE 'nope'"),
            (events, {"prompt": " \r\n "}, 400, "the prompt is empty"),
            (events, {"prompt": "a", "strength": "1e400"}, 400, "got inf"),
            (f"/api/sae/{SAE}/latent/{latent}/activation", {"text": ""}, 400, "the text is empty"),
            (f"/api/sae/{SAE}/latent/{latent}/activation", {"text": "a", "k": 1}, 400, "unknown query parameters ['k']"),
            (f"/api/sae/{SAE}/latent/{d_sae}/activation", {"text": "a"}, 400, f"latent {d_sae} is out of range"),
            ("/api/features", {"text": "a", "top": 0}, 400, "top must be an integer in [1, 20], got 0")):
        answer = client.get(path, params=params)
        assert (answer.status_code, answer.json()["status"]) == (status, status), (path, params, answer.text)
        assert message in answer.json()["error"], (path, params, answer.json())
    page = client.get(f"/sae/{SAE}/latent/{latent}/steer", params={"prompt": "a", "strength": "nan"})
    assert page.status_code == 400 and "strength must be a finite number in [-100, 100], got nan" in page.text
    assert forwards == []  # refused before the model ran
    negative = client.get(steer, params={"prompt": "a", "strength": -5, "strengths": "", "max_new_tokens": 1})
    assert negative.status_code == 200 and negative.json()["strength"] == -5.0 and forwards  # within the range


def _events(lines) -> list[dict]:
    """Server-sent events (``event:`` and ``data:`` lines, a blank line after each) as dicts."""
    out, kind = [], None
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            out.append(json.loads(line[len("data: "):]))
            assert out[-1]["event"] == kind
    return out


def test_steering_streams_its_progress(live_client, latents) -> None:
    """The event stream: the prompt (its newline kept), each token as it is drawn, the summary, each
    sweep row after its tokens, then the same result as the JSON answer."""
    session, client = live_client
    latent = int(latents.density().sort("count")["latent"][-1])
    prompt = "the future\nof the"
    params = {"prompt": prompt.replace("\n", "\r\n"), "strength": 8, "strengths": "0,8", "max_new_tokens": 4}
    with client.stream("GET", f"/api/sae/{SAE}/latent/{latent}/steer/events", params=params) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = _events(answer.iter_lines())
    result = events[-1]["view"]
    assert [e["event"] for e in events[:1] + events[-1:]] == ["prompt", "result"] and result["prompt"] == prompt
    assert events[0]["text"] == session.tokenizer.decode(session.tokenize(prompt)[1:]) and "\n" in events[0]["text"]
    runs = [e.get("index", e["run"]) if e["event"] == "token" else e["event"] for e in events[1:-1]]
    assert runs == (["default"] * 4 + ["steered"] * 4 + ["summary"] + [0] * 4 + ["row"] + [1] * 4 + ["row"])
    tokens = [e for e in events if e["event"] == "token"]
    for run, text in (("default", result["default_text"]), ("steered", result["steered_text"])):
        mine = [e for e in tokens if e["run"] == run]
        assert "".join(e["text"] for e in mine) == text and [e["step"] for e in mine] == [1, 2, 3, 4]
    for i, row in enumerate(result["sweep"]):
        assert "".join(e["text"] for e in tokens if e.get("index") == i) == row["text"]
    assert [{k: v for k, v in e.items() if k not in ("event", "index")} for e in events if e["event"] == "row"] == result["sweep"]
    answer = client.get(f"/api/sae/{SAE}/latent/{latent}/steer", params=params).json()
    assert {**answer, "seconds": 0} == {**result, "seconds": 0}
    page = client.get(f"/sae/{SAE}/latent/{latent}/steer", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count(f'<span class="prompt" title="the prompt">{prompt}</span>') == 2  # beside both continuations
    assert f">{prompt}</textarea>" in page.text and '<p class="done note">' in page.text


def test_activation_on_a_text(live_client, latents) -> None:
    session, client = live_client
    latent = int(latents.density().sort("count")["latent"][-1])
    answer = client.get(f"/api/sae/{SAE}/latent/{latent}/activation", params={"text": "the future\r\nof the store"}).json()
    frame = session.latent_values(SAE, latent, "the future\nof the store")
    assert answer["text"] == "the future\nof the store" and answer["tokens"] == frame.slice(1).to_dicts()  # BOS left out
    assert answer["store_max"] == pytest.approx(float(latents.density(latent)["max"][0]))
    page = client.get(f"/sae/{SAE}/latent/{latent}", params={"text": "the future\nof the store"}).text
    shaded = [t for t in answer["tokens"] if t["value"] > 0]
    assert page.count('<div class="heatmap">') == 1 and shaded and 'class="tok s' in page.split('<div class="heatmap">')[1]


def test_live_panels_without_a_model_say_how_to_attach(client: TestClient) -> None:
    answer = client.get("/api/features", params={"text": "the future"})
    assert answer.status_code == 404 and "--model" in answer.json()["error"]
    assert "--model" in client.get("/search", params={"mine": "the future"}).text
    assert "--model" in client.get(f"/sae/{SAE}/latent/1/steer", params={"prompt": "a"}).text
    assert "--model" in client.get(f"/sae/{SAE}/latent/1").text
    assert "--model" in client.get(f"/sae/{SAE}/latent/1", params={"text": "the future"}).text
    for path in (f"/api/sae/{SAE}/latent/1/activation", f"/api/sae/{SAE}/latent/1/steer/events"):
        answer = client.get(path, params={"text": "a"} if "activation" in path else {"prompt": "a"})
        assert answer.status_code == 404 and "--model" in answer.json()["error"]
