"""Reading SAE files: Gemma Scope ``params.npz`` and SAELens folders, local or on the Hub.

Gemma Scope parameters take raw activations (the training normalisation is folded in), so
there is no b_dec subtraction before encoding. Nothing is unpickled: ``np.load`` runs with
``allow_pickle=False`` and SAELens weights come from safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from actstore.errors import ConfigError

__all__ = ["Architecture", "SAEWeights", "load_sae", "sae_files", "saelens_hook_name"]

Architecture = Literal["jumprelu", "topk", "relu"]
_GEMMA_SCOPE_KEYS = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec", "threshold": "threshold"}


@dataclass(frozen=True, eq=False)
class SAEWeights:
    """An SAE's parameters (float32 numpy) and what it needs to encode."""

    architecture: Architecture
    W_enc: np.ndarray  # [d_in, d_sae]
    W_dec: np.ndarray  # [d_sae, d_in]
    b_enc: np.ndarray  # [d_sae]
    b_dec: np.ndarray  # [d_in]
    threshold: np.ndarray | None  # [d_sae], jumprelu only
    k: int | None  # topk only
    apply_b_dec_to_input: bool
    hook_name: str | None
    source: str
    sha256: str

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def rounded(self, dtype: str) -> SAEWeights:
        """These weights rounded to ``dtype`` (bfloat16: round to nearest even, as torch casts),
        held in float32: what an :class:`~actstore.saes.encode.SAEEncoder` built with that dtype encodes with."""
        if dtype == "float32":
            return self
        import torch

        def r(a: np.ndarray) -> np.ndarray:
            return torch.from_numpy(np.ascontiguousarray(a)).to(torch.bfloat16).float().numpy()

        return dataclasses.replace(self, W_enc=r(self.W_enc), W_dec=r(self.W_dec), b_enc=r(self.b_enc), b_dec=r(self.b_dec),
                                   threshold=None if self.threshold is None else r(self.threshold))

    def __post_init__(self) -> None:
        d_in, d_sae = self.W_enc.shape
        shapes = {"W_dec": (self.W_dec.shape, (d_sae, d_in)), "b_enc": (self.b_enc.shape, (d_sae,)),
                  "b_dec": (self.b_dec.shape, (d_in,))}
        if self.threshold is not None:
            shapes["threshold"] = (self.threshold.shape, (d_sae,))
        for name, (got, want) in shapes.items():
            if got != want:
                raise ConfigError(f"SAE {self.source!r}: {name} has shape {got}, expected {want} from W_enc {self.W_enc.shape}")
        if self.architecture == "jumprelu" and self.threshold is None:
            raise ConfigError(f"SAE {self.source!r}: a JumpReLU SAE needs a threshold")
        if self.architecture == "topk" and not self.k:
            raise ConfigError(f"SAE {self.source!r}: a TopK SAE needs k")


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def load_gemma_scope(path: Path, *, source: str) -> SAEWeights:
    with np.load(path, allow_pickle=False) as npz:
        params = {_GEMMA_SCOPE_KEYS.get(k.lower(), k): npz[k] for k in npz.files}
    missing = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"} - set(params)
    if missing:
        raise ConfigError(f"{source}: params.npz lacks {sorted(missing)} (has {sorted(params)})")
    return SAEWeights("jumprelu", _f32(params["W_enc"]), _f32(params["W_dec"]), _f32(params["b_enc"]),
                      _f32(params["b_dec"]), _f32(params["threshold"]), None, False, None, source, _sha256([path]))


def saelens_hook_name(cfg: dict[str, Any]) -> str | None:
    """The hook a SAELens ``cfg.json`` names: SAELens 6 keeps it (with the model name, context
    size and ``sae_lens_version``) under ``metadata``; earlier versions at the top level, some
    as ``hook_point``."""
    raw = cfg.get("metadata")
    metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
    hook = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    return None if hook is None else str(hook)


