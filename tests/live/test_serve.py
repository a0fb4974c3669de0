"""The live session behind Ray Serve, on the session's local Ray cluster (no HTTP proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actstore.cluster.serve import live_app
from actstore.config import LiveConfig
from tests.coded_store import SAE


def test_serve_deployment_answers_like_the_session(coded_store: Path, ray_cluster: None) -> None:
    from ray import serve

    serve.start(proxy_location="Disabled")
    try:
        handle = serve.run(live_app(LiveConfig(store={"url": str(coded_store)}, device="cpu"), num_cpus=0.5),
                           name="live-test", route_prefix=None)
        rows = handle.features.remote("the quick brown fox", top=2).result()
        assert rows and {"pos", "sae", "latent", "percentile"} <= set(rows[0])
        out = handle.steer.remote("the quick", [(SAE, rows[0]["latent"], 2.0)], max_new_tokens=3, seed=1).result()
        assert out["steered_positions"] and {"default", "steered"} <= set(out)
        with pytest.raises(Exception, match="out of range"):
            handle.steer.remote("the quick", [(SAE, 10**6, 2.0)]).result()
    finally:
        serve.shutdown()
