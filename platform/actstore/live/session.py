"""The live session: a store's model and SAEs loaded once, answering features on a text,
corpus evidence for a live value, steering, and dose-response sweeps.

>>> session = open_session("runs/demo")  # doctest: +SKIP
>>> session.features("async def main():", top=5)  # doctest: +SKIP
>>> session.steer("The weather today", [("topk-2048", 1444, 8.0)], unit="max").steered_text  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from actstore.api import Store, open_store
from actstore.config import HFSource, LiveConfig, ModelConfig, StoreConfig
from actstore.errors import ConfigError
from actstore.latents import Latents
from actstore.live import run
from actstore.live.checks import check_latent, check_number, check_sampling, check_text
from actstore.live.features import LatentStats, rank_features, with_labels
from actstore.live.steering import Edit, Intervention, Method, OnToken, Positions, Sampling
from actstore.models.capture import capture_sites
from actstore.models.loading import load_model
from actstore.query.windows import WINDOW_SCHEMA, decode_tokens, store_tokenizer, windows
from actstore.saes.encode import SAEEncoder
from actstore.saes.formats import SAEWeights
from actstore.store.metadata import SaeInfo
from actstore.store.sae_files import load_store_sae

__all__ = ["LiveSession", "LoadedSae", "open_session"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedSae:
    """An SAE of the store, its weights on the session's device, and its corpus statistics."""

    info: SaeInfo
    weights: SAEWeights
    encoder: SAEEncoder
    latents: Latents
    stats: LatentStats


def open_session(store: str, *, saes: Sequence[str] | None = None, device: Literal["auto", "cpu", "cuda"] = "auto",
                 storage_options: dict[str, Any] | None = None, sae_paths: dict[str, str] | None = None) -> LiveSession:
    """Load the model and SAEs a store records (see :class:`LiveConfig` for overrides;
    ``sae_paths``: SAE files to load instead of the store's, by SAE name)."""
    return LiveSession.from_config(LiveConfig(store=StoreConfig(url=store, storage_options=storage_options or {}),
                                              saes=None if saes is None else list(saes), device=device,
                                              sae_paths=sae_paths or {}))


