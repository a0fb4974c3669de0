"""Packing puts every document token exactly once, in order, behind a BOS in every context."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore.corpus.packing import PackPlan, fill_contexts
from actstore.store.layout import FLAG_BOS, FLAG_EOS, FLAG_PAD

BOS, EOS, PAD = 2, 1, 0


def _plan(lengths, files, ctx_len, packing, sep):
    lengths = np.asarray(lengths, np.int64)
    files = np.asarray(files, np.int32)
    offsets = np.zeros(len(lengths), np.int64)
    for f in set(files.tolist()):
        idx = np.flatnonzero(files == f)
        offsets[idx] = np.concatenate([[0], np.cumsum(lengths[idx])[:-1]])
    return PackPlan(ctx_len, packing, EOS if sep else None, BOS, PAD, files, offsets, lengths)


def _streams(plan):
    """File token streams where token value encodes (doc, position) uniquely."""
    out = {}
    for f in set(plan.doc_file.tolist()):
        idx = np.flatnonzero(plan.doc_file == f)
        out[f] = np.concatenate([1000 * (d + 1) + np.arange(plan.doc_len[d]) for d in idx]).astype(np.int32)
    return out


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    ctx_len=st.integers(2, 12),
    packing=st.sampled_from(["pack", "document"]),
    sep=st.booleans(),
    cpu=st.integers(1, 5),
    data=st.data(),
)
def test_every_token_exactly_once_whatever_the_unit_split(lengths, ctx_len, packing, sep, cpu, data) -> None:
    files = sorted(data.draw(st.lists(st.integers(0, 2), min_size=len(lengths), max_size=len(lengths))))
    plan = _plan(lengths, files, ctx_len, packing, sep)
    streams = _streams(plan)
    read = lambda f, a, b: streams[f][a:b]  # noqa: E731
    n = plan.n_ctx
    # fill unit by unit, as workers do
    parts = [fill_contexts(plan, c, min(c + cpu, n), read) for c in range(0, n, cpu)]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    whole = fill_contexts(plan, 0, n, read)
    for k in arrays:
        assert np.array_equal(arrays[k], whole[k])
    ids, doc, pos, flags = arrays["ids"], arrays["doc"], arrays["pos"], arrays["flags"]
    assert (ids[:, 0] == BOS).all() and (flags[:, 0] == FLAG_BOS).all()
    special = (flags == FLAG_PAD) | (flags == FLAG_BOS)
    assert (special == (doc == -1)).all() and (ids[flags == FLAG_PAD] == PAD).all()
    for d, length in enumerate(plan.doc_len):
        m = (doc == d) & (flags == 0)
        order = np.argsort(pos[m], kind="stable")
        assert (ids[m][order] == 1000 * (d + 1) + np.arange(length)).all()
        assert (pos[m][order] == np.arange(length)).all()
        if sep:
            e = (doc == d) & (flags == FLAG_EOS)
            assert e.sum() == 1 and ids[e][0] == EOS and pos[e][0] == length
    assert (flags == 0).sum() == sum(lengths)
    if packing == "pack":
        # no padding except at the very end
        flat = flags.reshape(-1)
        padded = np.flatnonzero(flat == FLAG_PAD)
        assert padded.size == 0 or (flat[padded[0]:] == FLAG_PAD).all()
    else:
        for row in range(n):  # one document per context
            assert len(set(doc[row][doc[row] >= 0].tolist())) == 1


def test_pack_example() -> None:
    plan = _plan([3, 2], [0, 0], ctx_len=4, packing="pack", sep=True)
    out = fill_contexts(plan, 0, plan.n_ctx, lambda f, a, b: np.array([10, 11, 12, 20, 21], np.int32)[a:b])
    assert out["ids"].tolist() == [[BOS, 10, 11, 12], [BOS, EOS, 20, 21], [BOS, EOS, PAD, PAD]]
    assert out["doc"].tolist() == [[-1, 0, 0, 0], [-1, 0, 1, 1], [-1, 1, -1, -1]]
    assert out["pos"].tolist() == [[-1, 0, 1, 2], [-1, 3, 0, 1], [-1, 2, -1, -1]]
