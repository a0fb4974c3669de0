"""Finding text as a user types it, on a tokens-only store with a byte-level BPE tokenizer (as
GPT-2, Llama 3 and SmolLM2 use), where a word inside a line is another token than at its start."""

from __future__ import annotations

from pathlib import Path

import pytest

import actstore
from actstore.cli import main
from actstore.cluster.ingest import run_ingest
from actstore.config import IngestConfig
from actstore.query.tokens import MATCH_SCHEMA, text_forms
from actstore.store.layout import FLAG_BOS, FLAG_PAD

pytestmark = pytest.mark.usefixtures("ray_cluster")

SOURCE = "async def main():\n    pass\n\nclass A:\n    async def run(self):\n        await main()\n"


@pytest.fixture(scope="module")
def code_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python-like documents: ``async def`` at the start of a line (1 per doc) and indented (1 per doc)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("find")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([SOURCE] * 4, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<eos>", "<bos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
                            ).save_pretrained(root / "tokenizer")
    for i in range(6):
        (root / f"m{i}.py").write_text(SOURCE.replace("main", f"main{i}"))
    url = str(root / "store")
    run_ingest(IngestConfig.model_validate({
        "store": {"url": url}, "corpus": {"paths": [str(root / "*.py")]}, "tokenizer": {"id": str(root / "tokenizer")},
        "context": {"ctx_len": 64, "contexts_per_unit": 2, "packing": "document"}}))
    return Path(url)


def _positions(store: actstore.Store, ids: list[int]) -> list[int]:
    tok = store.tokens(slice(None))
    flat, ok, m = tok["ids"].reshape(-1), ((tok["flags"] & (FLAG_BOS | FLAG_PAD)) == 0).reshape(-1), len(ids)
    ctx_len = store.meta.ctx_len
    return [t for t in range(flat.size - m + 1)
            if t % ctx_len <= ctx_len - m and flat[t : t + m].tolist() == ids and ok[t : t + m].all()]


def test_text_is_searched_as_typed_and_word_initial(code_store: Path, capsys) -> None:
    store = actstore.open(str(code_store))
    forms = text_forms(store, "async def")
    assert [f for f, _ in forms] == ["async def", " async def"] and forms[0][1] != forms[1][1]
    expected = {form: _positions(store, ids) for form, ids in forms}
    assert len(expected["async def"]) == 6 and len(expected[" async def"]) == 6  # both forms occur in every doc
    found = store.find_text("async def", limit=4, window=3)
    assert [(f.text, f.count) for f in found.forms] == [("async def", 6), (" async def", 6)]
    assert found.total == 12 and found.matches.height == 4 and found.matches.schema == MATCH_SCHEMA
    every = sorted((t, form) for form, pos in expected.items() for t in pos)
    got = (found.matches["ctx"] * store.meta.ctx_len + found.matches["pos"]).to_list()
    assert list(zip(got, found.matches["form"], strict=True)) == every[:4]
    assert text_forms(store, " async def") == forms[1:]  # typed with its space: one form

    assert main(["find", str(code_store), "async def", "--limit", "3", "--window", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"searched 'async def' ({len(forms[0][1])} tokens): 6; "
                        f"' async def' ({len(forms[1][1])} tokens): 6")
    assert lines[1] == "12 matches, showing the first 3" and len(lines) == 5
    for line, row in zip(lines[2:], found.matches.head(3).iter_rows(named=True), strict=True):
        assert line.startswith(f"doc {row['doc']:<7} {row['ctx']:>7}:{row['pos']:<5} ")
        assert f"[[{row['form']}]]" in line  # the whole span is marked, as one run
        assert "0.0000" not in line  # no value column: it means nothing for a token search


def test_find_by_ids_and_nothing_found(code_store: Path, capsys) -> None:
    store = actstore.open(str(code_store))
    ids = text_forms(store, "await")[1][1]
    assert main(["find", str(code_store), ",".join(map(str, ids)), "--ids"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{len(_positions(store, ids))} matches"
    assert main(["find", str(code_store), "no such words here at all"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "0 matches"
    assert store.find_text("zzz zzz").total == 0
