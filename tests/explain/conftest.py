"""A private copy of the shared coded store (explanations get written into it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def explain_store(coded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("explain") / "store"
    shutil.copytree(coded_store, target)
    return target
