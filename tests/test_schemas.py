"""The committed JSON Schemas match the pydantic models they are generated from."""

from pathlib import Path

from actstore.schemas import render_schemas

SCHEMAS = Path(__file__).parents[1] / "schemas"


def test_schemas_are_fresh() -> None:
    for name, text in render_schemas().items():
        path = SCHEMAS / name
        assert path.exists(), f"{path} is missing: run `make schemas`"
        assert path.read_text() == text, f"{path} is stale: run `make schemas`"


def test_importing_actstore_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, actstore; print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
