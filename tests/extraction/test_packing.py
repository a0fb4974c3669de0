"""Code packing at the edges of the id types: the extraction's packing stores ids >= 32,768 and
the last id of a 65,536-wide SAE in uint16, and the first id past it in uint32, and reading them
back (ids with -1 past the L0) gives the encoder's sparse codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actstore.extraction.unit import UnitBuffers, encode_codes
from actstore.saes.encode import SAEEncoder, sparse_codes
from actstore.saes.formats import SAEWeights
from actstore.store.codes import latent_dtype, unpack_ids
from actstore.store.dtypes import from_storage
from actstore.store.metadata import SaeInfo


@pytest.mark.parametrize(("d_sae", "dtype"), [(65_536, np.uint16), (65_537, np.uint32)])
def test_wide_latent_ids_pack_and_read_back(d_sae: int, dtype: type) -> None:
    planted = [0, 32_767, 32_768, d_sae - 2, d_sae - 1]  # fire on every token, values 1..5
    w_enc = np.zeros((4, d_sae), np.float32)
    w_enc[:, planted] = np.arange(1, 6, dtype=np.float32) / 4
    weights = SAEWeights(architecture="jumprelu", W_enc=w_enc, W_dec=w_enc.T.copy(), b_enc=np.zeros(d_sae, np.float32),
                         b_dec=np.zeros(4, np.float32), threshold=np.full(d_sae, 0.1, np.float32), k=None,
                         apply_b_dec_to_input=False, hook_name=None, source="planted", sha256="0")
    info = SaeInfo(name="wide", site="s", architecture="jumprelu", d_in=4, d_sae=d_sae, code_cap=8, value_dtype="bfloat16",
                   source="planted", sha256="0")
    encoder, x = SAEEncoder(weights), torch.ones(6, 4)
    x[5] = 0  # a token where nothing fires: every slot empty
    buf = UnitBuffers([], [info], 2, 3, torch.device("cpu"))
    encode_codes(info, encoder, x, torch.ones(6, dtype=torch.bool), buf, slice(0, 2))
    ref = sparse_codes(encoder.encode(x), 8)
    assert latent_dtype(d_sae) == np.dtype(dtype).name and buf.idx["wide"].dtype == dtype
    assert buf.idx["wide"].reshape(6, 8)[0].tolist() == [d_sae - 1, d_sae - 2, 32_768, 32_767, 0, 0, 0, 0]
    assert np.array_equal(unpack_ids(buf.idx["wide"], buf.l0["wide"]).reshape(6, 8), ref.idx.numpy())
    assert unpack_ids(buf.idx["wide"], buf.l0["wide"]).reshape(6, 8)[5].tolist() == [-1] * 8
    values = from_storage(buf.val["wide"], "bfloat16").reshape(6, 8).astype(np.float32)
    assert np.array_equal(values, ref.val.to(torch.bfloat16).float().numpy())
