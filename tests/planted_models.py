"""Two tiny Gemma 2 models that differ in one known place, for the model-diffing tests.

Model A is a random tiny Gemma 2 with two planted details: residual dimension 0 indicates the
token ``token`` (its embedding is non-zero there only for that token, and no block before
``BLOCK``'s MLP writes to it; an RMSNorm scales each dimension, so zero stays zero), and MLP
neuron ``NEURON`` of block ``BLOCK`` is dead (zero weights). Model B is A with that neuron
edited to read dimension 0 and write a fixed direction (A's direction of least variance there): it fires on ``token`` only, so B
equals A bit for bit before block ``BLOCK`` and on every other token at it. The direction that
lands in the residual stream (after Gemma 2's post-feedforward norm) is measured, and an SAE
gets a latent on it whose threshold sits between A's activations and B's on the planted token:
the planted truth the contrast must find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.helpers import SAMPLE_TEXT, make_tiny_gemma2, make_tiny_tokenizer

BLOCK = 2  # the edited block (of 4)
NEURON = 7
PLANTED_LATENT = 5
D_SAE = 24
MARKERS = ["<start_of_turn>", "<end_of_turn>"]
# Gemma's template shape: it writes BOS itself, then one marked turn per message
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
            "{% endfor %}")


def make_chat_tokenizer(folder: Path) -> Path:
    """The tiny tokenizer with Gemma-like turn markers (special added tokens) and a chat template."""
    from transformers import AutoTokenizer

    make_tiny_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    return folder


def records(n: int, *, seed: int = 0) -> list[dict]:
    """Text records and chat records over the sample text's words."""
    rng = np.random.default_rng(seed)
    words = SAMPLE_TEXT.split()
    out: list[dict] = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(8, 40))))
        if i % 3 == 2:
            out.append({"messages": [{"role": "user", "content": text[:40]}, {"role": "model", "content": text[40:] or "ok"}],
                        "topic": "chat"})
        else:
            out.append({"text": text, "topic": "text"})
    return out


def plant_models(root: Path, tokenizer_dir: Path, ids: torch.Tensor, token: int) -> dict[str, Path]:
    """Models A and B (see the module doc) and the SAE folder, under ``root``; ``ids`` are contexts
    [n, T] as the store holds them (to place the SAE's threshold)."""
    from transformers import AutoModelForCausalLM

    path_a = make_tiny_gemma2(root / "model-a", tokenizer_dir, seed=3)
    a = AutoModelForCausalLM.from_pretrained(str(path_a), attn_implementation="eager").eval()
    layers = a.model.layers
    with torch.no_grad():
        a.model.embed_tokens.weight[:, 0] = 0
        a.model.embed_tokens.weight[token, 0] = 0.5
        for block in range(BLOCK + 1):  # nothing before block BLOCK's MLP writes dimension 0
            layers[block].self_attn.o_proj.weight[0] = 0
            if block < BLOCK:
                layers[block].mlp.down_proj.weight[0] = 0
        mlp = layers[BLOCK].mlp
        mlp.gate_proj.weight[NEURON] = 0
        mlp.up_proj.weight[NEURON] = 0
        mlp.down_proj.weight[:, NEURON] = 0
        layers[BLOCK].pre_feedforward_layernorm.weight[0] = 0.5  # keep the indicator positive (RMSNorm scales by 1 + w)
        layers[BLOCK].post_feedforward_layernorm.weight.zero_()  # so what the MLP writes keeps its direction
    a.save_pretrained(path_a)
    b = AutoModelForCausalLM.from_pretrained(str(path_a), attn_implementation="eager").eval()
    # B writes along A's direction of least variance at this block: there A's own activations barely move
    u = torch.linalg.eigh(torch.cov(_resid(a, ids).double().T)).eigenvectors[:, 0].float()
    with torch.no_grad():
        mlp = b.model.layers[BLOCK].mlp
        mlp.gate_proj.weight[NEURON, 0] = 50.0
        mlp.up_proj.weight[NEURON, 0] = 1.0
        mlp.down_proj.weight[:, NEURON] = 20 * u
    path_b = root / "model-b"
    b.save_pretrained(path_b)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (path_a / name).exists():
            (path_b / name).write_bytes((path_a / name).read_bytes())
    return {"a": path_a, "b": path_b, "sae": _planted_sae(root / "sae", a, b, ids, token, u)}


def _resid(model, ids: torch.Tensor) -> torch.Tensor:
    from actstore.models.capture import capture_sites

    site = f"blocks.{BLOCK}.hook_resid_post"
    return capture_sites(model, ids, [site])[site].reshape(-1, model.config.hidden_size)


def _planted_sae(folder: Path, a, b, ids: torch.Tensor, token: int, v: torch.Tensor) -> Path:
    """A JumpReLU SAE on block BLOCK's residual stream (SAELens folder): random weak latents, and
    latent PLANTED_LATENT reading the direction ``v`` B writes, with its threshold between the largest
    value A ever gives it and the smallest B gives it on the planted token."""
    from safetensors.numpy import save_file

    xa, xb = _resid(a, ids), _resid(b, ids)
    planted = (ids == token).reshape(-1)
    assert (xb - xa)[~planted].abs().max() == 0, "B must equal A at this block off the planted token"
    top_a, low_b = float((xa @ v).max()), float((xb @ v)[planted].min())
    assert low_b > top_a + 1.0, f"no gap between A ({top_a:.2f}) and B on the planted token ({low_b:.2f})"
    rng = np.random.default_rng(4)
    d = xa.shape[1]
    w_enc = rng.normal(0, 0.3 / np.sqrt(d), (d, D_SAE)).astype(np.float32)
    w_enc[:, PLANTED_LATENT] = v.numpy()
    threshold = rng.uniform(0.05, 0.2, D_SAE).astype(np.float32)
    threshold[PLANTED_LATENT] = (top_a + low_b) / 2
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": w_enc, "W_dec": np.ascontiguousarray(w_enc.T), "b_enc": np.zeros(D_SAE, np.float32),
               "b_dec": np.zeros(d, np.float32), "threshold": threshold}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": d, "d_sae": D_SAE,
                                                 "hook_name": f"blocks.{BLOCK}.hook_resid_post",
                                                 "apply_b_dec_to_input": False, "normalize_activations": "none"}))
    return folder
