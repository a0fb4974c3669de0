"""The cross-layer page of a latent: the latents of the store's other SAEs, layer by layer, that
carry it on (decoder cosine and co-firing, :mod:`actstore.query.across`), with their labels and
links to their own feature and cross-layer pages, so a concept can be followed through the model."""

from __future__ import annotations

from typing import Any

from actstore.errors import RequestError
from actstore.models.sites import parse_site
from actstore.query.across import across_layers, neighbours
from actstore.web.related import COFIRING_BYTES, labelled
from actstore.web.source import StoreSource

__all__ = ["ACROSS_LIMITS", "across_view"]

ACROSS_LIMITS = {"window": 100, "top": 20}


def across_view(source: StoreSource, sae: str, latent: int, *, window: int = 2, top: int = 3) -> dict[str, Any]:
    """Per other SAE within ``window`` layers (in block order): its ``top`` latents by decoder
    cosine and by co-firing Jaccard with ``latent``, labelled, or why no cosine is shown."""
    for name, value, lo in (("window", window, 0), ("top", top, 1)):
        if not lo <= value <= ACROSS_LIMITS[name]:
            raise RequestError(f"{name} must be between {lo} and {ACROSS_LIMITS[name]}, got {value}")
    latents = source.sae(sae)
    latents.density(latent)  # an unknown latent fails here, by number
    others = neighbours(latents, [source.sae(s.name) for s in source.store.meta.saes], window=window)
    # the co-firing budget of a feature page, in rows of this SAE's codes
    found = across_layers(latents, latent, saes=others, top=top, max_rows=COFIRING_BYTES // (4 * latents.info.code_cap))
    groups = [{"sae": o.name, "site": o.info.site, "layer": parse_site(o.info.site).layer,
               "rows": labelled(o.explanations(current=True), found.frame.filter(found.frame["sae"] == o.name).drop(
                   "sae", "layer", "site")),
               "missing": found.missing.get(o.name)} for o in others]
    current = latents.explanations(current=True)
    label = current.filter(current["latent"] == latent)
    return {"sae": sae, "latent": latent, "site": latents.info.site, "layer": parse_site(latents.info.site).layer,
            "label": label["text"][0] if label.height else None, "window": window, "top": top, "saes": groups}