class LiveSession:
    """A model and SAEs loaded once. Methods take text (or token ids) and return polars frames
    or frozen results; the web app and the Ray Serve deployment call the same object."""

    def __init__(self, store: Store, model: Any, saes: dict[str, LoadedSae], device: torch.device,
                 *, source: HFSource | None = None) -> None:
        self.store, self.model, self.saes, self.device = store, model, saes, device
        self.source = source  # the model's own tokenizer comes from here, only for chat templates
        self._chat: Any = None
        self.tokenizer = store_tokenizer(store)
        meta = store.meta.tokenizer
        self.bos_id = meta.bos_token_id
        # every special token of the tokenizer (chat-template markers included), flagged and never steered
        self.special_ids = sorted({meta.bos_token_id, meta.pad_token_id, *self.tokenizer.special_ids()}
                                  | ({meta.eos_token_id} if meta.eos_token_id is not None else set()))
        vocab = int(model.config.vocab_size)
        self.suppress = list(range(len(self.tokenizer), vocab))  # ids the model has but the tokenizer lacks
        self.max_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)

    def __repr__(self) -> str:
        return f"<actstore.LiveSession {self.store.location.url!r} saes={sorted(self.saes)} device={self.device}>"

    @classmethod
    def from_config(cls, config: LiveConfig) -> LiveSession:
        store = open_store(config.store.url, storage_options=config.store.storage_options)
        device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        if store.meta.model is None and config.model is None:
            raise ConfigError(f"the store at {store.location.url!r} records no model (it was only ingested); give model=")
        names = config.saes if config.saes is not None else [s.name for s in store.meta.saes]
        infos = {s.name: s for s in store.meta.saes}
        unknown = [n for n in [*names, *config.sae_paths] if n not in infos]
        if unknown:
            raise ConfigError(f"the store at {store.location.url!r} has no SAE {unknown}; it has {sorted(infos) or 'none'}")
        weights = {name: load_store_sae(store, infos[name], config.sae_paths.get(name)) for name in names}
        saes = {name: _loaded(store, infos[name], w, device) for name, w in weights.items()}
        source = config.model or ModelConfig(**store.meta.model["source"],  # type: ignore[index]
                                             dtype=store.meta.model.get("dtype", "float32"))  # type: ignore[union-attr]
        dtype = source.dtype if source.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
        hf = HFSource(**source.model_dump(include={"id", "revision", "gguf_file", "package"}))
        model = load_model(hf, dtype=dtype, device=str(device), attn_implementation=source.attn_implementation)
        return cls(store, model, saes, device, source=hf)

    # -- tokens -------------------------------------------------------------------------------
    def _chat_tokenizer(self) -> Any:
        """The model's own transformers tokenizer, for its chat template (the store keeps the
        vocabulary, not the template); loaded once, on the first chat prompt."""
        if self._chat is None:
            if self.source is None:
                raise ConfigError("chat=True needs the model's tokenizer; open the session from a config or store")
            from actstore.corpus.tokenize import load_tokenizer

            self._chat = load_tokenizer(self.source)
            self.special_ids = sorted({*self.special_ids, *(int(i) for i in self._chat.all_special_ids)})
        if not getattr(self._chat, "chat_template", None):
            raise ConfigError("the model's tokenizer has no chat template; use chat=False")
        return self._chat

    def tokenize(self, text: str | Sequence[int], *, chat: bool = False) -> list[int]:
        """BOS + the text's tokens as the store packs them (or the chat template's ids with
        ``chat``); token ids are taken as given. Empty or over-long input is refused."""
        check_text(text)
        if isinstance(text, str):
            if chat:
                ids = self._chat_ids(text)
            else:
                ids = [self.bos_id, *self.tokenizer.encode(text, add_special_tokens=False)]
        else:
            ids = [int(i) for i in text]
            vocab = int(self.model.config.vocab_size)
            if min(ids) < 0 or max(ids) >= vocab:
                raise ConfigError(f"token ids must lie in [0, {vocab}); got {min(ids)}..{max(ids)}")
        if len(ids) > self.max_tokens:
            raise ConfigError(f"the input has {len(ids)} tokens; the model's context holds {self.max_tokens}")
        return ids

    def _chat_ids(self, text: str) -> list[int]:
        """The ids of ``text`` as the user turn of the chat template, with the generation prompt
        (transformers 5 returns a mapping from ``apply_chat_template(tokenize=True)``; older
        versions a list, batched or not)."""
        out = self._chat_tokenizer().apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                         tokenize=True, return_dict=True)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        ids = ids[0] if len(ids) and isinstance(ids[0], list | tuple) else ids
        return [int(i) for i in ids]

    def special(self, ids: Sequence[int]) -> np.ndarray:
        return np.isin(np.asarray(ids), self.special_ids)

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return decode_tokens(self.store, list(ids))

    def sae(self, name: str) -> LoadedSae:
        if name not in self.saes:
            raise ConfigError(f"SAE {name!r} is not loaded in this session; loaded: {sorted(self.saes)}")
        return self.saes[name]

    def check_latent(self, sae: str, latent: int) -> LoadedSae:
        loaded = self.sae(sae)
        check_latent([loaded.info], sae, latent)
        return loaded

    # -- features -----------------------------------------------------------------------------
    def encode(self, ids: Sequence[int], saes: Sequence[str]) -> dict[str, np.ndarray]:
        """Dense latents [T, d_sae] (float32) of each SAE on ``ids``, from one truncated forward."""
        chosen = [self.sae(s) for s in saes]
        acts = capture_sites(self.model, torch.tensor([list(ids)], device=self.device), [s.info.site for s in chosen])
        return {s.info.name: s.encoder.encode(acts[s.info.site][0].float() * s.info.input_scale).cpu().numpy()
                for s in chosen}

    def features(self, text: str | Sequence[int], *, saes: Sequence[str] | None = None, top: int = 10,
                 rank: Literal["value", "percentile"] = "value", max_density: float | None = None,
                 include_special: bool = False, chat: bool = False) -> pl.DataFrame:
        """Per token, the ``top`` latents across ``saes`` (default all loaded): value, its
        percentile among the latent's corpus values, density, label. BOS and special tokens are
        flagged (``special``) and left out unless ``include_special``. Columns: FEATURES_SCHEMA."""
        check_number("top", top, lo=1, integer=True)
        if max_density is not None:
            check_number("max_density", max_density, lo=0, hi=1)
        ids = self.tokenize(text, chat=chat)
        names = list(saes) if saes is not None else sorted(self.saes)
        dense = self.encode(ids, names)
        frame = rank_features(ids, self.token_texts(ids), self.special(ids), dense, {n: self.saes[n].stats for n in names},
                              top=top, rank=rank, max_density=max_density, include_special=include_special)
        return with_labels(frame, {n: self.saes[n].latents for n in names})

    def latent_values(self, sae: str, latent: int, text: str | Sequence[int], *, chat: bool = False) -> pl.DataFrame:
        """One latent's value on every token of ``text`` (BOS first), with its percentile among
        the latent's corpus values (null where it is 0 or never fired in the corpus) and the
        special-token flag. Columns: pos, token_id, token, special, value, percentile."""
        loaded = self.check_latent(sae, latent)
        ids = self.tokenize(text, chat=chat)
        values = self.encode(ids, [sae])[sae][:, int(latent)]
        latents = np.full(len(ids), int(latent))
        percentile = np.where(values > 0, loaded.stats.percentile(latents, values), np.nan)
        return pl.DataFrame({"pos": np.arange(len(ids), dtype=np.int32), "token_id": np.asarray(ids, np.int32),
                             "token": self.token_texts(ids), "special": self.special(ids),
                             "value": values.astype(np.float32), "percentile": percentile}).with_columns(
            pl.col("percentile").fill_nan(None))

    def evidence(self, sae: str, latent: int, value: float, *, k: int = 10, window: int = 12) -> pl.DataFrame:
        """The ``k`` corpus occurrences of ``latent`` whose values are nearest ``value`` (from the
        index), value descending, with their windows (columns of ``top_k`` plus ``distance``)."""
        loaded = self.check_latent(sae, latent)
        tokens, values = loaded.latents.postings(int(latent))
        if tokens.size == 0:
            return pl.DataFrame(schema={**WINDOW_SCHEMA, "distance": pl.Float32()})
        near = np.sort(np.argsort(np.abs(values - np.float32(value)), kind="stable")[:k])
        frame = windows(self.store, tokens[near], window=window, values=values[near],
                        occurrences=loaded.latents.postings_by_token(int(latent)))
        return frame.with_columns(distance=(pl.col("value") - float(value)).abs().cast(pl.Float32))

    # -- steering -----------------------------------------------------------------------------
    def resolve(self, interventions: Sequence[Intervention | tuple[str, int, float]], *,
                unit: Literal["raw", "max"]) -> list[Edit]:
        """Interventions checked against the loaded SAEs, with strength in raw units."""
        if unit not in ("raw", "max"):
            raise ConfigError(f"unit must be 'raw' or 'max', got {unit!r}")
        if not interventions:
            raise ConfigError("give at least one (sae, latent, strength) intervention")
        edits = []
        for sae, latent, strength in interventions:
            loaded = self.check_latent(sae, latent)
            check_number("strength", strength)
            scale = 1.0
            if unit == "max":
                scale = float(loaded.stats.max[int(latent)])
                if scale <= 0:
                    raise ConfigError(f"latent {latent} of {sae!r} never fired in the store: unit='max' has no scale; use unit='raw'")
            direction = torch.tensor(loaded.weights.W_dec[int(latent)] / loaded.info.input_scale, device=self.device)
            edits.append(Edit(sae, loaded.info.site, int(latent), float(strength) * scale, loaded.encoder, direction,
                              loaded.info.input_scale))
        return edits

    def steer(self, prompt: str | Sequence[int], interventions: Sequence[Intervention | tuple[str, int, float]], *,
              method: Method = "add", positions: Positions = "all", unit: Literal["raw", "max"] = "raw",
              include_special: bool = False, temperature: float = 0.5, top_p: float = 1.0, seed: int = 16,
              max_new_tokens: int = 32, chat: bool = False, on_token: OnToken | None = None) -> run.SteerResult:
        """Default and steered continuations from one call with the same seed, the steered
        positions, and each steered latent's activation on every generated token; see
        :class:`actstore.live.run.SteerResult`. ``on_token(run, token_id)`` is called as each
        token is drawn (``run``: "default" or "steered"), for progress."""
        return run.steer(self, prompt, interventions, method=method, positions=positions, unit=unit,
                         include_special=include_special, chat=chat, on_token=on_token,
                         sampling=self._sampling(temperature, top_p, seed, max_new_tokens))

    def _sampling(self, temperature: float, top_p: float, seed: int, max_new_tokens: int) -> Sampling:
        check_sampling(temperature=temperature, top_p=top_p, seed=seed, max_new_tokens=max_new_tokens)
        return Sampling(float(temperature), float(top_p), int(seed), int(max_new_tokens))

    def sweep(self, prompt: str | Sequence[int], intervention: Intervention | tuple[str, int, float], *,
              strengths: Sequence[float], method: Method = "add", positions: Positions = "all",
              unit: Literal["raw", "max"] = "raw", include_special: bool = False, temperature: float = 0.5,
              top_p: float = 1.0, seed: int = 16, max_new_tokens: int = 32, chat: bool = False,
              on_token: OnToken | None = None, on_row: run.OnRow | None = None,
              default_ids: list[int] | None = None) -> pl.DataFrame:
        """Dose-response: per strength, the latent's mean activation on generated tokens and the
        KL divergence of next-token distributions from the default; see :func:`actstore.live.run.sweep`.
        ``on_token`` (run "sweep-default", or "sweep" for each strength) and ``on_row`` (each row
        as it is done) report progress; ``default_ids``: the default continuation when a
        :meth:`steer` call with the same prompt and sampling drew it already."""
        return run.sweep(self, prompt, intervention, strengths=strengths, method=method, positions=positions, unit=unit,
                         include_special=include_special, chat=chat, on_token=on_token, on_row=on_row,
                         default_ids=default_ids,
                         sampling=self._sampling(temperature, top_p, seed, max_new_tokens))


def _loaded(store: Store, info: SaeInfo, weights: SAEWeights, device: torch.device) -> LoadedSae:
    latents = Latents(store, info.name)
    return LoadedSae(info, weights, SAEEncoder(weights, device, dtype=info.weights_dtype), latents, LatentStats.of(latents))
