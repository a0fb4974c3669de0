"""The live session on the tiny Gemma 2 and the shared coded store (a copy: logits are written)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import actstore
from actstore.cli import main
from actstore.errors import ConfigError, LogitsNotFoundError
from actstore.live.features import FEATURES_SCHEMA
from actstore.live.hooks import PositionClock
from actstore.live.logits import keep_output_logits
from actstore.live.run import SWEEP_SCHEMA, TOKENS_SCHEMA
from actstore.live.session import LiveSession, open_session
from actstore.live.steering import Steerer
from actstore.models.capture import capture_sites, decoder_layers
from actstore.saes.formats import load_sae
from actstore.store.codes import read_codes
from tests.coded_store import D_SAE, SAE, SITE

LAYER = 1  # SITE is blocks.1.hook_resid_post


@pytest.fixture(scope="module")
def store_copy(coded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(coded_store, tmp_path_factory.mktemp("live") / "store"))


@pytest.fixture(scope="module")
def session(store_copy: Path) -> LiveSession:
    return open_session(str(store_copy), device="cpu")


def _fires_somewhere(session: LiveSession, ids: list[int]) -> tuple[int, np.ndarray]:
    """A latent firing on ``ids`` (the densest there) and its values."""
    dense = session.encode(ids, [SAE])[SAE]
    latent = int(np.argmax((dense > 0).sum(0)))
    return latent, dense[:, latent]


def test_features_on_stored_ids_equal_stored_codes(session: LiveSession) -> None:
    store = session.store
    for ctx in (0, 5):
        ids = store.read("tokens/ids", slice(ctx, ctx + 1))[0].tolist()
        frame = session.features(ids, top=20, include_special=True)
        assert frame.schema == FEATURES_SCHEMA
        idx, val = (part[0] for part in read_codes(store, SAE, slice(ctx, ctx + 1)))
        for pos in range(len(ids)):
            got = frame.filter(pl.col("pos") == pos)
            keep = idx[pos] >= 0
            assert got["latent"].to_list() == idx[pos][keep].tolist(), (ctx, pos)
            # stored values are bfloat16 (the default): rounded to nearest, a relative error of at most 2**-8
            np.testing.assert_allclose(got["value"].to_numpy(), val[pos][keep].astype(np.float32), rtol=2**-8, atol=1e-5)
        assert frame.filter(pl.col("pos") == 0)["special"].all()  # BOS, flagged
        latent = int(idx[1][0])  # one latent on every token: its stored code, 0 where it was not stored
        stored = np.array([val[p][idx[p] == latent].sum() for p in range(len(ids))], np.float32)
        np.testing.assert_allclose(session.latent_values(SAE, latent, ids)["value"].to_numpy(), stored, rtol=2**-8, atol=1e-5)  # bfloat16 stored
    assert 0 not in session.features(ids, top=20)["pos"].to_list()  # and left out by default
    labelled = int(frame["latent"][-1])
    session.sae(SAE).latents.label(labelled, "a label", author="test")  # read at once: no restart
    frame = session.features(ids, top=20)
    assert set(frame.filter(pl.col("latent") == labelled)["label"]) == {"a label"}
    assert frame.filter(pl.col("latent") != labelled)["label"].null_count() == frame.filter(pl.col("latent") != labelled).height


def test_percentiles_agree_with_corpus_values(session: LiveSession) -> None:
    frame = session.features(session.store.read("tokens/ids", slice(3, 4))[0].tolist(), top=3)
    edges = actstore.open(str(session.store.location.url)).sae(SAE).hist_edges
    for row in frame.head(12).iter_rows(named=True):
        _, corpus = session.saes[SAE].latents.postings(row["latent"])  # the index: every occurrence
        b = np.searchsorted(edges, row["value"], side="right")
        lo = edges[b - 1] if b > 0 else 0.0
        hi = edges[b] if b < len(edges) else np.inf
        assert 100 * (corpus < lo).mean() <= row["percentile"] <= 100 * (corpus < hi).mean()
        assert row["density"] == pytest.approx(corpus.size / session.store.info().n_tokens, rel=0.2)
    by_pct = session.features(session.store.read("tokens/ids", slice(3, 4))[0].tolist(), top=3, rank="percentile")
    first = by_pct.filter(pl.col("rank") == 0)["percentile"].to_numpy()
    assert (first >= by_pct.filter(pl.col("rank") == 1)["percentile"].to_numpy()[: first.size]).all()


def test_evidence_is_nearest_in_the_index(session: LiveSession) -> None:
    latent = int(np.argmax(session.saes[SAE].latents.counts()))
    _, corpus = session.saes[SAE].latents.postings(latent)
    target = float(np.median(corpus))
    frame = session.evidence(SAE, latent, target, k=4, window=3)
    assert len(frame) == 4
    assert frame["distance"].max() <= np.sort(np.abs(corpus - np.float32(target)))[3] + 1e-6
    assert (frame["values"].list.get(0).is_not_null()).all()


def _plain_generate(session: LiveSession, ids: list[int], *, seed: int, temperature: float, n: int) -> list[int]:
    torch.manual_seed(seed)
    out = session.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=n,
                                 suppress_tokens=session.suppress, pad_token_id=1)
    return out[0, len(ids):].tolist()


def test_strength_zero_is_plain_generate(session: LiveSession) -> None:
    prompt = "the quick brown fox"
    ids = session.tokenize(prompt)
    latent, _ = _fires_somewhere(session, ids)
    result = session.steer(prompt, [(SAE, latent, 0.0)], temperature=0.9, seed=3, max_new_tokens=10)
    plain = _plain_generate(session, ids, seed=3, temperature=0.9, n=10)
    assert result.default_ids == plain
    assert result.steered_ids == plain
    assert result.steered_positions  # the hook ran, with strength 0
    assert result.tokens.schema == TOKENS_SCHEMA


def test_add_moves_the_site_by_exactly_strength_times_w_dec(session: LiveSession) -> None:
    """Observed at the hook: the site's output before the edit (a hook registered first) and the
    next layer's input after it, at every forward of the call (prompt and each decoding step)."""
    prompt, strength = "a sparse autoencoder reads", 2.5
    ids = session.tokenize(prompt)
    latent, _ = _fires_somewhere(session, ids)
    w_dec = load_sae(session.saes[SAE].info.source).W_dec[latent]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    pre_edit: list[torch.Tensor] = []
    layers = decoder_layers(session.model)
    h1 = layers[LAYER].register_forward_hook(lambda m, a, o: pre_edit.append((o[0] if isinstance(o, tuple) else o)[0].clone()))
    h2 = layers[LAYER + 1].register_forward_pre_hook(
        lambda m, a, k: seen.append((pre_edit[-1], (a[0] if a else k["hidden_states"])[0].clone())), with_kwargs=True)
    try:
        result = session.steer(prompt, [(SAE, latent, strength)], positions="generated", temperature=0, max_new_tokens=8)
    finally:
        h1.remove()
        h2.remove()
    phases: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for before, after in seen:  # each phase starts with a multi-token forward
        if before.shape[0] > 1:
            phases.append([])
        phases[-1].append((before, after))
    assert len(phases) == 4  # default generation, steered generation, the two recording passes
    diffs = [torch.cat([a - b for b, a in phase]) for phase in phases]
    assert all(float(d.abs().max()) == 0.0 for d in (diffs[0], diffs[2]))  # the default run is never edited
    full = ids + result.steered_ids
    special = session.special(full)
    expected = [p for p in range(len(ids), len(full)) if not special[p]]
    assert result.steered_positions == [p for p in expected if p < len(full) - 1]  # the last token is never fed back
    for diff in (diffs[1], diffs[3]):
        for p in range(diff.shape[0]):
            want = strength * w_dec if p in expected else np.zeros_like(w_dec)
            np.testing.assert_allclose(diff[p].numpy(), want, atol=1e-5, err_msg=f"position {p}")
    assert len(expected) >= 3


