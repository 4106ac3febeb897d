"""The demo's pieces: the self-play report, the synthetic-world evaluation, the interfering-factor
experiment's pairs; and the demo command itself, shortened, on the shipped seed model."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import ml_collections

from spar_jax import tasks
from spar_jax.spar import report
from spar_jax.spar.generator import ScriptedChat
from spar_jax.tasks import interference
from tests.xla import FAST_COMPILE

REPO = Path(__file__).resolve().parent.parent


def _summary(t: int, eval_metrics: dict | None) -> dict:
    return {
        "round": t,
        "responses": 8,
        "responses_judged": 8,
        "judged_no": 3,
        "trees": 3,
        "search_success_rate": 2 / 3,
        "pairs": 2,
        "rft_examples": 5,
        "actor_loss": 0.5,
        "refiner_loss": None,
        "next_actor": f"a{t}",
        "next_refiner": f"r{t}",
        "seconds": {"sample": 30.0, "judge": 30.0},
        "eval": eval_metrics,
    }


def _metrics(success: float, acc: float) -> dict:
    return {
        "tasks": {"success": success, "upper_ratio_chars": 0.25},
        "judge": {"votes_1": {"accuracy": acc}, "votes_3": {"accuracy": acc + 0.1}},
    }


def test_report_has_a_row_per_round_and_the_starting_models(tmp_path):
    summaries = [_summary(1, _metrics(0.5, 0.6)), _summary(2, _metrics(0.75, 0.7))]
    summaries[0]["eval_start"] = _metrics(0.25, 0.5)
    header, *rows = report.report_table(summaries)
    assert header[:5] == [
        "round",
        "actor success",
        "upper-case share",
        "judge acc. 1v",
        "judge acc. 3v",
    ]
    assert [r[0] for r in rows] == ["0 (start)", "1", "2"]
    assert rows[0][1:5] == ["0.250", "0.250", "0.500", "0.600"]
    assert rows[2][1] == "0.750"
    col = header.index("search success")
    assert rows[0][col] == "-" and rows[1][col] == "0.667"
    assert rows[1][header.index("refiner loss")] == "-"  # no refiner data that round
    assert rows[1][header.index("minutes")] == "1.000"

    report.write_report(summaries, str(tmp_path / "report.md"))
    text = (tmp_path / "report.md").read_text()
    assert "| 0 (start) | 0.250 |" in text and "actor `a2`, refiner `r2`" in text
    report.plot_rounds(summaries, str(tmp_path / "summary.png"))
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "actor success" in report.format_summary(summaries[1])


def test_report_without_evaluation():
    header, *rows = report.report_table([_summary(1, None)])
    assert header[1] == "responses" and [r[0] for r in rows] == ["1"]


def _teacher_chat(wrong_kinds: tuple[str, ...] = ()) -> ScriptedChat:
    """Answers every world prompt correctly, except prompts of `wrong_kinds` (blank)."""
    by_prompt = {}
    for r in tasks.make_prompts(30, tasks.HELD_OUT_SEED):
        ok = r["task"]["kind"] not in wrong_kinds
        by_prompt[r["prompt"]] = (
            tasks.correct_answer(r, random.Random(0), upper_prob=0.0) if ok else ""
        )
    return ScriptedChat(lambda conv, rng: by_prompt[conv[-1]["content"]])


def test_actor_tasks_evaluation_checks_held_out_prompts(tmp_path):
    from spar_jax.eval import rounds as eval_rounds

    e = ml_collections.ConfigDict({"actor_tasks": 30, "max_new_tokens": 8})
    metrics = eval_rounds._actor_tasks(e, _teacher_chat(("story",)), str(tmp_path), seed=0)
    assert metrics["success"] == 20 / 30  # kinds cycle: 10 of each
    assert metrics["success_chars"] == metrics["success_text"] == 1.0
    assert metrics["success_story"] == 0.0
    assert metrics["upper_ratio_chars"] == 0.0
    saved = json.loads((tmp_path / "actor_tasks.json").read_text())
    assert len(saved["rows"]) == 30 and saved["metrics"] == metrics


def test_free_case_prompts_are_character_prompts_without_a_case_rule():
    rows = interference.free_case_prompts(40, seed=3)
    assert len(rows) == 40 and rows == interference.free_case_prompts(40, seed=3)
    assert all(r["task"]["kind"] == "chars" for r in rows)
    assert not any(c["type"] == "lowercase" for r in rows for c in r["task"]["constraints"])
    held = interference.free_case_prompts(40, seed=tasks.HELD_OUT_SEED + 3)
    assert not {r["prompt_id"] for r in rows} & {r["prompt_id"] for r in held}


def test_interference_pairs_have_equal_counts_and_the_right_sides():
    rows = interference.free_case_prompts(3, seed=0)
    good = [tasks.correct_answer(r, random.Random(0)) for r in rows]
    samples = [
        {"prompt_id": rows[0]["prompt_id"], "responses": [good[0], "x"], "passed": [True, False]},
        {"prompt_id": rows[1]["prompt_id"], "responses": [good[1], "y"], "passed": [True, False]},
        {"prompt_id": rows[2]["prompt_id"], "responses": ["z", "w"], "passed": [False, False]},
    ]
    refined = [
        {"prompt": rows[2]["prompt"], "passed": True, "root": {"id": 0, "response": "z"},
         "final": {"id": 2, "response": good[2]}},
        {"prompt": rows[0]["prompt"], "passed": False, "root": {"id": 0, "response": "x"},
         "final": {"id": 0, "response": "x"}},
    ]  # fmt: skip
    pairs = interference.build_pairs(rows, samples, refined, seed=0)
    assert pairs["available"] == {"sampled": 2, "refined": 1}
    assert len(pairs["sampled"]) == len(pairs["refined"]) == 1
    assert pairs["refined"][0] == {"prompt": rows[2]["prompt"], "chosen": good[2], "rejected": "z"}
    (s,) = pairs["sampled"]
    assert s["chosen"] in good and s["rejected"] in ("x", "y")


def test_interference_evaluation_measures_success_and_case():
    held = interference.free_case_prompts(6, seed=tasks.HELD_OUT_SEED)
    answers = {r["prompt"]: tasks.correct_answer(r, random.Random(0), upper_prob=0.0) for r in held}
    answers[held[0]["prompt"]] = answers[held[0]["prompt"]].upper()  # case is free: passes
    answers[held[1]["prompt"]] = ""
    chat = ScriptedChat(lambda conv, rng: answers[conv[-1]["content"]])
    out = interference.evaluate(chat, held, max_new_tokens=8)
    assert out["success"] == 5 / 6
    assert out["upper_ratio"] == 1 / 6


# ---------------------------------------------------------------- the demo command


def test_demo_command_one_short_round(tmp_path):
    """The README's main command, cut to one round on a few prompts: the report and the plot
    are written and named at the end; the starting and trained models are evaluated."""
    workdir = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = FAST_COMPILE
    cmd = [sys.executable, "-m", "spar_jax", "selfplay", "--config", "configs/demo.py"]
    cmd += ["--workdir", str(workdir), "--config.rounds=1", "--config.max_prompts=6"]
    cmd += ["--config.progress=False", "--config.eval.actor_tasks=6", "--config.eval.limit=4"]
    cmd += ["--config.eval.judge_votes=(1,)", "--config.tree.max_depth=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-2:]
    assert last == [f"report: {workdir}/report.md", f"plot:   {workdir}/summary.png"]
    (summary,) = json.loads((workdir / "summary.json").read_text())
    assert summary["prompts"] == 6 and summary["responses"] == 6 * 4
    for metrics in (summary["eval_start"], summary["eval"]):
        assert 0.0 <= metrics["tasks"]["success"] <= 1.0
        assert 0.0 <= metrics["judge"]["votes_1"]["accuracy"] <= 1.0
    text = (workdir / "report.md").read_text()
    assert "| 0 (start) |" in text and "\n| 1 |" in text
    assert (workdir / "summary.png").read_bytes()[:4] == b"\x89PNG"
