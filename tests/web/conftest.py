"""A small store whose corpus and labels hold hostile HTML, shared by the browser's API and page tests."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.helpers import make_tiny_tokenizer, sample_records

HOSTILE = [
    '<script>window.__pwned = "script"</script> the future of the store',
    '<img src=x onerror="window.__pwned = \'img\'"> an image of the future',
    '<a href="javascript:window.__pwned = \'link\'">click the future</a> here',
]
HOSTILE_LABEL = ('<script>window.__pwned = "label"</script><img src=x onerror="window.__pwned = \'label-img\'">'
                 '<a href="javascript:window.__pwned = \'label-link\'">future tense</a>')


@pytest.fixture(scope="session")
def web_store(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Path:
    """Sample documents and three hostile ones, each hostile one repeated so that latents fire on it."""
    from tests.coded_store import build_coded_store

    root = tmp_path_factory.mktemp("web")
    tokenizer = make_tiny_tokenizer(root / "tokenizer", extra_text=" ".join(HOSTILE))
    records = sample_records(24, seed=7)
    records += [{"text": " ".join([h] * 3), "id": f"hostile{i}", "lang": "en", "n": 100 + i} for i, h in enumerate(HOSTILE)]
    store = build_coded_store(root, tokenizer, records=records, logits=True)  # the feature pages show them
    _explain(store)
    return store


def _explain(store: Path) -> None:
    """Explanations of three mid-density latents, as `actstore label` and `actstore explain` write
    them: on the first two automatic ones scored by both judges (the better one current; the
    other's fuzzing judge uninformative) and an unparsed answer; on the second an automatic one
    whose judges were both uninformative (no score) and a later label (current, no score); on the
    third a hostile label."""
    import actstore
    from actstore.explain.table import append_explanations
    from tests.coded_store import SAE

    latents = actstore.open(str(store)).sae(SAE)
    fired = latents.density().filter(pl.col("count") > 0).sort(["count", "latent"])
    first, second, third = (int(fired["latent"][fired.height // 2 + i]) for i in range(3))

    def auto(latent: int, text: str | None, detection: float | None, fuzzing: float | None, when: str,
             informative: tuple[bool, bool] = (True, True)) -> dict:
        return {"latent": latent, "text": text, "kind": "auto", "author": "smollm2-135m", "parsed": text is not None,
                "raw": text or "I cannot tell", "key": f"auto-{latent}-{when}", "created": f"2026-11-23T10:{when}:00+00:00",
                "explainer_examples": [1, 2], "detection_balanced_accuracy": detection, "detection_n": 10,
                "fuzzing_balanced_accuracy": fuzzing, "fuzzing_n": 10,
                **({"detection_informative": informative[0], "fuzzing_informative": informative[1]} if text else {})}

    append_explanations(latents.store, SAE, [
        auto(first, "the future tense of verbs", 0.9, 0.8, "01"), auto(first, "common words", 0.6, 0.5, "02", (True, False)),
        auto(first, None, None, None, "03"), auto(second, "store and shop", 0.55, 0.65, "04", (False, False))])
    latents.label(second, "the word store", author="ann")
    latents.label(third, HOSTILE_LABEL, author="mallory")