def test_clamp_to_current_value_changes_nothing(session: LiveSession) -> None:
    ids = session.tokenize("features fire on tokens")
    latent, values = _fires_somewhere(session, ids)
    pos = int(np.argmax(values))
    row = capture_sites(session.model, torch.tensor([ids]), [SITE])[SITE][:, pos : pos + 1]  # the firing token's activation
    edit = session.resolve([(SAE, latent, 0.0)], unit="raw")[0]
    clamp = dataclasses.replace(edit, coef=float(edit.value(row[0])[0]))  # clamp to its current value
    clock = PositionClock()
    clock.positions, clock.ids = torch.tensor([pos]), torch.tensor([ids[pos]])
    steerer = Steerer([clamp], "clamp", "all", len(ids), torch.tensor(session.special_ids), False, clock)
    assert torch.equal(steerer.edit(SITE, row), row)
    assert steerer.steered == {pos}
    silent = int(np.flatnonzero(session.encode(ids, [SAE])[SAE].max(0) == 0)[0])  # clamped to its value 0
    result = session.steer("features fire on tokens", [(SAE, silent, 0.0)], method="clamp", positions="prompt",
                           temperature=0, max_new_tokens=6)
    assert result.steered_ids == result.default_ids and len(result.steered_positions) == len(ids) - 1


