"""The browser in a real headless Chromium (Debian's package, driven by Playwright): the pages
of a small store served by ``actstore serve`` as the README runs it, the marked tokens, the
plots, a co-firing link followed, and a hostile corpus that renders as text and runs nothing.
Screenshots land in the test's temporary folder (``screenshots``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import expect

import actstore
from tests.coded_store import SAE
from tests.web.conftest import HOSTILE, HOSTILE_LABEL

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(web_store: Path) -> Iterator[str]:
    """``actstore serve STORE --model --port P`` in its own process, as a user starts it (the
    tiny Gemma 2 attached for the live panels). The SAE's output logits were kept when its
    index was built (the extraction's ``index: {build: true}``), no ``actstore logits`` run."""
    yield from _serve(web_store, "--model")


@pytest.fixture(scope="module")
def planted_server(planted_store: Path) -> Iterator[str]:
    """``actstore serve`` of the planted store without a model: as many processes as CPUs."""
    yield from _serve(planted_store)


def _serve(store: Path, *args: str) -> Iterator[str]:
    port = _free_port()
    exe = shutil.which("actstore", path=str(Path(sys.executable).parent)) or "actstore"
    proc = subprocess.Popen([exe, "serve", str(store), *args, "--port", str(port)], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # loading torch and the model takes a few seconds on a loaded machine
            try:
                urllib.request.urlopen(f"{base}/static/app.css", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"actstore serve exited: {proc.stdout.read() if proc.stdout else ''}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.shots = tmp_path_factory.mktemp("screenshots")  # type: ignore[attr-defined]
        pg.outside = []  # type: ignore[attr-defined]  # requests leaving the server (CDNs...)
        pg.on("request", lambda r: None if r.url.startswith("http://127.0.0.1") else pg.outside.append(r.url))
        yield pg
        browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def latents(web_store: Path):
    return actstore.open(str(web_store)).sae(SAE)


def test_store_and_sae_pages(server: str, page, latents) -> None:
    page.goto(server + "/")
    assert page.locator("h1").inner_text() == "Store"
    assert page.locator("svg.plot").count() == 2 and page.locator("svg.plot rect").count() > 4
    assert latents.store.meta.sites[0].name in page.locator("body").inner_text()
    _shot(page, "store")
    page.click(f"a[href='/sae/{SAE}']")
    rows = page.locator("table.latents tbody tr")
    assert rows.count() == 50
    page.click("th a.sort:has-text('density')")  # sorted by density, descending
    page.wait_for_url("**sort=density**")
    shown = [float(t) for t in page.locator("table.latents tbody tr td:nth-child(3)").all_inner_texts()]
    assert shown == sorted(shown, reverse=True) and shown[0] == pytest.approx(latents.density()["density"].max(), rel=1e-3)
    page.fill("input[name=max_density]", "0.05")
    page.click("form.filters button")
    shown = [float(t) for t in page.locator("table.latents tbody tr td:nth-child(3)").all_inner_texts()]
    assert shown and max(shown) <= 0.05
    _shot(page, "sae")


def test_feature_page_marks_tokens_and_follows_a_cofiring_link(server: str, page, latents) -> None:
    density = latents.density().sort(["count", "latent"])
    latent = int(density["latent"][density.height // 2])
    top = latents.top_k(latent, k=20, window=12)
    page.goto(f"{server}/sae/{SAE}/latent/{latent}")
    marks = page.locator("table.examples").first.locator("mark.focus")
    assert marks.count() == top.height
    assert marks.all_inner_texts()[0] == top["tokens"][0][top["focus"][0]].replace("\n", "⏎")
    assert float(marks.first.get_attribute("title") or "nan") == pytest.approx(top["value"][0], rel=1e-3)
    marks.first.hover()
    assert page.locator("svg.plot rect").count() >= 1
    assert page.locator("h3.bin").count() >= 2 and "occurrences" in page.locator("h3.bin").first.inner_text()
    assert page.locator("#export").is_visible()
    assert page.locator("table.logits-top tbody tr").count() == page.locator("table.logits-bottom tbody tr").count() > 0
    top_of = lambda selector: page.locator(selector).first.bounding_box()["y"]  # noqa: E731
    assert top_of("table.logits-top") < top_of("h2#top")  # beside the histogram, above the contexts
    shade = marks.first.locator("span.tok").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert shade not in ("rgba(0, 0, 0, 0)", "rgb(255, 213, 79)")  # outlined, its own shade kept (not filled yellow)
    assert marks.first.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    _shot(page, "feature")
    link = page.locator("a.cofire").first
    target = int(link.inner_text())
    link.click()
    page.wait_for_url(f"**/latent/{target}")
    assert page.locator("h1").inner_text().startswith(f"Latent {target} ")
    assert page.locator("mark.focus").count() >= 1
    _shot(page, "cofiring")


def test_search_page(server: str, page, latents) -> None:
    page.goto(server + "/search")
    page.fill("form.search textarea[name=text]", " of the store")
    page.click("form.search button")
    page.wait_for_url("**text=**")
    expect = latents.store.find_tokens(" of the store", limit=20, window=12)
    assert page.locator("table.examples mark.focus").count() == expect.height > 0
    _shot(page, "search")


def test_explanation_panels(server: str, page, latents) -> None:
    """Sort and filter the latents table by score and label, read a feature's explanations, find
    it again by the words of its explanation."""
    best = latents.explanations(current=True).sort("score", descending=True, nulls_last=True)
    scored, label = int(best["latent"][0]), str(best["text"][0])
    page.goto(f"{server}/sae/{SAE}")
    page.click("th a.sort:has-text('score')")
    page.wait_for_url("**sort=score**")
    scores = page.locator("table.latents tbody td.score").all_inner_texts()
    assert scores[0] == "0.850" and scores[1:] == [""] * (len(scores) - 1)  # one scored; the rest sort last
    assert page.locator("table.latents tbody tr").first.locator("td.label .text").inner_text() == label
    page.click("th a.sort:has-text('label')")  # A to Z first
    page.wait_for_url("**sort=label**")
    shown = page.locator("table.latents tbody td.label .text").all_inner_texts()
    assert shown == sorted(latents.explanations(current=True)["text"].to_list())
    page.fill("input[name=label]", "FUTURE")
    page.fill("input[name=min_score]", "0.5")
    page.click("form.filters button")
    page.wait_for_url("**label=FUTURE**")
    assert page.locator("table.latents tbody tr").count() == 1
    _shot(page, "sae-explained")
    page.click(f"table.latents a[href$='/latent/{scored}']")
    page.wait_for_url(f"**/latent/{scored}")
    assert page.locator("table.explanations tr.current td.text").inner_text() == label
    assert page.locator("table.explanations tbody tr").count() == latents.explanations(latent=scored).height
    assert "could not be parsed" in page.locator("table.explanations").inner_text()
    assert {"detection", "fuzzing"} <= set(page.locator("table.explanations thead th").all_inner_texts())  # a column per judge
    assert page.locator("table.explanations tr:has-text('common words') .uninformative").inner_text() == "uninformative"
    assert page.locator("table.profile tbody tr").count() > 0  # the token profile panel
    _shot(page, "feature-explanations")
    page.goto(server + "/search")
    page.fill("form.find textarea[name=find]", "future tense")
    page.click("form.find button")
    page.wait_for_url("**find=**")
    link = page.locator("table.found a.latent").first
    assert link.inner_text() == str(scored) and label in page.locator("table.found tbody tr").first.inner_text()
    _shot(page, "search-explanations")
    link.click()
    page.wait_for_url(f"**/latent/{scored}")
    page.goto(server + "/search?find=+of+the+store&by=example")
    assert page.locator("table.found a.latent").count() > 0


def test_features_on_my_text(server: str, page) -> None:
    text = '<script>window.__pwned = "mine"</script> the future of the store'
    page.goto(server + "/search")
    page.fill("textarea[name=mine]", text)
    page.click("form.search:has(textarea[name=mine]) button")
    page.wait_for_url("**mine=**")
    rows = page.locator("table.features tbody tr")
    assert rows.count() > 5 and page.evaluate("window.__pwned") is None
    assert "<script>" in page.locator("table.features").inner_text()  # the typed text shows as text
    link = page.locator("table.features a.latent").first
    value = link.evaluate("a => a.nextSibling.textContent").strip()
    assert float(value) > 0
    _shot(page, "features-on-my-text")
    target = int(link.inner_text())
    link.click()
    page.wait_for_url(f"**/latent/{target}")
    assert page.locator("#steer").is_visible()


def test_steering_page(server: str, page, latents) -> None:
    """A multi-line prompt, shown with both continuations; the sweep table and its plots."""
    latent = int(latents.density().sort(["count", "latent"])["latent"][-1])
    page.goto(f"{server}/sae/{SAE}/latent/{latent}/steer")  # the form alone: nothing runs yet
    assert page.locator("section.default").count() == 0
    prompt = "the future\nof the"
    page.fill("form.steer textarea[name=prompt]", prompt)
    page.fill("input[name=max_new_tokens]", "3")
    page.fill("input[name=strengths]", "0,8")
    page.click("form.steer button")
    page.wait_for_url("**max_new_tokens=3**")
    page.wait_for_selector("p.done")
    for side in ("default", "steered"):
        assert page.locator(f"section.{side} pre .prompt").inner_text() == prompt  # the newline kept
        assert page.locator(f"section.{side} pre .gen").inner_text()
    assert page.locator("form.steer textarea[name=prompt]").input_value() == prompt
    assert page.locator("svg.plot polyline").count() == 2 and page.locator("svg.plot circle").count() == 4
    assert page.locator("table.sweep tbody tr").count() == 2 and page.locator("table.sweep tbody td.n").count() == 8
    _shot(page, "steering")
    page.goto(f"{server}/sae/{SAE}/latent/{latent}/steer?prompt=a&strength=nan")
    assert "strength must be a finite number in [-100, 100], got nan" in page.locator("main").inner_text()


def test_feature_page_heatmap_of_my_text(server: str, page, latents) -> None:
    """The latent's activation on every token of a typed (multi-line) text, shaded on the same
    scale as the corpus windows, each value on hover as the API gives it."""
    import json

    latent = int(latents.density().sort(["count", "latent"])["latent"][-1])
    text = "the future of\nthe store <b>bold</b>"
    page.goto(f"{server}/sae/{SAE}/latent/{latent}")
    page.fill("textarea[name=text]", text)
    page.click("#activate")
    page.wait_for_url("**text=**")
    with urllib.request.urlopen(f"{server}/api/sae/{SAE}/latent/{latent}/activation?"
                                + urllib.parse.urlencode({"text": text}), timeout=60) as answer:
        expected = json.loads(answer.read())
    spans = page.locator("div.heatmap span.tok")
    assert spans.count() == len(expected["tokens"]) > 5
    top = expected["store_max"]
    for i, token in enumerate(expected["tokens"]):
        shade = min(int(10 * token["value"] / top), 9) if token["value"] > 0 else 0
        assert f"s{shade}" in (spans.nth(i).get_attribute("class") or "").split()
        assert float((spans.nth(i).get_attribute("title") or "nan").split()[0]) == pytest.approx(token["value"], rel=1e-3, abs=1e-6)
    shown = "".join(spans.all_inner_texts()).replace("⏎\n", "\n")  # a newline shows as ⏎ and breaks the line
    assert shown == "".join(t["token"] for t in expected["tokens"]) and shown.strip() == text  # newline and markup as text
    assert page.locator("div.heatmap b").count() == 0 and page.locator("textarea[name=text]").input_value() == text
    assert any(t["value"] > 0 for t in expected["tokens"]) == (page.locator("p.activation-max").inner_text().startswith("strongest"))
    _shot(page, "feature-heatmap")


def test_steering_page_shows_tokens_while_the_model_draws_them(web_store: Path, page, latents) -> None:
    """The steering page arrives in pieces: with the model held after the steered run's second
    token (a hook on the real model waits), Chromium already shows the prompt, the whole default
    continuation and two steered tokens, and nothing after them; released, the page completes."""
    import threading

    import uvicorn

    from actstore.live import open_session
    from actstore.web.app import create_app

    session = open_session(str(web_store), device="cpu")
    n, forwards, hold, held = 6, [0], threading.Event(), threading.Event()

    def gate(*_: object) -> None:
        forwards[0] += 1
        if forwards[0] == n + 3:  # the default run's n forwards, then the steered run's prompt and first step
            held.set()
            hold.wait(120)

    session.model.register_forward_pre_hook(gate)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(str(web_store), session=session), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        latent = int(latents.density().sort(["count", "latent"])["latent"][-1])
        page.goto(f"http://127.0.0.1:{port}/sae/{SAE}/latent/{latent}/steer?prompt=the+future&strength=8&strengths="
                  f"&max_new_tokens={n}&seed=1", wait_until="commit")
        assert held.wait(120)
        # locator assertions poll without eval, which the page's Content-Security-Policy forbids
        expect(page.locator("section.steered .gen")).to_have_count(1)
        expect(page.locator("section.steered .gen")).not_to_have_text("")
        partial = {side: page.locator(f"section.{side} .gen").inner_text() for side in ("default", "steered")}
        assert page.locator("p.summary, p.done").count() == 0  # the rest is not there yet
        _shot(page, "steering-in-progress")
        hold.set()
        page.wait_for_selector("p.done")
        result = session.steer("the future", [(SAE, latent, 8.0)], unit="max", max_new_tokens=n, seed=1)
        assert partial["default"] == page.locator("section.default .gen").inner_text() == result.default_text
        assert result.steered_text.startswith(partial["steered"]) and len(partial["steered"]) < len(result.steered_text)
        assert page.locator("section.steered .gen").inner_text() == result.steered_text
    finally:
        hold.set()
        server.should_exit = True
        thread.join(30)


def test_hostile_corpus_renders_as_text_and_runs_nothing(server: str, page, latents) -> None:
    hit = next(latent for latent in range(latents.info.d_sae)
               if any("<script" in "".join(t) for t in latents.top_k(latent, k=20, window=12)["tokens"].to_list()))
    for path, shown in ((f"/sae/{SAE}/latent/{hit}", "<script>"), ("/search?text=+of+the+store", "<script>"),
                        ("/search?text=an+image+of+the", "<img src=x onerror="),
                        ("/search?text=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "<script>alert(1)</script>")):
        page.goto(server + path)
        assert page.evaluate("window.__pwned") is None
        assert shown in page.locator("main").inner_text()
        assert page.locator("main script, main img, table.examples a, main iframe").count() == 0
    hostile = int(latents.explanations().filter(pl.col("author") == "mallory")["latent"][0])  # a hostile label
    for path in (f"/sae/{SAE}?label=future", f"/sae/{SAE}/latent/{hostile}", "/search?find=future+tense"):
        page.goto(server + path)
        assert page.evaluate("window.__pwned") is None
        assert HOSTILE_LABEL in page.locator("main").inner_text()
        assert page.locator("main script, main img, main iframe, main a[href^='javascript']").count() == 0
    _shot(page, "hostile-label")
    page.goto(f"{server}/sae/{SAE}/latent/{hit}")
    text = page.locator("main").inner_text().replace("⏎", "\n")
    assert '<script>window.__pwned = "script"</script>' in text
    page.goto(server + "/search?text=an+image+of+the")
    assert HOSTILE[1].split(" an image")[0] in page.locator("main").inner_text()
    _shot(page, "hostile")
    assert page.outside == []  # every asset came from the app


def test_text_outside_ascii_and_overrides(planted_server: str, page) -> None:
    """A label holding a right-to-left override reads as typed, with the override shown; a
    character split over tokens is marked whole; documents show by name; co-firing and similar
    latents carry their labels."""
    from tests.planted_store import ALWAYS, PAIR_A, PLANTED, SPLIT, TWIN_A, TWIN_B

    page.goto(f"{planted_server}/sae/{PLANTED}?sort=label&order=asc")
    cell = page.locator("table.latents td.label", has_text="evil.exe").first
    assert "\u202e" not in cell.inner_text() and cell.locator("span.ctl").first.inner_text() == "RLO"
    left = cell.evaluate("""td => { const w = document.createTreeWalker(td, NodeFilter.SHOW_TEXT); let n;
        while ((n = w.nextNode())) { const i = n.data.indexOf("evil.exe"); if (i >= 0) { const r = document.createRange();
          const at = k => { r.setStart(n, i + k); r.setEnd(n, i + k + 1); return r.getBoundingClientRect().left; };
          return [at(0), at(5), at(7)]; } } return null; }""")
    assert left is not None and left[0] < left[1] < left[2]  # "e" ... "e" ... "e" left to right: not "exe.live"
    _shot(page, "rlo-label")
    page.goto(f"{planted_server}/sae/{PLANTED}/latent/{SPLIT}")
    marks = page.locator("table.examples").first.locator("mark.focus")
    assert marks.count() == 20 and all(len(t) >= 1 and ord(t[-1]) > 127 and "\ufffd" not in t for t in marks.all_inner_texts())
    assert page.locator("table.examples td.doc").first.inner_text().startswith("doc-")
    _shot(page, "split-characters")
    page.goto(f"{planted_server}/sae/{PLANTED}/latent/{PAIR_A}")
    row = page.locator("table.cofiring tbody tr", has=page.locator(f"a.cofire:text-is('{ALWAYS}')"))
    assert "evil.exe" in row.locator("td.label").inner_text() and "exact" in page.locator("main").inner_text()
    page.goto(f"{planted_server}/sae/{PLANTED}/latent/{TWIN_A}")
    assert page.locator("table.similar a.similar").first.inner_text() == str(TWIN_B)
    _shot(page, "similar")
