"""A programmatic teacher: the seed data the paper got from GPT-4o-mini, for the synthetic world.

* ``respond(row, rng, error_rate)``: an actor answer. With probability ``error_rate`` it carries
  a planted error of a kind a model makes (a count off by one, a capitalised word, a missing
  keyword, a dropped closing sentence, an extra sentence, a comma...), else it is correct.
  Correct answers vary in what the task leaves free (letter case of the character task, the
  middle of a story, which sentences a text uses): the interfering factors.
* ``judge_trace(row, response)``: the judge output of a perfect judge (``world.check``).
* ``refine_trace(row, failed, fixed)``: a reflection naming what failed and how it is fixed,
  then the fixed answer between ``[[start]]`` and ``[[end]]``. The fixed answer is the correct
  answer the error was planted into, so it differs from the failed one by the error only.
* ``seed_rows(prompts, seed, ...)``: SFT rows ``{"messages": [...]}`` of the three roles.

Everything is deterministic in the seed.
"""

from __future__ import annotations

import random
import re
from typing import Any

from spar_jax.tasks import constraints as C
from spar_jax.tasks import world

Row = dict[str, Any]
_TRIES = 200


def _cons(row: Row, kind: str) -> list[dict]:
    return [c for c in row["task"]["constraints"] if c["type"] == kind]


# --- Correct answers ---------------------------------------------------------------------------


def _chars_answer(row: Row, rng: random.Random, upper_prob: float) -> str:
    text = " ".join(" ".join([c["letter"]] * c["n"]) for c in _cons(row, "count"))
    upper = not _cons(row, "lowercase") and rng.random() < upper_prob
    return text.upper() if upper else text


def _story_answer(row: Row, rng: random.Random) -> str:
    (start,), (end,) = _cons(row, "starts_with"), _cons(row, "ends_with")
    middle = [world.story_sentence(rng) for _ in range(rng.randint(0, 2))]
    return " ".join([start["text"], *middle, end["text"]])


def _text_answer(row: Row, rng: random.Random) -> str:
    topic = row["task"]["topic"]
    sentences = [world.text_sentence(rng, topic) for _ in range(rng.randint(1, 3))]
    for c in _cons(row, "include"):
        if c["word"] not in C.bare_words(" ".join(sentences)):
            sentences[rng.randrange(len(sentences))] = _sentence_with(rng, topic, c["word"])
    text = " ".join(sentences)
    if _cons(row, "no_commas"):
        text = text.replace(",", "")
    if _cons(row, "lowercase"):
        text = text.lower()
    for c in _cons(row, "ends_with"):
        text = f"{text} {c['text']}"
    return text


def _sentence_with(rng: random.Random, topic: str, word: str) -> str:
    for _ in range(_TRIES):
        s = world.text_sentence(rng, topic)
        if word in C.bare_words(s):
            return s
    raise AssertionError(f"no sentence of {topic!r} uses {word!r}")


def correct_answer(row: Row, rng: random.Random, *, upper_prob: float = 0.5) -> str:
    """An answer that passes every constraint of ``row`` (resampled until the verifier agrees)."""
    kind = row["task"]["kind"]
    for _ in range(_TRIES):
        if kind == "chars":
            text = _chars_answer(row, rng, upper_prob)
        elif kind == "story":
            text = _story_answer(row, rng)
        else:
            text = _text_answer(row, rng)
        if world.verify(row, text)[0]:
            return text
    raise ValueError(f"prompt {row['prompt_id']!r}: no correct answer found; is its spec valid?")


# --- Planted errors: each breaks one constraint with a small edit -----------------------------


def _break(c: dict, text: str, row: Row, rng: random.Random) -> str | None:
    t = c["type"]
    topic = row["task"]["topic"]
    if t == "count":
        letters = text.split()
        idx = [i for i, w in enumerate(letters) if w.lower() == c["letter"]]
        if rng.random() < 0.5 or len(idx) == 1:
            letters.insert(idx[-1] + 1, letters[idx[-1]])
        else:
            del letters[idx[-1]]
        return " ".join(letters)
    if t == "lowercase":
        if row["task"]["kind"] == "chars":
            return text.upper()
        return ". ".join(s[:1].upper() + s[1:] for s in text.split(". "))
    if t == "starts_with":
        return text.replace(c["text"], world.story_sentence(rng), 1)
    if t == "ends_with":
        head = text[: -len(c["text"])].rstrip()
        if row["task"]["kind"] == "story" and rng.random() < 0.5:
            return f"{head} {world.story_sentence(rng)}"
        return head
    if t in ("include", "exclude"):
        same = world.TOPICS[topic] if c["word"] in world.TOPICS[topic] else world.ADJECTIVES
        pool = [w for w in same if w != c["word"]]
        if t == "include":
            return _swap_word(text, c["word"], rng.choice(pool))
        present = [w for w in pool if w in C.bare_words(text)]
        return _swap_word(text, rng.choice(present), c["word"]) if present else None
    if t == "max_words":
        while len(C.words(text)) <= c["n"]:
            text = _insert_sentence(text, world.text_sentence(rng, topic), row)
        return text
    if t == "min_words":
        sentences = text.split(". ")  # drop one sentence (not the closing one)
        return ". ".join(sentences[1:]) if len(sentences) > 1 else None
    if t == "no_commas":
        return text.replace(" and the", ", and the", 1) if " and the" in text else None
    raise ValueError(f"constraint type {t!r} has no planted error")


