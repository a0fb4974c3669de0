"""The top-level store (actstore/api.py): the query and loader calls sit above store/, which imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import actstore
from actstore.store import store as storage

PACKAGE = Path(actstore.__file__).parent
BOTTOM = ("store", "saes")  # the lowest layers
ALLOWED = ("actstore.store", "actstore.saes", "actstore.errors")


def _actstore_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.split(".")[0] == "actstore"}


def test_the_bottom_layers_import_nothing_above_them() -> None:
    upward = {
        f"{path.relative_to(PACKAGE)} imports {module}"
        for layer in BOTTOM
        for path in (PACKAGE / layer).rglob("*.py")
        for module in _actstore_imports(path)
        if not module.startswith(ALLOWED)
    }
    assert not upward


def test_open_gives_the_query_calls_and_keeps_them_on_reopen(coded_store: Path) -> None:
    store = actstore.open(str(coded_store))
    assert isinstance(store, actstore.Store) and isinstance(store, storage.Store)
    assert isinstance(store.reopen(mode="r"), actstore.Store)
    assert store.sae("res1").info.d_sae > 0
    assert not hasattr(storage.Store, "sae")  # the storage layer itself offers no query calls
