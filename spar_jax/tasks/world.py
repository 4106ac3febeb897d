"""The synthetic instruction world: small vocabularies, three kinds of prompts, rule checks.

Kinds (``row["task"]["kind"]``):

* ``chars`` — the paper's character task: "Write the letter "a" 3 times. Write the letter
  "b" 2 times." Answers are space-separated letters ("a a a b b"); counts are 1-5 and case
  does not count (the interfering factor) unless the prompt also says "Use only lowercase
  letters." (a ``lowercase`` constraint, on about a third of the prompts).
* ``story`` — the paper's story task: a 2-4 sentence story that must start and end with given
  sentences; the sentences in between (the story's content) are the interfering factor.
* ``text`` — IFEval-like: "Write about the sea." with one or two of ``include``, ``exclude``,
  ``max_words``, ``min_words``, ``lowercase``, ``ends_with`` (a closing phrase), ``no_commas``.

A prompt row is ``{"prompt": str, "prompt_id": str, "task": {"kind": str, "topic": str,
"constraints": [constraint dicts, see ``constraints``]}}``; everything is JSON-able.
"""

from __future__ import annotations

import random
from typing import Any

from spar_jax.tasks import constraints as C

KINDS = ("chars", "story", "text")

# Held-out rows (evaluation, probes) are drawn with seeds from here on; training prompts use
# small seeds, so the two never share a seed.
HELD_OUT_SEED = 1_000_000

LETTERS = ("a", "b", "c", "d", "e")
MAX_COUNT = 5

SUBJECTS = ("The cat", "A small dog", "The old man", "The girl", "A bird", "The boy")
PREDICATES = (
    "woke up early",
    "found a red ball",
    "walked to the lake",
    "sat under a tree",
    "saw a big ship",
    "ate some bread",
    "lost a blue hat",
    "went home",
    "ran in the rain",
    "met a friend",
)

TOPICS: dict[str, tuple[str, ...]] = {
    "the sea": ("boat", "fish", "wave", "sand"),
    "the forest": ("tree", "bird", "path", "leaf"),
    "the city": ("street", "car", "shop", "bus"),
    "the farm": ("cow", "barn", "field", "horse"),
    "the school": ("book", "desk", "class", "pen"),
    "the sky": ("sun", "cloud", "moon", "star"),
}
ADJECTIVES = ("big", "small", "old", "new", "red", "green", "quiet", "bright")
# Sentence templates of the text kind; {n1}/{n2} are topic nouns, {a1}/{a2} adjectives.
TEMPLATES = (
    "The {n1} is {a1}.",
    "I see the {a1} {n1}.",
    "The {n1} is {a1}, and the {n2} is {a2}.",
    "We like the {n1} near the {n2}.",
    "The {a1} {n1} and the {n2} are here.",
)
CLOSINGS = ("That is all.", "The end.", "Thank you.", "See you soon.")
WORD_LIMITS = (8, 10, 12, 14)

TEXT_CONSTRAINTS = ("include", "exclude", "max_words", "min_words", "lowercase", "ends_with")
TEXT_CONSTRAINTS += ("no_commas",)
_NEEDS_TEXT = ("include", "min_words", "ends_with")
# Pairs never asked together (a lowercase answer cannot end with "That is all.").
_CONFLICTS = {frozenset(("lowercase", "ends_with")), frozenset(("max_words", "min_words"))}
_CONFLICTS |= {frozenset(("include", "exclude"))}


def story_sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(PREDICATES)}."


def text_sentence(rng: random.Random, topic: str, template: str | None = None) -> str:
    n1, n2 = rng.sample(TOPICS[topic], 2)
    a1, a2 = rng.sample(ADJECTIVES, 2)
    return (template or rng.choice(TEMPLATES)).format(n1=n1, n2=n2, a1=a1, a2=a2)


def _chars_task(rng: random.Random) -> dict[str, Any]:
    letters = rng.sample(LETTERS, rng.choice((1, 2, 2, 2)))
    cons = [{"type": "count", "letter": x, "n": rng.randint(1, MAX_COUNT)} for x in letters]
    if rng.random() < 1 / 3:
        cons.append({"type": "lowercase"})
    return {"kind": "chars", "topic": "", "constraints": cons}


