"""A small store whose corpus holds hostile HTML, shared by the browser's API and page tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_tiny_tokenizer, sample_records

HOSTILE = [
    '<script>window.__pwned = "script"</script> the future of the store',
    '<img src=x onerror="window.__pwned = \'img\'"> an image of the future',
    '<a href="javascript:window.__pwned = \'link\'">click the future</a> here',
]


@pytest.fixture(scope="session")
def web_store(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Path:
    """Sample documents and three hostile ones, each hostile one repeated so that latents fire on it."""
    from tests.coded_store import build_coded_store

    root = tmp_path_factory.mktemp("web")
    tokenizer = make_tiny_tokenizer(root / "tokenizer", extra_text=" ".join(HOSTILE))
    records = sample_records(24, seed=7)
    records += [{"text": " ".join([h] * 3), "id": f"hostile{i}", "lang": "en", "n": 100 + i} for i, h in enumerate(HOSTILE)]
    return build_coded_store(root, tokenizer, records=records)
