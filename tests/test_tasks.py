"""The synthetic world: verifiers on hand-written answers, prompts, the teacher's seed data."""

import difflib
import json
import random

import pytest

from spar_jax import tasks
from spar_jax.spar import prompts
from spar_jax.tasks import constraints as C
from spar_jax.tasks import teacher, world

# (constraint, passing answers, failing answers), written by hand.
CASES = [
    ({"type": "count", "letter": "a", "n": 3}, ["a a a b b", "A A A", "aAa"], ["a a", "a a a a"]),
    (
        {"type": "starts_with", "text": "The cat went home."},
        ["The cat went home. A bird sat.", "  The cat went home."],
        ["A bird sat. The cat went home.", "the cat went home.", "The cat went home"],
    ),
    (
        {"type": "ends_with", "text": "That is all."},
        ["The sea is blue. That is all.", "That is all. "],
        ["That is all. The sea is blue.", "The sea is blue. That is all", "That is all!"],
    ),
    (
        {"type": "include", "word": "boat"},
        ["I see the boat.", "The Boat is old.", "boat"],
        ["I see the boats.", "The sea is blue.", ""],
    ),
    (
        {"type": "exclude", "word": "fish"},
        ["The boat is old.", "I like fishing.", ""],
        ["The fish is red.", "FISH.", "a fish, and a boat"],
    ),
    (
        {"type": "max_words", "n": 4},
        ["The boat is old.", "one", ""],
        ["The boat is very old.", "a b c d e"],
    ),
    ({"type": "min_words", "n": 3}, ["The boat is old.", "a b c"], ["a b", "", "boat."]),
    ({"type": "lowercase"}, ["the boat is old.", "a a a", "", "123 ok"], ["The boat.", "a A"]),
    ({"type": "no_commas"}, ["the boat is old and the sea is blue."], ["the boat, the sea.", ","]),
]


@pytest.mark.parametrize("constraint,good,bad", CASES, ids=[c[0]["type"] for c in CASES])
def test_verifier_on_hand_written_answers(constraint, good, bad):
    for answer in good:
        ok, line = C.verify(constraint, answer)
        assert ok and line.endswith(": satisfied."), (answer, line)
    for answer in bad:
        ok, line = C.verify(constraint, answer)
        assert not ok and line.endswith(": not satisfied."), (answer, line)


def test_every_constraint_type_has_a_hand_written_case():
    assert {c[0]["type"] for c in CASES} == set(C.VERIFIERS)


def test_verification_lines_state_what_was_counted():
    assert "it appears 2 times" in C.verify({"type": "count", "letter": "b", "n": 3}, "b B")[1]
    assert "it has 5" in C.verify({"type": "max_words", "n": 4}, "a b c d e")[1]
    assert '"The"' in C.verify({"type": "lowercase"}, "The boat")[1]


def test_upper_ratio():
    assert C.upper_ratio("A A b b") == 0.5
    assert C.upper_ratio("") == 0.0 and C.upper_ratio("ABC") == 1.0


def test_unknown_constraint_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown type"):
        C.verify({"type": "rhyme"}, "x")
    with pytest.raises(ValueError, match="no task spec"):
        tasks.check({"prompt": "hi", "prompt_id": "p"}, "x")


def test_check_writes_a_judgement_that_parses_to_the_rule_verdict():
    row = {
        "prompt": 'Write a string of letters. Write the letter "a" 2 times.',
        "prompt_id": "x",
        "task": {
            "kind": "chars",
            "topic": "",
            "constraints": [{"type": "count", "letter": "a", "n": 2}],
        },
    }
    ok, critique = tasks.check(row, "a a")
    assert ok and prompts.parse_verdict(critique) == 1
    ok, critique = tasks.check(row, "a a a")
    assert not ok and prompts.parse_verdict(critique) == 0
    assert "it appears 3 times: not satisfied" in critique


def test_make_prompts_is_deterministic_json_and_covers_the_kinds():
    rows = tasks.make_prompts(60, seed=3)
    assert rows == tasks.make_prompts(60, seed=3)
    assert rows != tasks.make_prompts(60, seed=4)
    assert json.loads(json.dumps(rows)) == rows
    assert {r["task"]["kind"] for r in rows} == set(world.KINDS)
    assert len({r["prompt_id"] for r in rows}) == 60
    assert not any(tasks.check(r, "")[0] for r in tasks.make_prompts(300, seed=0))
    for r in rows:
        assert r["prompt"] == world.render_prompt(r["task"])
    kinds = {r["task"]["kind"] for r in tasks.make_prompts(10, 0, kinds=["story"])}
    assert kinds == {"story"}
    with pytest.raises(ValueError, match="unknown"):
        tasks.make_prompts(2, 0, kinds=["poem"])


def test_story_and_chars_prompts_are_the_papers_tasks():
    for r in tasks.make_prompts(30, 0, kinds=["story", "chars"]):
        types = [c["type"] for c in r["task"]["constraints"]]
        if r["task"]["kind"] == "story":
            assert types == ["starts_with", "ends_with"]
        else:
            assert set(types) <= {"count", "lowercase"} and "count" in types


