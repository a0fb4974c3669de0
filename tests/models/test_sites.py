"""Site parity on a tiny random Gemma 2 (randomised norms) and a tiny Llama."""

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from actstore.errors import ConfigError
from actstore.models.capture import capture_sites
from actstore.models.sites import parse_site, site_width
from tests.helpers import TINY_GEMMA2

KINDS = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_mlp_out", "hook_resid_post")


def _randomise_norms(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def gemma():
    torch.manual_seed(0)
    return _randomise_norms(Gemma2ForCausalLM(Gemma2Config(**TINY_GEMMA2, attn_implementation="eager")).eval())


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2)
    return _randomise_norms(LlamaForCausalLM(cfg).eval())


def _all_sites(n_layers):
    return [f"blocks.{layer}.{kind}" for layer in range(n_layers) for kind in KINDS]


def test_gemma2_resid_post_matches_hidden_states_except_the_last(gemma) -> None:
    ids = torch.randint(3, 256, (2, 20))  # 20 > sliding window 8: the window bites
    sites = capture_sites(gemma, ids, _all_sites(4), truncate=False)
    with torch.no_grad():
        hidden = gemma(ids, output_hidden_states=True).hidden_states
    for layer in range(3):
        assert torch.equal(sites[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1])
    last = sites["blocks.3.hook_resid_post"]
    assert not torch.allclose(last, hidden[4])  # hidden_states[-1] has the final norm applied
    assert torch.allclose(gemma.model.norm(last), hidden[4], atol=1e-5)


@pytest.mark.parametrize("model_name", ["gemma", "llama"])
def test_block_identities(model_name, request) -> None:
    model = request.getfixturevalue(model_name)
    n = model.config.num_hidden_layers
    ids = torch.randint(3, 256, (2, 12))
    sites = capture_sites(model, ids, _all_sites(n), truncate=False)
    for layer in range(n):
        s = lambda k, layer=layer: sites[f"blocks.{layer}.{k}"]  # noqa: E731
        assert torch.allclose(s("hook_resid_post"), s("hook_resid_pre") + s("hook_attn_out") + s("hook_mlp_out"), atol=1e-5)
        attn = model.model.layers[layer].self_attn
        with torch.no_grad():
            projected = attn.o_proj(s("attn.hook_z"))
        if model_name == "gemma":  # attn_out is after the post-attention norm
            projected = model.model.layers[layer].post_attention_layernorm(projected)
        assert torch.allclose(projected, s("hook_attn_out"), atol=1e-5)
        if layer:
            assert torch.equal(s("hook_resid_pre"), sites[f"blocks.{layer - 1}.hook_resid_post"])


def test_gemma2_z_is_n_heads_times_head_dim(gemma) -> None:
    sites = capture_sites(gemma, torch.randint(3, 256, (1, 5)), ["blocks.0.attn.hook_z"])
    assert sites["blocks.0.attn.hook_z"].shape == (1, 5, 128)
    assert site_width(gemma.config, parse_site("blocks.0.attn.hook_z")) == 128
    assert site_width(gemma.config, parse_site("blocks.0.hook_mlp_out")) == 64


def test_truncated_forward_matches_full_and_skips_later_blocks(gemma) -> None:
    ids = torch.randint(3, 256, (2, 10))
    wanted = ["blocks.1.hook_mlp_out", "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"]
    ran = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(gemma.model.layers)]
    handles.append(gemma.lm_head.register_forward_hook(lambda m, a, o: ran.append("lm_head")))
    try:
        truncated = capture_sites(gemma, ids, wanted)
        assert ran == [0]  # block 1 stopped at its MLP output; blocks 2, 3 and the head never ran
        ran.clear()
        full = capture_sites(gemma, ids, wanted, truncate=False)
    finally:
        for h in handles:
            h.remove()
    for name in wanted:
        assert torch.equal(truncated[name], full[name])


def test_bad_sites_are_refused(gemma) -> None:
    with pytest.raises(ConfigError, match="unknown site"):
        parse_site("blocks.1.resid_post")
    with pytest.raises(ConfigError, match="layers 0..3"):
        site_width(gemma.config, parse_site("blocks.4.hook_resid_post"))
