"""The contrast page in real headless Chromium: two document sets of the web store compared,
the volcano plot and the ranked table linking to feature pages, the API's frame equal to the
page's, and hostile filters and labels shown as text."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import actstore
from tests.coded_store import SAE
from tests.web.conftest import HOSTILE_LABEL
from tests.web.test_browser import _free_port, _shot, page  # noqa: F401  (a fixture)

HOSTILE_WHERE = "doc >= 24 AND source <> '<script>window.__pwned = \"where\"</script>'"


@pytest.fixture(scope="module")
def contrast_server(web_store: Path) -> Iterator[str]:
    """The browser app on uvicorn in a thread of this process (no model: the page needs none)."""
    import uvicorn

    from actstore.web.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(str(web_store)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_contrast_page(contrast_server: str, page, web_store: Path) -> None:  # noqa: F811
    page.goto(f"{contrast_server}/sae/{SAE}")
    page.click("a.contrast")
    page.wait_for_url(f"**/sae/{SAE}/contrast")
    page.fill("input[name=a]", HOSTILE_WHERE)
    page.fill("input[name=top]", "100")
    page.click("form.contrast button")
    page.wait_for_url("**a=**")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("table.sides td.where").first.inner_text() == HOSTILE_WHERE  # the filter shows as text
    assert "Unit: context (side A holds 3 documents" in page.locator("p.unit").inner_text()
    assert "Mann-Whitney" in page.locator("p.test").inner_text()
    rows = page.locator("table.contrast tbody tr")
    latents = actstore.open(str(web_store)).sae(SAE)
    expected = latents.contrast(HOSTILE_WHERE).frame
    assert rows.count() == expected.height  # top 100 >= d_sae: every latent
    shown = [int(t) for t in page.locator("table.contrast a.latent").all_inner_texts()]
    assert shown == expected["latent"].to_list()
    assert HOSTILE_LABEL in page.locator("table.contrast").inner_text()  # a label with markup, as text
    assert page.locator("figure.volcano svg circle").count() == expected.height
    api = httpx.get(f"{contrast_server}/api/sae/{SAE}/contrast", params={"a": HOSTILE_WHERE, "top": 100}).json()
    assert [r["latent"] for r in api["rows"]] == shown and api["unit"] == "context"
    _shot(page, "contrast")
    page.locator("figure.volcano a").last.click()  # a point (the most significant, drawn last: on top) links to its page
    page.wait_for_url(f"**/sae/{SAE}/latent/*")
    assert page.locator("h1").inner_text().startswith("Latent ")
    page.goto(f"{contrast_server}/sae/{SAE}/contrast?a=dok+%3D+1")
    assert "unknown columns ['dok']" in page.locator("p.error").inner_text()
    assert page.locator("input[name=a]").input_value() == "dok = 1"  # kept in the form to fix
    assert page.outside == []
