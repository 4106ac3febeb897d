"""The self-play driver: resumable stage files, and two real rounds through the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spar_jax.spar import stages_io
from tests import selfplay_fixtures as fx
from tests.xla import FAST_COMPILE

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- stages_io


def _compute(calls):
    def compute(chunk, items):
        calls.append(chunk)
        return [{"item": x, "double": 2 * x} for x in items]

    return compute


def test_run_chunked_computes_once_and_resumes(tmp_path):
    path = str(tmp_path / "stage" / "rows.jsonl")
    calls: list[int] = []
    rows = stages_io.run_chunked(path, list(range(7)), 3, _compute(calls))
    assert calls == [0, 1, 2] and [r["double"] for r in rows] == [0, 2, 4, 6, 8, 10, 12]
    again: list[int] = []
    assert stages_io.run_chunked(path, list(range(7)), 3, _compute(again)) == rows
    assert again == []


def test_run_chunked_drops_partial_chunks_and_torn_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    stages_io.run_chunked(str(path), list(range(7)), 3, _compute([]))
    lines = path.read_text().splitlines(keepends=True)
    # A kill in the middle of chunk 1's write: one of its rows and half of the next line.
    path.write_text("".join(lines[:4]) + lines[4][:9])
    calls: list[int] = []
    rows = stages_io.run_chunked(str(path), list(range(7)), 3, _compute(calls))
    assert calls == [1, 2]
    assert [r["item"] for r in rows] == list(range(7))
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["item"] for r in written) == list(range(7))  # nothing lost or repeated


def test_chunk_seed_is_stable():
    assert stages_io.chunk_seed(0, 1, "sample", 3) == stages_io.chunk_seed(0, 1, "sample", 3)
    assert stages_io.chunk_seed(0, 1, "sample", 3) != stages_io.chunk_seed(0, 1, "sample", 4)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("selfplay")
    tok = fx.build_tokenizer(root / "tokenizer")
    model = fx.build_model(root / "model", tok)
    prompts = fx.write_prompts(root / "prompts.jsonl")
    config = fx.write_config(root / "config.py", model, tok, prompts)
    return root, config


def _command(config: str, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spar_jax",
        "selfplay",
        "--config",
        config,
        "--workdir",
        str(workdir),
        *extra,
    ]


def _env() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = FAST_COMPILE  # one CPU device, as a user has
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="module")
def uninterrupted(world):
    root, config = world
    workdir = root / "run"
    proc = subprocess.run(
        _command(config, workdir), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def _outputs(workdir: Path, rounds=(1, 2)) -> dict:
    """Everything a run decides, without timings and paths."""
    out = {}
    for t in rounds:
        r = workdir / f"round_{t}"
        for rel in (
            "sample/responses.jsonl",
            "judge/judgments.jsonl",
            "search/trees.jsonl",
            "build/actor_pairs.jsonl",
            "build/refiner_sft.jsonl",
        ):
            out[f"{t}/{rel}"] = (r / rel).read_text()
        summary = json.loads((r / "summary.json").read_text())
        for key in ("seconds", "compiles", "actor", "refiner", "next_actor", "next_refiner"):
            summary.pop(key)
        out[f"{t}/summary"] = summary
    return out


def test_selfplay_command_two_rounds(uninterrupted):
    workdir, proc = uninterrupted
    assert "round 2 summary" in proc.stdout and "summary.png" in proc.stdout
    summaries = json.loads((workdir / "summary.json").read_text())
    assert [s["round"] for s in summaries] == [1, 2]
    assert (workdir / "summary.png").stat().st_size > 0
    info = json.loads((workdir / "prompts_summary.json").read_text())
    assert info["prompts"] == 7
    assert info["skipped"] == {"not_json": 1, "empty_prompt": 1}, info
    for s in summaries:
        assert s["prompts_too_long"] == 1
        assert s["responses"] == 6 * 2
        assert s["judged_yes"] + s["judged_no"] == s["responses_judged"] == 12
        rdir = workdir / f"round_{s['round']}"
        responses = {
            r["prompt_id"]: r["responses"]
            for r in map(json.loads, (rdir / "sample" / "responses.jsonl").read_text().splitlines())
        }
        judged = map(json.loads, (rdir / "judge" / "judgments.jsonl").read_text().splitlines())
        # A root per prompt with a (non-empty) answer judged No.
        assert s["trees"] == sum(
            any(
                j["label"] == 0 and resp
                for j, resp in zip(r["judgments"], responses[r["prompt_id"]], strict=True)
            )
            for r in judged
        )
        assert s["pairs"] == s["trees_passed"] > 0
    # Round 2 starts from round 1's trained models.
    assert summaries[1]["actor"] == summaries[0]["next_actor"]
    assert summaries[1]["refiner"] == summaries[0]["next_refiner"]
    assert os.path.exists(os.path.join(summaries[1]["next_actor"], "model_config.json"))

    # Pairs in the documented format, chosen = a refinement that passes, rejected = its root.
    trees = [
        json.loads(line)
        for line in (workdir / "round_1" / "search" / "trees.jsonl").read_text().splitlines()
    ]
    passed = {t["prompt_id"]: t for t in trees if t["status"] == "passed"}
    pairs = [
        json.loads(line)
        for line in (workdir / "round_1" / "build" / "actor_pairs.jsonl").read_text().splitlines()
    ]
    for pair in pairs:
        assert pair["messages"][0]["role"] == "user"
        assert pair["chosen"]["role"] == pair["rejected"]["role"] == "assistant"
        assert fx.check({"prompt": pair["messages"][0]["content"]}, pair["chosen"]["content"])[0]
        assert not fx.check(
            {"prompt": pair["messages"][0]["content"]}, pair["rejected"]["content"]
        )[0]
        tree = next(
            t for t in passed.values() if t["row"]["prompt"] == pair["messages"][0]["content"]
        )
        assert pair["rejected"]["content"] == tree["nodes"][0]["response"]
    rft = [
        json.loads(line)
        for line in (workdir / "round_1" / "build" / "refiner_sft.jsonl").read_text().splitlines()
    ]
    assert rft and all(r["messages"][-1]["role"] == "assistant" for r in rft)


def test_selfplay_killed_in_tree_search_resumes_to_the_same_outputs(world, uninterrupted):
    root, config = world
    workdir = root / "killed"
    one_round = "--config.rounds=1"  # round 1 is where the kill happens; it is compared whole
    proc = subprocess.Popen(
        _command(config, workdir, one_round),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    search_dir = workdir / "round_1" / "search"
    deadline, killed_in = time.time() + 300, None
    while killed_in is None and proc.poll() is None and time.time() < deadline:
        for f in sorted(search_dir.glob("group_*.json")) if search_dir.exists() else []:
            try:
                if not json.loads(f.read_text())["done"]:
                    killed_in = f
            except (OSError, ValueError):  # replaced while read
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed_in is not None, "the run ended before its tree search was seen in progress"
    assert not (search_dir / "trees.jsonl").exists()  # killed inside the search
    assert not (workdir / "round_1" / "build").exists()

    resumed = subprocess.run(
        _command(config, workdir, one_round), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outputs(workdir, (1,)) == _outputs(uninterrupted[0], (1,))
    # The resumed run's round 1 trained models equal the uninterrupted run's.
    for stage in ("train_actor", "train_refiner"):
        ours = json.loads((workdir / "round_1" / stage / "summary.json").read_text())
        theirs = json.loads((uninterrupted[0] / "round_1" / stage / "summary.json").read_text())
        assert ours["loss"] == theirs["loss"]


def test_selfplay_refuses_a_workdir_with_other_settings(world, uninterrupted):
    _, config = world
    proc = subprocess.run(
        _command(config, uninterrupted[0], "--config.tree.branch=3"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "other settings (changed: tree)" in proc.stderr and "Traceback" not in proc.stderr


def test_judge_outputs_without_verdicts_are_counted_and_the_round_ends(
    world, tmp_path, monkeypatch
):
    """The model as judge, writing no "Final Judgement": every vote is invalid, every judgment
    a tie, no root is searched, no pair built, no model trained, and the round still ends with
    its summary. (A scripted chat stands in for the models: this is the driver's logic.)"""
    from spar_jax import configs
    from spar_jax.spar import rounds
    from spar_jax.spar.generator import ScriptedChat

    def scripted(spec, rnd):
        return ScriptedChat(lambda conv, rng: "I am not sure." if len(conv) == 1 else "")

    monkeypatch.setattr(rounds, "LazyChatModel", scripted)
    _, config_path = world
    config = configs.load(
        config_path, ["--config.rounds=1", "--config.judge.kind=model", "--config.judge.votes=2"]
    )
    logs: list[str] = []
    evaluated = []

    def evaluate(actor, refiner, out_dir):
        evaluated.append((actor, refiner, os.path.relpath(out_dir, tmp_path)))
        return {"score": len(evaluated)}

    (summary,) = rounds.run(config, str(tmp_path / "run"), log=logs.append, evaluate=evaluate)
    assert summary["eval_start"] == {"score": 1} and summary["eval"] == {"score": 2}
    assert [e[2] for e in evaluated] == ["run/round_0/eval", "run/round_1/eval"]
    # Resumed, a finished run evaluates nothing again.
    assert rounds.run(config, str(tmp_path / "run"), log=logs.append, evaluate=evaluate)
    assert len(evaluated) == 2
    # The scripted actor answers all 7 prompts twice, the long one included (no context here).
    assert summary["responses_judged"] == summary["judged_tie"] == 7 * 2
    assert summary["invalid_votes"] == 7 * 2 * 2
    assert summary["trees"] == summary["pairs"] == summary["rft_examples"] == 0
    assert summary["next_actor"] == summary["actor"]  # nothing to train on: unchanged
    assert sum("no training data" in line for line in logs) == 2
    assert any("round 1 summary" in line for line in logs)


def test_evaluator_scores_ifeval_and_the_judge_of_a_round_model(world, tmp_path, monkeypatch):
    """The selfplay command's evaluation stage on the fixture model: IFEval on 2 prompts, judge
    accuracy on 2 synthetic-world rows (this model never says Yes or No: no verdicts)."""
    from spar_jax import configs
    from spar_jax.eval import rounds as eval_rounds

    monkeypatch.setenv("NLTK_DATA", str(REPO.parent / "shared" / "data" / "nltk_data"))
    _, config_path = world
    config = configs.load(config_path)
    assert eval_rounds.evaluator(config) is None  # nothing asked for
    for item in ("ifeval=True", "judge_data=tasks", "limit=2", "max_new_tokens=4"):
        configs.apply_override(config, f"eval.{item}")
    config.eval.judge_max_new_tokens = 4
    evaluate = eval_rounds.evaluator(config)
    metrics = evaluate(config.actor, config.actor, str(tmp_path / "eval"))
    assert set(metrics["ifeval"]) == {
        "prompt_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_strict_acc",
        "inst_level_loose_acc",
    }
    assert set(metrics["judge"]) == {"votes_1", "votes_3", "votes_5"}
    assert (tmp_path / "eval" / "ifeval.json").exists()
    assert (tmp_path / "eval" / "judge_accuracy.json").exists()