def _swap_word(text: str, old: str, new: str) -> str:
    """``text`` with every whole-word ``old`` (either case) replaced by ``new``."""
    return re.sub(rf"\b{old}\b", new, text, flags=re.IGNORECASE)


def _insert_sentence(text: str, sentence: str, row: Row) -> str:
    if _cons(row, "lowercase"):
        sentence = sentence.lower()
    if _cons(row, "no_commas"):
        sentence = sentence.replace(",", "")
    for c in _cons(row, "ends_with"):
        return f"{text[: -len(c['text'])].rstrip()} {sentence} {c['text']}"
    return f"{text} {sentence}"


def plant_error(row: Row, text: str, rng: random.Random) -> tuple[str, list[str]] | None:
    """``text`` with one constraint broken by a small edit, and the broken types; the other
    constraints still pass. None when no constraint of ``row`` can be broken from ``text``."""
    cons = list(row["task"]["constraints"])
    rng.shuffle(cons)
    for c in cons:
        broken = _break(c, text, row, rng)
        if broken is None or broken == text:
            continue
        _, results = world.verify(row, broken)
        failed = [
            x["type"]
            for x, (ok, _) in zip(row["task"]["constraints"], results, strict=True)
            if not ok
        ]
        if failed == [c["type"]]:
            return broken, failed
    return None


def respond(
    row: Row, rng: random.Random, *, error_rate: float = 0.4, upper_prob: float = 0.5
) -> tuple[str, str]:
    """``(answer, correct_answer)``: the answer has a planted error with probability
    ``error_rate`` (then it differs from ``correct_answer`` by that error only)."""
    for _ in range(_TRIES):
        good = correct_answer(row, rng, upper_prob=upper_prob)
        if rng.random() >= error_rate:
            return good, good
        planted = plant_error(row, good, rng)
        if planted is not None:
            return planted[0], good
    raise ValueError(f"prompt {row['prompt_id']!r}: no error could be planted")


# --- Judge and refine traces -----------------------------------------------------------------


def judge_trace(row: Row, response: str) -> str:
    """What a perfect judge writes about ``response`` (step-by-step, then Final Judgement)."""
    return world.check(row, response)[1]


def _fix_sentence(c: dict, response: str) -> str:
    t = c["type"]
    if t == "count":
        got = C.letter_count(response, c["letter"])
        return (
            f'The letter "{c["letter"]}" appears {got} times instead of {c["n"]}, '
            f"so I will write it {c['n']} times."
        )
    return {
        "starts_with": f'The Output does not start with "{c.get("text")}", so I will start with it.',
        "ends_with": f'The Output does not end with "{c.get("text")}", so I will end with it.',
        "include": f'The word "{c.get("word")}" is missing, so I will add it.',
        "exclude": f'The word "{c.get("word")}" is used, so I will replace it.',
        "max_words": f"The Output has more than {c.get('n')} words, so I will remove a sentence.",
        "min_words": f"The Output has fewer than {c.get('n')} words, so I will add a sentence.",
        "lowercase": "The Output has uppercase letters, so I will make them lowercase.",
        "no_commas": "The Output has commas, so I will remove them.",
    }[t]


def reflection(row: Row, response: str) -> str:
    """What failed in ``response`` and how it will be fixed, keeping the rest unchanged."""
    _, results = world.verify(row, response)
    failed = [c for c, (ok, _) in zip(row["task"]["constraints"], results, strict=True) if not ok]
    parts = [_fix_sentence(c, response) for c in failed]
    return " ".join([*parts, "Everything else stays the same."])


def refine_trace(row: Row, failed: str, fixed: str) -> str:
    """The refiner's output turning ``failed`` into ``fixed`` (spar.prompts format)."""
    from spar_jax.spar import prompts

    return prompts.format_refinement(reflection(row, failed), fixed)


def seed_rows(
    rows: list[Row],
    seed: int,
    *,
    error_rate: float = 0.4,
    upper_prob: float = 0.5,
    roles: tuple[str, ...] = ("actor", "judge", "refine"),
) -> list[dict[str, list[dict[str, str]]]]:
    """SFT rows ``{"messages": [...]}`` for every prompt and role, deterministic in ``seed``.

    * actor: [user prompt, assistant answer] (answers fail at ``error_rate``: the seed actor
      is imperfect, as GPT-4o-mini's answers were);
    * judge: [user judge prompt, assistant judgment] of one answer, failed or correct with
      equal probability;
    * refine: the three-turn refine conversation on a failed answer (judge prompt, perfect
      critique, refine request), then the refinement.
    """
    from spar_jax.spar import prompts

    out = []
    for row in rows:
        rng = random.Random(f"teacher-{seed}-{row['prompt_id']}")
        instr = row["prompt"]
        if "actor" in roles:
            answer, _ = respond(row, rng, error_rate=error_rate, upper_prob=upper_prob)
            out.append(_chat([instr], [answer]))
        if "judge" in roles:
            answer, _ = respond(row, rng, error_rate=0.5, upper_prob=upper_prob)
            out.append(_chat([prompts.judge_prompt(instr, answer)], [judge_trace(row, answer)]))
        if "refine" in roles:
            failed, fixed = respond(row, rng, error_rate=1.0, upper_prob=upper_prob)
            conv = prompts.refine_messages(instr, failed, judge_trace(row, failed))
            conv.append({"role": "assistant", "content": refine_trace(row, failed, fixed)})
            out.append({"messages": conv})
    return out


def _chat(users: list[str], assistants: list[str]) -> dict[str, list[dict[str, str]]]:
    msgs = []
    for u, a in zip(users, assistants, strict=True):
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {"messages": msgs}
