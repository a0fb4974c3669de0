"""JSON Schemas of the job configs and the store's root metadata, generated from the pydantic models.

``python -m actstore.schemas [FOLDER]`` rewrites them (default ``schemas/``); a test fails when
the committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from actstore.config import ExtractConfig, IngestConfig, LiveConfig, TrainConfig
from actstore.explain.config import ExplainConfig
from actstore.store.metadata import RootMetadata

__all__ = ["SCHEMAS", "render_schemas", "write_schemas"]

SCHEMAS: dict[str, type[BaseModel]] = {
    "ingest-config.schema.json": IngestConfig,
    "extract-config.schema.json": ExtractConfig,
    "store-metadata.schema.json": RootMetadata,
    "train-config.schema.json": TrainConfig,
    "live-config.schema.json": LiveConfig,
    "explain-config.schema.json": ExplainConfig,
}


def render_schemas() -> dict[str, str]:
    """File name -> schema text."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)
