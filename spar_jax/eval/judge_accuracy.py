r"""Judge accuracy: the refiner's verdicts against labelled rows, with majority voting.

    rows = read_labelled("labelled.jsonl")        # {"prompt", "response", "label"} rows
    report = judge_accuracy(chat, rows, votes=(1, 3, 5), seed=0)
    report["votes_5"]["accuracy"], report["votes_5"]["f1"]

    python -m spar_jax eval judge --config configs/eval_judge.py \
        --config.model=DIR --config.data=labelled.jsonl   (spar_jax/cli/eval.py)

The judge is `spar.judge.ModelJudge`: the judge prompt of the paper, sampled
votes parsed from "Final Judgement" (the self-play settings: temperature 0.7,
top_p 1.0). max(votes) votes are sampled once per row; the verdict with k votes
is the majority of the first k (so the 1-, 3- and 5-vote verdicts share
samples and differ only by voting). A tie, or no parsable vote, is undecided:
wrong for accuracy, and neither a positive nor a negative prediction for F1.
`f1` is for the "Yes" class (the response follows the prompt), `f1_no` for
"No" (the judge finds the failure), as in the paper's judgment evaluation.

Labels are 1 / 0, true / false or "yes" / "no". `labelled_from_ifeval` turns an
IFEval metrics file (prompt-level strict verdicts of the official checks) into
labelled rows, so a refiner can be measured on any model's IFEval answers;
`labelled_from_tasks` makes rows of the synthetic world (the teacher's answers,
half with a planted error, labelled by the rule verifiers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from spar_jax.errors import MissingFileError, SparError


class JudgeDataError(SparError, ValueError):
    """A labelled-data file we cannot use; the message names the row and the fix."""


_LABELS = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}


def _label(value, where: str) -> int:
    key = str(value).strip().lower()
    if isinstance(value, bool | int | str) and key in _LABELS:
        return _LABELS[key]
    raise JudgeDataError(f"{where}: label {value!r} is not 1/0, true/false or yes/no")


def read_labelled(path: str) -> list[dict]:
    """Rows {"prompt", "response", "label": 1 | 0} of a JSONL file."""
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: labelled data file not found") from None
    rows = []
    with f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise JudgeDataError(f"{where}: not JSON") from None
            if not all(isinstance(row.get(k), str) for k in ("prompt", "response")):
                raise JudgeDataError(f"{where}: needs string 'prompt' and 'response'")
            if "label" not in row:
                raise JudgeDataError(f"{where}: needs a 'label' (1 = follows, 0 = does not)")
            rows.append({**row, "label": _label(row["label"], where)})
    if not rows:
        raise JudgeDataError(f"{path}: no labelled rows")
    return rows


def labelled_from_ifeval(metrics: dict) -> list[dict]:
    """Labelled rows from `eval ifeval`'s metrics JSON: label = all instructions pass (strict)."""
    return [
        {"prompt": p["prompt"], "response": p["response"],
         "label": int(p["follow_all_instructions_strict"])}
        for p in metrics["prompts"]
    ]  # fmt: skip


def labelled_from_tasks(n: int, seed: int, error_rate: float = 0.5) -> list[dict]:
    """`n` synthetic-world prompts with a teacher answer each (a planted error at
    `error_rate`), labelled by `tasks.check`; deterministic in (n, seed)."""
    import random

    from spar_jax import tasks

    rng = random.Random(seed)
    rows = []
    for row in tasks.make_prompts(n, seed):
        answer, _ = tasks.respond(row, rng, error_rate=error_rate)
        rows.append({**row, "response": answer, "label": int(tasks.check(row, answer)[0])})
    return rows


def _f1(preds: Sequence[int | None], labels: Sequence[int], positive: int) -> float:
    tp = sum(p == positive and y == positive for p, y in zip(preds, labels, strict=True))
    predicted = sum(p == positive for p in preds)
    actual = sum(y == positive for y in labels)
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def verdict_metrics(preds: Sequence[int | None], labels: Sequence[int]) -> dict[str, float]:
    """accuracy, f1 (Yes class), f1_no, undecided rate of verdicts (None = undecided)."""
    n = len(labels)
    return {
        "accuracy": sum(p == y for p, y in zip(preds, labels, strict=True)) / n,
        "f1": _f1(preds, labels, 1),
        "f1_no": _f1(preds, labels, 0),
        "undecided": sum(p is None for p in preds) / n,
    }


def judge_accuracy(
    model,
    rows: Sequence[dict],
    *,
    votes: Sequence[int] = (1, 3, 5),
    seed: int = 0,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 2048,
) -> dict:
    """{"votes_k": verdict_metrics} for each k, plus per-row votes, for a ChatGenerator judge."""
    from spar_jax.spar.judge import Judgment, ModelJudge

    if not rows or min(votes) < 1:
        raise ValueError("judge_accuracy needs rows and vote counts >= 1")
    judge = ModelJudge(
        model, n_votes=max(votes), temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    judgments = judge.judge([(r["prompt"], r["response"]) for r in rows], seed=seed)
    labels = [r["label"] for r in rows]
    report: dict = {"num_rows": len(rows), "positives": sum(labels)}
    for k in votes:
        preds = [Judgment.from_votes(j.votes[:k], j.texts[:k]).label for j in judgments]
        report[f"votes_{k}"] = verdict_metrics(preds, labels)
    report["rows"] = [
        {"label": y, "votes": j.votes} for y, j in zip(labels, judgments, strict=True)
    ]
    return report


def format_report(report: dict) -> str:
    ks = [k for k in report if k.startswith("votes_")]
    lines = [
        f"judge on {report['num_rows']} labelled rows ({report['positives']} follow)",
        f"  {'votes':>5} {'accuracy':>9} {'f1 (yes)':>9} {'f1 (no)':>8} {'undecided':>10}",
    ]
    for k in ks:
        m = report[k]
        lines.append(
            f"  {k.removeprefix('votes_'):>5} {m['accuracy'] * 100:9.2f} {m['f1'] * 100:9.2f} "
            f"{m['f1_no'] * 100:8.2f} {m['undecided'] * 100:10.2f}"
        )
    return "\n".join(lines)
