"""The same browser as a Ray Serve deployment, for a cluster: each replica builds the app
(:func:`actstore.web.app.create_app`) and opens the store itself.

>>> from ray import serve
>>> from actstore.web.deployment import browser_app
>>> serve.run(browser_app("s3://bucket/runs/gemma"), route_prefix="/")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["browser_app"]


def browser_app(url: str, *, storage_options: dict[str, Any] | None = None, num_replicas: int = 1,
                num_cpus: float = 0.5, model: bool = False, num_gpus: float = 0) -> Any:
    """A bound Ray Serve application serving the browser over the store at ``url``; with
    ``model`` each replica also loads the store's model and SAEs (features on a text, steering)."""
    from ray import serve

    from actstore.web.app import create_app

    def build() -> Any:
        session = None
        if model:
            from actstore.live import open_session

            session = open_session(url, storage_options=storage_options)
        return create_app(url, storage_options=storage_options, session=session)

    class Browser:
        """The browser app behind Ray Serve's HTTP proxy."""

    deployment = serve.deployment(name="actstore-browser", num_replicas=num_replicas,
                                  ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})(serve.ingress(build)(Browser))
    return deployment.bind()
