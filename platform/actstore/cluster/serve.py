"""The live session as a Ray Serve deployment: the same :class:`LiveSession` object, loaded
once per replica (on a GPU when ``num_gpus`` is given), answering with plain JSON-able data.

>>> from ray import serve
>>> handle = serve.run(live_app(LiveConfig(store={"url": "runs/demo"})))  # doctest: +SKIP
>>> handle.features.remote("async def main():").result()  # doctest: +SKIP

Over HTTP (Serve's proxy listens on 127.0.0.1:8000 unless configured otherwise), POST a JSON
object ``{"op": "features" | "evidence" | "steer" | "sweep", ...keyword arguments}``. Nothing
it answers writes to the store.
"""

from __future__ import annotations

from typing import Any

from actstore.config import LiveConfig
from actstore.errors import ConfigError
from actstore.live.session import LiveSession

__all__ = ["LiveDeployment", "live_app"]


class LiveDeployment:
    """One replica: a session loaded from a :class:`LiveConfig` (passed as JSON)."""

    OPS = ("features", "evidence", "steer", "sweep")

    def __init__(self, config_json: str) -> None:
        self.session = LiveSession.from_config(LiveConfig.model_validate_json(config_json))

    def features(self, text: str | list[int], **options: Any) -> list[dict[str, Any]]:
        return self.session.features(text, **options).to_dicts()

    def evidence(self, sae: str, latent: int, value: float, **options: Any) -> list[dict[str, Any]]:
        return self.session.evidence(sae, latent, value, **options).to_dicts()

    def steer(self, prompt: str | list[int], interventions: list[tuple[str, int, float]], **options: Any) -> dict[str, Any]:
        return self.session.steer(prompt, [tuple(i) for i in interventions], **options).to_dict()  # type: ignore[misc]

    def sweep(self, prompt: str | list[int], intervention: tuple[str, int, float], **options: Any) -> list[dict[str, Any]]:
        return self.session.sweep(prompt, tuple(intervention), **options).to_dicts()  # type: ignore[arg-type]

    async def __call__(self, request: Any) -> Any:
        body = await request.json()
        op = body.pop("op", None) if isinstance(body, dict) else None
        if op not in self.OPS:
            return {"error": f"op must be one of {list(self.OPS)}, got {op!r}"}
        try:
            return getattr(self, op)(**body)
        except (ConfigError, TypeError) as exc:
            return {"error": str(exc)}


def live_app(config: LiveConfig, *, num_cpus: float = 1, num_gpus: float = 0) -> Any:
    """A Serve application of one :class:`LiveDeployment` replica."""
    from ray import serve

    deployment = serve.deployment(name="actstore-live", ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    return deployment(LiveDeployment).bind(config.model_dump_json())
