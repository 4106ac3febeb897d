"""Inference-time scaling: greedy vs best-of-N vs BFS / DFS refinement at matched budgets.

The library comparison runs on a scripted actor / refiner whose outcomes are
worked out by hand; the command runs on a tiny random model at small size.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "data" / "nltk_data"))

from spar_jax import cli  # noqa: E402
from spar_jax.eval import scaling  # noqa: E402
from spar_jax.spar import prompts  # noqa: E402

ROWS = [{"prompt": f"Write an a, and no b. ({i})", "prompt_id": str(i)} for i in range(3)]
GREEDY = ["b", "b", "a"]  # prompt 2 passes already
SAMPLES = [["b", "b", "a", "b"], ["ab"] * 4, ["a", "b", "b", "b"]]  # sample j of prompt i
REFINED = ["a", "ab"]  # the refiner fixes prompt 0, never prompt 1


def passes(text):
    return "a" in text and "b" not in text


def scorer(rows, answers):
    return {"score": sum(map(passes, answers)) / len(answers)}


class Scripted:
    """Actor, perfect judge and refiner in one ChatGenerator, told apart by the conversation."""

    def generate(self, conversations, sampling_params, n, seed):
        greedy = bool(np.all(np.asarray(sampling_params.temperature) == 0))
        out = []
        for conv in conversations:
            text = conv[0]["content"]
            index = int(re.search(r"\((\d)\)", text).group(1))
            if len(conv) == 3:  # judge prompt, critique, refine request
                out.append([prompts.format_refinement("fix it", REFINED[index])] * n)
            elif text.startswith("Please act an expert"):
                response = re.search("Output: \u201c(.*)\u201d", text).group(1)
                out.append([prompts.format_judgement("checked", passes(response))] * n)
            else:
                out.append([GREEDY[index]] if greedy else SAMPLES[index][:n])
        return out


def test_compare_at_matched_budgets():
    model = Scripted()
    config = scaling.ScalingConfig(budgets=(2, 4), n_votes=3)
    result = scaling.compare(ROWS, scorer, model, model, config)
    got = {(r["method"], r["budget"]): (r["responses"], r["score"]) for r in result["results"]}
    assert {k: np.round(v, 6).tolist() for k, v in got.items()} == {
        k: np.round(v, 6).tolist()
        for k, v in {
            ("greedy", 1): (1.0, 1 / 3),
            # best of 2 finds no "a" for prompt 0; best of 4 does (its third sample)
            ("best_of_n", 2): (2.0, 1 / 3),
            ("best_of_n", 4): (4.0, 2 / 3),
            # the two failed greedy answers are refined; budget N - 1 refinements per tree:
            # 3 greedy + 1 + 1 refinements over 3 prompts, then 3 + 3 + 3
            ("bfs", 2): (5 / 3, 2 / 3),
            ("bfs", 4): (3.0, 2 / 3),
            ("dfs", 2): (5 / 3, 2 / 3),
            ("dfs", 4): (3.0, 2 / 3),
        }.items()
    }
    assert result["answers"]["bfs@4"] == ["a", "ab", "a"]
    assert result["answers"]["best_of_n@4"] == ["a", "ab", "a"]
    table = scaling.format_table(result)
    assert "| best_of_n | 4 | 4.00 | 66.7 |" in table and "| bfs | 2 | 1.67 | 66.7 |" in table


def test_budgets_must_exceed_greedy():
    with pytest.raises(ValueError, match="budgets"):
        scaling.ScalingConfig(budgets=(1, 2))


def test_scaling_command_on_the_demo_model(tmp_path, capsys):
    """`eval scaling` on the demo's seed model and the synthetic world, at small size."""
    from spar_jax import tasks

    seed_model = os.path.join(os.path.dirname(tasks.__file__), "seed_model")
    out = tmp_path / "run"
    argv = [
        "eval", "scaling", "--config", str(ROOT / "configs" / "eval_scaling.py"),
        f"--config.model={seed_model}", "--config.dtype=float32", "--config.prompts=tasks",
        "--config.limit=3", "--config.budgets=(2,3)", "--config.max_new_tokens=32",
        "--config.n_votes=2", "--config.judge_max_new_tokens=72",
        "--config.refine_max_new_tokens=96", "--config.max_batch=8",
        "--config.fixed_slots=True", f"--config.min_prefix={1 << 30}",  # fewer programs
        f"--config.output_dir={out}",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert "| method | budget | responses / prompt | score |" in capsys.readouterr().out
    result = json.loads((out / "scaling.json").read_text())
    methods = [(r["method"], r["budget"]) for r in result["results"]]
    assert methods == [("greedy", 1), ("best_of_n", 2), ("best_of_n", 3),
                       ("bfs", 2), ("bfs", 3), ("dfs", 2), ("dfs", 3)]  # fmt: skip
    assert all(0 <= r["score"] <= 1 for r in result["results"])
    for r in result["results"]:
        if r["method"] in ("bfs", "dfs"):  # the greedy answer, plus refinements of failed ones
            assert 0 <= r["searched"] <= 3 and r["responses"] >= 1.0
        else:
            assert r["responses"] == r["budget"]
    assert (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3


def test_prompt_sources(tmp_path):
    import random

    from spar_jax import tasks
    from spar_jax.cli import eval as eval_cli

    rows, score = eval_cli.scaling_rows("tasks", 4, seed=0)
    assert score is scaling.tasks_scorer and rows == tasks.make_prompts(4, tasks.HELD_OUT_SEED)
    good = [tasks.correct_answer(r, random.Random(0)) for r in rows]
    assert score(rows, good) == {"score": 1.0} and score(rows, [""] * 4) == {"score": 0.0}

    path = tmp_path / "world.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert eval_cli.scaling_rows(str(path), 2, seed=0) == (rows[:2], scaling.tasks_scorer)

    rows, score = eval_cli.scaling_rows("ifeval", 2, seed=0)
    assert score is scaling.ifeval_scorer and [r["prompt_id"] for r in rows] == ["1000", "1001"]
    metrics = score(rows, ["No commas here.", "No commas here either."])
    # 1000: no_comma passes, 3 highlights and 300+ words fail; 1001: no_comma passes
    assert (metrics["prompt_level_strict_acc"], metrics["inst_level_strict_acc"]) == (0.5, 0.5)