ROWS = tasks.make_prompts(150, seed=11)
_ONE_SENTENCE = 12  # the longest sentence of the world has 10 words (a closing phrase adds 3)


def _changed_words(a: str, b: str) -> int:
    """Words replaced, inserted or deleted between ``a`` and ``b``."""
    ops = difflib.SequenceMatcher(a=a.split(), b=b.split()).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in ops if op != "equal")


def test_teacher_correct_answers_pass_and_vary_in_the_interfering_factors():
    rng = random.Random(0)
    uppers, middles = [], set()
    for r in ROWS:
        a = teacher.correct_answer(r, rng)
        assert tasks.check(r, a)[0], (r["prompt"], a)
        if r["task"]["kind"] == "chars" and not teacher._cons(r, "lowercase"):
            uppers.append(C.upper_ratio(a))
        if r["task"]["kind"] == "story":
            middles.add(len(a))
    assert 0.2 < sum(u == 1.0 for u in uppers) / len(uppers) < 0.8  # case: free
    assert len(middles) > 5  # story content: free


def test_planted_errors_break_exactly_one_constraint_with_a_small_edit():
    rng = random.Random(1)
    broken_types = set()
    for r in tasks.make_prompts(450, seed=12):
        bad, good = teacher.respond(r, rng, error_rate=1.0)
        assert tasks.check(r, good)[0]
        ok, results = tasks.verify(r, bad)
        failed = [
            c["type"] for c, (o, _) in zip(r["task"]["constraints"], results, strict=True) if not o
        ]
        assert not ok and len(failed) == 1
        broken_types.update(failed)
        # A small edit (a case error changes case only).
        assert _changed_words(good.lower(), bad.lower()) <= _ONE_SENTENCE, (good, bad)
    assert broken_types == set(C.VERIFIERS)


def test_error_rate_controls_the_share_of_failed_answers():
    rng = random.Random(2)
    for rate in (0.0, 0.3, 1.0):
        fails = [not tasks.check(r, teacher.respond(r, rng, error_rate=rate)[0])[0] for r in ROWS]
        assert abs(sum(fails) / len(fails) - rate) < 0.12


def test_judge_traces_parse_to_the_rule_verdict():
    rows = teacher.seed_rows(ROWS, seed=0, roles=("judge",))
    verdicts = []
    for r, sft in zip(ROWS, rows, strict=True):
        user, answer = sft["messages"]
        assert user["content"].startswith(prompts.JUDGE_TEMPLATE.split("{instruction}")[0])
        response = user["content"].split("Output: \u201c", 1)[1].rsplit("\u201d", 1)[0]
        verdict = prompts.parse_verdict(answer["content"])
        assert verdict == int(tasks.check(r, response)[0])
        assert answer["content"].count("satisfied") == len(r["task"]["constraints"])
        verdicts.append(verdict)
    assert 0.3 < sum(verdicts) / len(verdicts) < 0.7  # balanced


def test_refine_traces_fix_exactly_the_failed_constraints_with_minimal_edits():
    rows = teacher.seed_rows(ROWS, seed=0, roles=("refine",))
    for r, sft in zip(ROWS, rows, strict=True):
        judge, critique, request, answer = sft["messages"]
        assert request["content"] == prompts.REFINE_REQUEST
        assert prompts.parse_verdict(critique["content"]) == 0
        failed = judge["content"].split("Output: \u201c", 1)[1].rsplit("\u201d", 1)[0]
        fixed = prompts.parse_refinement(answer["content"])
        assert fixed is not None and tasks.check(r, fixed)[0]
        _, before = tasks.verify(r, failed)
        n_failed = sum(not ok for ok, _ in before)
        assert n_failed == 1
        assert answer["content"].count(", so I will") == n_failed  # one fix per failure
        assert "Everything else stays the same." in answer["content"]
        # Minimal: a word, a sentence or the letter case changes, not the whole answer.
        assert _changed_words(failed.lower(), fixed.lower()) <= _ONE_SENTENCE, (failed, fixed)
        # Fixes what failed and nothing else: the answer it starts from differs only there.
        assert fixed != failed


def test_seed_rows_are_deterministic_by_seed_and_well_formed():
    a = teacher.seed_rows(ROWS[:30], seed=5)
    assert a == teacher.seed_rows(ROWS[:30], seed=5)
    assert a != teacher.seed_rows(ROWS[:30], seed=6)
    assert len(a) == 90
    for row in a:
        roles = [m["role"] for m in row["messages"]]
        assert roles in (["user", "assistant"], ["user", "assistant", "user", "assistant"])
    actor = teacher.seed_rows(ROWS, seed=0, roles=("actor",), error_rate=0.25)
    fails = [
        not tasks.check(r, s["messages"][1]["content"])[0] for r, s in zip(ROWS, actor, strict=True)
    ]
    assert 0.1 < sum(fails) / len(fails) < 0.4