def _story_task(rng: random.Random) -> dict[str, Any]:
    start = story_sentence(rng)
    end = story_sentence(rng)
    while end == start:
        end = story_sentence(rng)
    cons = [{"type": "starts_with", "text": start}, {"type": "ends_with", "text": end}]
    return {"kind": "story", "topic": "", "constraints": cons}


def _text_constraint(rng: random.Random, kind: str, topic: str) -> dict[str, Any]:
    if kind in ("include", "exclude"):
        pool = TOPICS[topic] if kind == "exclude" else TOPICS[topic] + ADJECTIVES
        return {"type": kind, "word": rng.choice(pool)}
    if kind in ("max_words", "min_words"):
        return {"type": kind, "n": rng.choice(WORD_LIMITS)}
    if kind == "ends_with":
        return {"type": kind, "text": rng.choice(CLOSINGS)}
    return {"type": kind}


def _text_task(rng: random.Random) -> dict[str, Any]:
    topic = rng.choice(sorted(TOPICS))
    while True:
        # One constraint that an empty answer fails, so an empty answer never passes.
        types = [rng.choice(_NEEDS_TEXT)]
        if rng.random() < 0.5:
            types.append(rng.choice(TEXT_CONSTRAINTS))
            rng.shuffle(types)
        if len(set(types)) == len(types) and frozenset(types) not in _CONFLICTS:
            break
    cons = [_text_constraint(rng, t, topic) for t in types]
    return {"kind": "text", "topic": topic, "constraints": cons}


_MAKERS = {"chars": _chars_task, "story": _story_task, "text": _text_task}
_HEADS = {"chars": "Write a string of letters.", "story": "Write a short story."}


def render_prompt(task: dict[str, Any]) -> str:
    """The instruction text of a task spec."""
    head = _HEADS.get(task["kind"]) or f"Write about {task['topic']}."
    return " ".join([head, *(C.describe(c) for c in task["constraints"])])


def make_prompts(n: int, seed: int, kinds: tuple[str, ...] | list[str] | None = None) -> list[dict]:
    """``n`` prompt rows, deterministic in ``(n, seed, kinds)``; kinds cycle in order.

    Returns rows ``{"prompt", "prompt_id", "task"}`` (see the module docstring).
    """
    kinds = tuple(kinds or KINDS)
    unknown = [k for k in kinds if k not in _MAKERS]
    if unknown:
        raise ValueError(f"kinds={unknown} are unknown; use some of {KINDS}")
    rng = random.Random(f"prompts-{seed}")
    rows = []
    for i in range(n):
        task = _MAKERS[kinds[i % len(kinds)]](rng)
        rows.append({"prompt": render_prompt(task), "prompt_id": f"s{seed}-{i}", "task": task})
    return rows


def verify(row: dict[str, Any], response: str) -> tuple[bool, list[tuple[bool, str]]]:
    """``(passed, [(passed, verification line) per constraint])`` of ``response`` to ``row``."""
    task = row.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("constraints"), list):
        raise ValueError(
            f"prompt row {row.get('prompt_id', '?')!r} has no task spec; rows of "
            "spar_jax.tasks.make_prompts carry one under 'task'"
        )
    results = [C.verify(c, response) for c in task["constraints"]]
    return all(ok for ok, _ in results), results


def verification_text(results: list[tuple[bool, str]]) -> str:
    """The step-by-step verification: one numbered line per constraint."""
    return "\n".join(f"{i}. {line}" for i, (_, line) in enumerate(results, 1))


def check(row: dict[str, Any], response: str) -> tuple[bool, str]:
    """``(passed, critique)``: the rule verdict and what a perfect judge writes, in the judge
    output format (``spar.prompts.format_judgement``)."""
    from spar_jax.spar import prompts

    passed, results = verify(row, response)
    return passed, prompts.format_judgement(verification_text(results), passed)
