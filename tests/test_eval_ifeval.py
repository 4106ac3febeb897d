"""IFEval scoring end to end: the four metrics on a crafted file, the command, the input data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))

from spar_jax.eval import ifeval  # noqa: E402

EN = "the weather today is sunny and warm and i am going for a long walk in the park"

# Four prompts whose verdicts are worked out by hand (strict / loose per instruction):
INPUTS = [
    {"key": 1, "prompt": "P1", "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
     "kwargs": [{}, {}]},  # '"hello world"': strict T T, loose T T
    {"key": 2, "prompt": "P2",
     "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
     "kwargs": [{}, {}]},  # "Sure, here:\n<lowercase>": strict F F, loose T T (first line cut)
    {"key": 3, "prompt": "P3",
     "instruction_id_list": ["detectable_format:title", "length_constraints:number_words"],
     "kwargs": [{}, {"num_words": 5, "relation": "at least"}]},  # 3 words: strict T F, loose T F
    {"key": 4, "prompt": "P4", "instruction_id_list": ["startend:end_checker"],
     "kwargs": [{"end_phrase": "Bye."}]},  # trailing P.S. line: strict F, loose T (last line cut)
]  # fmt: skip
RESPONSES = {
    "P1": '"hello world"',
    "P2": "Sure, here:\n" + EN,
    "P3": "<<t>> one two",
    "P4": "text\nBye.\nP.S. x",
}
EXPECTED = {
    "prompt_level_strict_acc": 1 / 4,  # P1
    "prompt_level_loose_acc": 3 / 4,  # P1, P2, P4
    "inst_level_strict_acc": 3 / 7,  # P1 x2, P3 title
    "inst_level_loose_acc": 6 / 7,  # all but P3's word count
}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_four_metrics_on_crafted_responses():
    report = ifeval.score(ifeval.parse_inputs(INPUTS), RESPONSES)
    assert report.metrics == pytest.approx(EXPECTED)
    assert [r.strict for r in report.results] == [
        (True, True),
        (False, False),
        (True, False),
        (False,),
    ]
    assert [r.loose for r in report.results] == [(True, True), (True, True), (True, False), (True,)]
    assert report.per_type["punctuation:no_comma"] == {"count": 2, "strict": 0.5, "loose": 1.0}
    assert report.per_type["length_constraints:number_words"]["loose"] == 0.0


def test_missing_responses_error_or_partial():
    examples = ifeval.parse_inputs(INPUTS)
    some = {k: v for k, v in RESPONSES.items() if k != "P3"}
    with pytest.raises(
        ifeval.IFEvalDataError, match=r"1 of 4 IFEval prompts have no response.*\[3\]"
    ):
        ifeval.score(examples, some)
    report = ifeval.score(examples, some, partial=True)
    assert (len(report.results), report.missing) == (3, 1)
    assert report.metrics["prompt_level_loose_acc"] == 1.0


def test_bundled_input_is_the_shared_copy():
    bundled = ifeval.load_inputs()
    shared = ifeval.load_inputs(str(SHARED / "ifeval" / "input_data.jsonl"))
    assert bundled == shared
    assert len(bundled) == 541 and sum(len(e.instruction_id_list) for e in bundled) == 834
    assert len({i for e in bundled for i in e.instruction_id_list}) == 25


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "spar_jax", "eval", "ifeval", *args],
        cwd=ROOT, capture_output=True, text=True, env=env or dict(os.environ), timeout=600,
    )  # fmt: skip


def test_command_scores_crafted_file(tmp_path):
    inputs = _write_jsonl(tmp_path / "in.jsonl", INPUTS)
    # Official output format; an extra unanswered-for row is ignored, as in the official code.
    rows = [{"prompt": p, "response": r} for p, r in RESPONSES.items()]
    responses = _write_jsonl(tmp_path / "out.jsonl", [*rows, {"prompt": "other", "response": "x"}])
    out = tmp_path / "metrics.json"
    proc = _run("--responses", responses, "--input", inputs, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"prompt_level_strict_acc\s+25\.00\n", proc.stdout)
    assert re.search(r"inst_level_loose_acc\s+85\.71\n", proc.stdout)
    assert "punctuation:no_comma" in proc.stdout  # the per-type table
    metrics = json.loads(out.read_text())
    assert {k: metrics[k] for k in EXPECTED} == pytest.approx(EXPECTED)
    assert metrics["prompts"][1]["follow_instruction_list_loose"] == [True, True]


def test_command_scores_all_541_prompts(tmp_path):
    """Answer each prompt with its own text: every type is checked, the table lists all 25."""
    examples = ifeval.load_inputs()
    rows = [{"prompt": e.prompt, "response": e.prompt} for e in examples]
    responses = _write_jsonl(tmp_path / "out.jsonl", rows)
    proc = _run("--responses", responses, "--output", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    assert "IFEval on 541 prompts" in proc.stdout
    table = [
        line
        for line in proc.stdout.splitlines()
        if line.strip().startswith(("keywords:", "combination:"))
    ]
    assert len(table) == 6
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["per_type"]) == 25 and len(metrics["prompts"]) == 541
    assert sum(row["count"] for row in metrics["per_type"].values()) == 834
    # Echoing the prompt repeats it: most repeat_prompt instructions pass.
    assert metrics["per_type"]["combination:repeat_prompt"]["strict"] > 0.75
    assert 0 < metrics["inst_level_strict_acc"] < metrics["inst_level_loose_acc"] < 1


def test_command_errors_are_one_line(tmp_path):
    proc = _run("--responses", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"eval: error: {tmp_path / 'nope.jsonl'}: responses file not found"
    )
    partial = _write_jsonl(tmp_path / "few.jsonl", [{"prompt": "P1", "response": "x"}])
    proc = _run("--responses", partial, "--input", _write_jsonl(tmp_path / "in.jsonl", INPUTS))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "3 of 4 IFEval prompts have no response" in proc.stderr and "--partial" in proc.stderr
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    proc = _run("--responses", partial, env=env)
    assert proc.returncode == 1 and "NLTK data 'punkt_tab' (English) not found" in proc.stderr


def test_hub_rows_with_none_filled_kwargs(monkeypatch):
    """google/IFEval rows carry every kwarg of every type, None where unused."""
    import datasets

    shared = ifeval.read_jsonl(str(SHARED / "ifeval" / "input_data.jsonl"), "input")
    names = sorted({k for row in shared for kw in row["kwargs"] for k in kw})
    hub = [
        {**row, "kwargs": [{n: kw.get(n) for n in names} for kw in row["kwargs"]]} for row in shared
    ]
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or hub)
    assert ifeval.load_inputs("google/IFEval") == ifeval.load_inputs()
    assert calls == [(("google/IFEval",), {"split": "train"})]