def test_sweep_frame(session: LiveSession) -> None:
    ids = session.tokenize("def f(x):")
    latent, _ = _fires_somewhere(session, ids)
    frame = session.sweep("def f(x):", (SAE, latent, 0.0), strengths=[0.0, 8.0], unit="max", temperature=0,
                          max_new_tokens=6)
    assert frame.schema == SWEEP_SCHEMA
    assert frame["kl"][0] == pytest.approx(0.0, abs=1e-6) and frame["kl"][1] > 1e-4
    assert frame["mean_activation"][0] == frame["mean_activation_before"][0]


def test_logits_equal_numpy_and_show_in_top(session: LiveSession, store_copy: Path, capsys) -> None:
    url = str(store_copy)
    assert main(["index", url, "--no-logits"]) == 0
    with pytest.raises(LogitsNotFoundError, match="actstore logits"):  # this store was indexed without them
        actstore.open(url).sae(SAE).logits(3)
    assert main(["index", url]) == 0  # kept with the index: the model and the SAE are on this machine
    assert f"output logits kept for {SAE}" in capsys.readouterr().out
    kept = actstore.open(url).sae(SAE).logits(17)
    keep_output_logits(session, SAE)  # what `actstore logits` computes
    assert actstore.open(url).sae(SAE).logits(17).equals(kept)
    vocab = len(session.tokenizer)
    W_U = session.model.get_output_embeddings().weight.detach().numpy()[:vocab].astype(np.float64)
    W_dec = load_sae(session.saes[SAE].info.source).W_dec.astype(np.float64)
    for latent in (0, 17, D_SAE - 1):
        ref = W_dec[latent] @ W_U.T
        frame = actstore.open(str(store_copy)).sae(SAE).logits(latent)
        assert frame.filter(pl.col("side") == "top")["token_id"].to_list() == np.argsort(-ref, kind="stable")[:10].tolist()
        assert frame.filter(pl.col("side") == "bottom")["token_id"].to_list() == np.argsort(ref, kind="stable")[:10].tolist()
        np.testing.assert_allclose(frame.filter(pl.col("side") == "top")["value"].to_numpy(), np.sort(ref)[::-1][:10], rtol=1e-4)
    assert main(["top", str(store_copy), "--sae", SAE, "--latent", "17", "--k", "2"]) == 0
    assert "output logits  top: " in capsys.readouterr().out


def test_bad_input_is_refused(session: LiveSession, store_copy: Path) -> None:
    with pytest.raises(ConfigError, match="out of range"):
        session.steer("the fox", [(SAE, D_SAE, 1.0)])
    with pytest.raises(ConfigError, match="no SAE"):
        open_session(str(store_copy), saes=["nope"], device="cpu")
    with pytest.raises(ConfigError, match="not loaded"):
        session.features("the fox", saes=["nope"])
    with pytest.raises(ConfigError, match="empty"):
        session.features("   ")
    with pytest.raises(ConfigError, match="context holds"):
        session.features([5] * (session.max_tokens + 1))
    with pytest.raises(ConfigError, match="method"):
        session.steer("the fox", [(SAE, 1, 1.0)], method="multiply")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="chat template"):
        session.steer("the fox", [(SAE, 1, 1.0)], chat=True)
    for kwargs, message in (({"seed": 10**20}, "seed must be an integer in \\[0, 4294967295\\]"),
                            ({"temperature": float("nan")}, "temperature must be a finite number >= 0, got nan"),
                            ({"top_p": 1.5}, "top_p must be a finite number in \\(0, 1\\]"),
                            ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1")):
        with pytest.raises(ConfigError, match=message):
            session.steer("the fox", [(SAE, 1, 1.0)], **kwargs)
    with pytest.raises(ConfigError, match="strength must be a finite number, got inf"):
        session.sweep("the fox", (SAE, 1, 0.0), strengths=[1.0, float("inf")])
    with pytest.raises(ConfigError, match="max_density must be a finite number in \\[0, 1\\], got nan"):
        session.features("the fox", max_density=float("nan"))


def test_cli_inspect_and_steer(store_copy: Path, capsys) -> None:
    assert main(["inspect", str(store_copy), "the quick brown fox", "--json", "--top", "2", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and set(rows[0]) == set(FEATURES_SCHEMA) and all(r["rank"] < 2 for r in rows)
    assert main(["steer", str(store_copy), "--sae", SAE, "--latent", "4", "--strength", "3", "--max-new-tokens", "4",
                 "--seed", "1", "--json", "--device", "cpu", "the quick"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"default", "steered", "steered_positions", "tokens", "notes"}
    assert main(["steer", str(store_copy), "--sae", "nope", "--latent", "4", "--strength", "3", "the quick"]) == 2
    assert "no SAE" in capsys.readouterr().err
