"""Judge accuracy with majority voting over 1, 3 and 5 votes, on a scripted judge."""

import json

import pytest

from spar_jax.eval import judge_accuracy
from spar_jax.spar import prompts

# response -> (label, the five votes the scripted judge casts; -1 = an unparsable output)
SCRIPT = {
    "r1": (1, [1, 1, 1, 1, 1]),
    "r2": (1, [0, 1, 1, 0, 0]),
    "r3": (0, [0, -1, 0, 1, 1]),
    "r4": (0, [1, 0, 0, -1, -1]),
}


class ScriptedJudge:
    """A ChatGenerator whose j-th judgment of a response is SCRIPT's j-th vote."""

    def __init__(self):
        self.calls = []

    def generate(self, conversations, sampling_params, n, seed):
        self.calls.append((len(conversations), n, sampling_params.temperature))
        out = []
        for conv in conversations:
            (response,) = [r for r in SCRIPT if f"Output: \u201c{r}\u201d" in conv[0]["content"]]
            votes = SCRIPT[response][1][:n]
            out.append(
                [
                    prompts.format_judgement("checked", bool(v)) if v >= 0 else "no idea"
                    for v in votes
                ]
            )
        return out


def _rows():
    return [{"prompt": "Say hi.", "response": r, "label": y} for r, (y, _) in SCRIPT.items()]


def test_majority_voting_metrics():
    judge = ScriptedJudge()
    report = judge_accuracy.judge_accuracy(judge, _rows(), votes=(1, 3, 5), seed=3)
    assert judge.calls == [(4, 5, 0.7)]  # one call, 5 votes each, the judge's temperature
    # 1 vote: preds 1,0,0,1; 3 votes: 1,1,0,0 (all right); 5 votes: 1,0,tie,0.
    assert report["votes_1"] == pytest.approx(
        {"accuracy": 0.5, "f1": 0.5, "f1_no": 0.5, "undecided": 0.0}
    )
    assert report["votes_3"] == pytest.approx(
        {"accuracy": 1.0, "f1": 1.0, "f1_no": 1.0, "undecided": 0.0}
    )
    assert report["votes_5"] == pytest.approx(
        {"accuracy": 0.5, "f1": 2 / 3, "f1_no": 0.5, "undecided": 0.25}
    )
    assert report["rows"][2] == {"label": 0, "votes": [0, -1, 0, 1, 1]}
    assert "      5     50.00     66.67    50.00      25.00" in judge_accuracy.format_report(report)


def test_read_labelled(tmp_path):
    path = tmp_path / "l.jsonl"
    rows = [
        {"prompt": "p", "response": "a", "label": "Yes"},
        {"prompt": "p", "response": "b", "label": False},
        {"prompt": "p", "response": "c", "label": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["label"] for r in judge_accuracy.read_labelled(str(path))] == [1, 0, 1]
    path.write_text(json.dumps({"prompt": "p", "response": "a", "label": "maybe"}) + "\n")
    with pytest.raises(judge_accuracy.JudgeDataError, match="line 1: label 'maybe'"):
        judge_accuracy.read_labelled(str(path))


def test_labelled_from_ifeval_metrics():
    metrics = {
        "prompts": [
            {"prompt": "a", "response": "x", "follow_all_instructions_strict": True},
            {"prompt": "b", "response": "y", "follow_all_instructions_strict": False},
        ]
    }
    assert judge_accuracy.labelled_from_ifeval(metrics) == [
        {"prompt": "a", "response": "x", "label": 1},
        {"prompt": "b", "response": "y", "label": 0},
    ]


def test_labelled_from_tasks():
    from spar_jax import tasks

    rows = judge_accuracy.labelled_from_tasks(40, seed=1)
    assert rows == judge_accuracy.labelled_from_tasks(40, seed=1)  # deterministic
    assert all(r["label"] == int(tasks.check(r, r["response"])[0]) for r in rows)
    assert 10 <= sum(r["label"] for r in rows) <= 30  # about half carry a planted error