def load_saelens(folder: Path, *, source: str) -> SAEWeights:
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "cfg.json").read_text())
    weights_path = folder / "sae_weights.safetensors"
    params = load_file(str(weights_path))
    arch = str(cfg.get("architecture", "standard")).lower()
    architecture: Architecture = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk"}.get(arch)  # type: ignore[assignment]
    if architecture is None:
        raise ConfigError(f"{source}: SAELens architecture {arch!r} is not supported (standard/relu, jumprelu, topk)")
    normalize = cfg.get("normalize_activations") or "none"
    if normalize != "none":
        raise ConfigError(f"{source}: normalize_activations={normalize!r} is not supported; fold it into the weights")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ConfigError(f"{source}: rescale_acts_by_decoder_norm=true is not supported; fold the decoder norms into the weights")
    threshold = params.get("threshold")
    if threshold is None and "log_threshold" in params:
        threshold = np.exp(params["log_threshold"])
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    weights = SAEWeights(architecture, _f32(params["W_enc"]), _f32(params["W_dec"]), _f32(params["b_enc"]),
                         _f32(params["b_dec"]), None if threshold is None else _f32(threshold),
                         None if k is None else int(k), bool(cfg.get("apply_b_dec_to_input", True)),
                         saelens_hook_name(cfg), source, _sha256([folder / "cfg.json", weights_path]))
    for field, value in (("d_in", weights.d_in), ("d_sae", weights.d_sae)):
        if field in cfg and int(cfg[field]) != value:
            raise ConfigError(f"{source}: cfg.json says {field}={cfg[field]}, the weights have {value}")
    return weights


def _from_hub(path: str, revision: str | None, local_files_only: bool = False) -> Path:
    """Download a Gemma Scope or SAELens SAE given as 'owner/repo/sub/folder': from the local
    Hugging Face cache when it is there (``local_files_only``: only from there); otherwise one
    request first asks whether the repo exists, so a local path that is simply missing fails at
    once instead of after the Hub client's retries (~50 s)."""
    from huggingface_hub import HfApi

    parts = path.strip("/").split("/")
    if len(parts) < 3:
        raise ConfigError(f"SAE path {path!r} is neither a local file/folder nor a Hub path owner/repo/folder")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    cached, _ = _hub_files(repo, sub, revision, local_only=True)
    if cached is not None:
        return cached
    if local_files_only:
        raise ConfigError(f"SAE path {path!r} is neither a local file or folder here nor in the local Hugging Face cache")
    try:
        exists = HfApi().repo_exists(repo)
    except Exception as exc:
        raise ConfigError(f"SAE path {path!r} is not a local file or folder here, and the Hub cannot be asked "
                          f"about {repo!r} ({type(exc).__name__})") from None
    if not exists:
        raise ConfigError(f"SAE path {path!r} is not a local file or folder here, and the Hub has no repo {repo!r}")
    found, errors = _hub_files(repo, sub, revision, local_only=False)
    if found is None:
        raise ConfigError(f"cannot fetch SAE {path!r} from the Hub ({'; '.join(errors)})")
    return found


def _hub_files(repo: str, sub: str, revision: str | None, *, local_only: bool) -> tuple[Path | None, list[str]]:
    """params.npz, or a SAELens folder, under ``sub`` of a Hub repo (``local_only``: the cache)."""
    from huggingface_hub import hf_hub_download

    errors: list[str] = []
    for names in (["params.npz"], ["cfg.json", "sae_weights.safetensors"]):
        try:
            files = [Path(hf_hub_download(repo, f"{sub}/{name}", revision=revision, local_files_only=local_only))
                     for name in names]
            return (files[0] if names == ["params.npz"] else files[0].parent), errors
        except Exception as exc:
            errors.append(f"{names[0]}: {type(exc).__name__}")
    return None, errors


def sae_files(local: Path) -> list[Path]:
    """The files that make up the SAE at a local path, in the order its sha256 hashes them:
    ``params.npz`` (the file itself or inside the folder), or a SAELens folder's ``cfg.json``
    and ``sae_weights.safetensors``."""
    if local.is_file() and local.suffix == ".npz":
        return [local]
    if (local / "params.npz").exists():
        return [local / "params.npz"]
    if (local / "cfg.json").exists() and (local / "sae_weights.safetensors").exists():
        return [local / "cfg.json", local / "sae_weights.safetensors"]
    raise ConfigError(f"{str(local)!r} holds neither params.npz (Gemma Scope) nor cfg.json + sae_weights.safetensors (SAELens)")


def load_sae(path: str, *, revision: str | None = None, local_files_only: bool = False) -> SAEWeights:
    """Load an SAE from a params.npz file, a folder holding one, a SAELens folder, or the Hub
    (``local_files_only``: a Hub path only from the local cache, never the network)."""
    local = Path(os.path.expanduser(path))
    if not local.exists():
        local = _from_hub(path, revision, local_files_only)
    files = sae_files(local)
    if files[0].suffix == ".npz":
        return load_gemma_scope(files[0], source=path)
    return load_saelens(files[0].parent, source=path)
