"""The model paths of `eval`: greedy IFEval answers and judge accuracy on a tiny random model."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "data" / "nltk_data"))

from spar_jax import cli, models, sampling  # noqa: E402
from spar_jax.eval import ifeval  # noqa: E402

NEW = 5
LIMIT = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.hf_models import save_tiny
    from tests.tokenizer_fixtures import LLAMA3_SPECIALS, build_hf_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    save_tiny(str(path), "llama", vocab_size=1100, max_position_embeddings=1024)
    build_hf_tokenizer(path, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>")
    return str(path)


def test_ifeval_generates_greedy_answers_and_scores_them(tiny, tmp_path, capsys):
    from spar_jax.tokenizer import Tokenizer

    out = tmp_path / "run"
    argv = [
        "eval", "ifeval", "--config", str(ROOT / "configs" / "eval_ifeval.py"),
        f"--config.model={tiny}", "--config.dtype=float32", f"--config.limit={LIMIT}",
        f"--config.max_new_tokens={NEW}", f"--config.output_dir={out}",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"IFEval on {LIMIT} prompts" in printed and "inst_level_loose_acc" in printed

    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    examples = ifeval.load_inputs()[:LIMIT]
    assert [r["prompt"] for r in rows] == [e.prompt for e in examples]

    # The same answers straight from the sampler, with the chat template of the tokenizer.
    tok = Tokenizer.load(tiny)
    cfg, params = models.load_hf(tiny)
    ids = [tok.encode_prompt([{"role": "user", "content": e.prompt}]) for e in examples]
    sp = sampling.SamplingParams(
        temperature=0.0, max_new_tokens=NEW, stop_token_ids=tok.stop_token_ids
    )
    expected = [
        tok.decode(t, skip_special_tokens=True)
        for t in sampling.generate(cfg, params, ids, sp).tokens
    ]
    assert [r["response"] for r in rows] == expected
    assert any(r["response"].strip() for r in rows)

    metrics = json.loads((out / "metrics.json").read_text())
    rescored = ifeval.score(examples, ifeval.read_responses(str(out / "responses.jsonl")))
    assert {k: metrics[k] for k in ifeval.METRICS} == rescored.metrics
    assert metrics["generation"]["max_new_tokens"] == NEW
    assert 0 < metrics["generation"]["generated_tokens"] <= LIMIT * NEW


def test_judge_command_on_tiny_model(tiny, tmp_path, capsys):
    data = tmp_path / "labelled.jsonl"
    rows = [{"prompt": "Say hi.", "response": r, "label": y} for r, y in (("hi", 1), ("no", 0))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "judge.json"
    argv = [
        "eval", "judge", "--config", str(ROOT / "configs" / "eval_judge.py"),
        f"--config.model={tiny}", f"--config.data={data}", "--config.dtype=float32",
        "--config.max_new_tokens=4", f"--config.output={report}",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads(report.read_text())
    # A random model writes no "Final Judgement": every vote is invalid, every verdict undecided.
    assert [r["votes"] for r in result["rows"]] == [[-1] * 5, [-1] * 5]
    assert result["votes_5"] == {"accuracy": 0.0, "f1": 0.0, "f1_no": 0.0, "undecided": 1.0}
    assert "judge on 2 labelled rows" in capsys.readouterr().out


def test_native_checkpoint_answers_like_its_hf_source(tiny, tmp_path):
    from spar_jax.eval import chat
    from spar_jax.models import native

    cfg, params = models.load_hf(tiny)
    native.save_native(cfg, params, str(tmp_path / "native"))
    asks = ["hello there", "write a poem"]
    from_hf = chat.greedy_answers(chat.load_chat(tiny, dtype="float32"), asks, max_new_tokens=NEW)
    from_native = chat.load_chat(str(tmp_path / "native"), tiny, dtype="float32")
    assert chat.greedy_answers(from_native, asks, max_new_tokens=NEW) == from_hf
