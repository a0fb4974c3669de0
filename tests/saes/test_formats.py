"""SAE files in the exact Gemma Scope and SAELens formats; encoders against the plain reference."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from actstore.errors import ConfigError
from actstore.saes.encode import SAEEncoder, encode_reference, sparse_codes
from actstore.saes.formats import load_sae
from tests.helpers import make_gemma_scope_sae, make_saelens_sae


@pytest.mark.parametrize("lower_case", [False, True])
def test_gemma_scope_npz(tmp_path, lower_case) -> None:
    path = make_gemma_scope_sae(tmp_path / "layer_1/width_16k/average_l0_10/params.npz", 32, 48, lower_case=lower_case)
    for given in (path, path.parent):  # the file or its folder
        sae = load_sae(str(given))
        assert (sae.architecture, sae.d_in, sae.d_sae, sae.apply_b_dec_to_input) == ("jumprelu", 32, 48, False)
        assert len(sae.sha256) == 64


def test_npz_with_pickled_objects_is_refused(tmp_path) -> None:
    path = tmp_path / "params.npz"
    np.savez(path, W_enc=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_sae(str(path))


def test_shape_mismatch_inside_a_file(tmp_path) -> None:
    path = make_gemma_scope_sae(tmp_path / "p/params.npz", 8, 16)
    with np.load(path) as npz:
        params = dict(npz)
    params["b_dec"] = np.zeros(9, np.float32)
    np.savez(path, **params)
    with pytest.raises(ConfigError, match=r"b_dec has shape \(9,\), expected \(8,\)"):
        load_sae(str(path))


@pytest.mark.parametrize("arch,k", [("jumprelu", None), ("topk", 5), ("standard", None)])
def test_saelens_folders_encode_like_the_reference(tmp_path, arch, k) -> None:
    folder = make_saelens_sae(tmp_path / arch, 16, 40, architecture=arch, k=k, hook_name="blocks.0.hook_resid_post")
    sae = load_sae(str(folder))
    assert sae.architecture == {"standard": "relu"}.get(arch, arch) and sae.apply_b_dec_to_input
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    fast = SAEEncoder(sae).encode(torch.from_numpy(x)).numpy()
    ref = encode_reference(sae, x)
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    assert ((fast != 0) == (ref != 0)).mean() > 0.999  # only values within rounding of a threshold may differ
    if arch == "topk":
        assert ((fast != 0).sum(1) <= k).all()


def test_unsupported_normalisation_is_refused(tmp_path) -> None:
    folder = make_saelens_sae(tmp_path / "n", 8, 16, architecture="jumprelu")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(ConfigError, match="normalize_activations"):
        load_sae(str(folder))


def test_not_an_sae(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither params.npz"):
        load_sae(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="Hub path"):
        load_sae("no/such")


def test_sparse_codes_keep_the_largest_and_the_true_l0() -> None:
    f = torch.tensor([[0.0, 3.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    codes = sparse_codes(f, 3)
    assert codes.idx.tolist() == [[1, 4, 2], [-1, -1, -1], [0, 1, 2]]
    assert codes.val.tolist() == [[3.0, 2.0, 1.0], [0.0, 0.0, 0.0], [5.0, 4.0, 3.0]]
    assert codes.l0.tolist() == [3, 0, 5]
    wide = sparse_codes(f, 8)  # a cap wider than the SAE pads
    assert wide.idx.shape == (3, 8) and wide.idx[2].tolist() == [0, 1, 2, 3, 4, -1, -1, -1]


def test_jumprelu_zeroes_negative_pre_activations_above_a_negative_threshold() -> None:
    """f = relu(pre) * (pre > threshold), thresholds of both signs (Gemma Scope's and SAELens's formula)."""
    from actstore.saes.formats import SAEWeights

    rng = np.random.default_rng(3)
    d_in, d_sae = 16, 64
    threshold = np.where(np.arange(d_sae) % 2 == 0, -1, 1) * rng.uniform(0.05, 0.5, d_sae).astype(np.float32)
    weights = SAEWeights("jumprelu", rng.normal(0, 0.3, (d_in, d_sae)).astype(np.float32),
                         rng.normal(0, 0.3, (d_sae, d_in)).astype(np.float32), rng.normal(0, 0.1, d_sae).astype(np.float32),
                         np.zeros(d_in, np.float32), threshold.astype(np.float32), None, False, None, "test", "")
    x = rng.normal(size=(200, d_in)).astype(np.float32)
    pre = torch.from_numpy(x) @ torch.from_numpy(weights.W_enc) + torch.from_numpy(weights.b_enc)
    formula = (torch.relu(pre) * (pre > torch.from_numpy(threshold))).numpy()
    assert ((pre.numpy() > threshold) & (pre.numpy() < 0)).sum() > 100  # the case the ReLU decides is common here
    fast = SAEEncoder(weights).encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fast, formula, atol=1e-6)
    np.testing.assert_allclose(encode_reference(weights, x), formula, atol=1e-5)
    assert (fast >= 0).all() and ((fast > 0) == (formula > 0)).mean() > 0.999


@pytest.mark.parametrize("arch,k", [("jumprelu", None), ("topk", 5), ("standard", None)])
def test_encode_nonzeros_equals_the_dense_encoding(tmp_path, arch, k) -> None:
    """Extraction's sparse path (no dense output for JumpReLU/ReLU) finds the same entries, bit for bit."""
    from actstore.saes.encode import nonzeros

    sae = load_sae(str(make_saelens_sae(tmp_path / arch, 16, 40, architecture=arch, k=k, hook_name="blocks.0.hook_resid_post")))
    if sae.threshold is not None:  # thresholds of both signs, as SAEs trained elsewhere have
        sae = dataclasses.replace(sae, threshold=np.where(np.arange(40) % 2 == 0, -0.2, 0.3).astype(np.float32))
    encoder = SAEEncoder(sae)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32))
    fast, dense = encoder.encode_nonzeros(x), nonzeros(encoder.encode(x))
    for a, b in zip(fast[:3], dense[:3], strict=True):
        assert torch.equal(a, b)
    assert fast.n == dense.n == 300


def test_sparse_codes_order_values_of_any_sign_and_break_ties_by_latent() -> None:
    """The one-key sort: per token by value descending (negative values and zeros' signs included), ties by latent id."""
    rng = np.random.default_rng(2)
    f = rng.choice(np.array([-3.5, -1.0, -0.0, 0.5, 0.5, 2.0, 7.25, 1e30, -1e-30], np.float32), size=(40, 30))
    f[rng.random(f.shape) < 0.4] = 0.0
    codes = sparse_codes(torch.from_numpy(f), 6)
    for t in range(f.shape[0]):
        fired = np.flatnonzero(f[t])
        ranked = fired[np.lexsort((fired, -f[t, fired]))][:6]
        assert codes.idx[t, : ranked.size].tolist() == ranked.tolist() and (codes.idx[t, ranked.size:] == -1).all()
        assert codes.val[t, : ranked.size].tolist() == f[t, ranked].tolist() and codes.l0[t] == fired.size
