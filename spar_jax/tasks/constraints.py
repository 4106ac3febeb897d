"""Constraint types of the synthetic world: how each is asked for and how it is verified.

A constraint is a JSON-able dict with a ``type`` and its parameters. Every type has

* ``describe(c) -> str``: the sentence of the instruction that asks for it, and
* ``verify(c, response) -> (passed, step)``: the rule verifier and one line of step-by-step
  verification in words (what a perfect judge would write about it).

Types:

=====================  =====================================================================
``count``              the letter ``letter`` appears exactly ``n`` times. Letters are counted
                       case-insensitively: in the paper's character task the letter case is
                       the *interfering factor*, a feature irrelevant to success (its
                       sampled preference pairs drift in case, its refined pairs do not).
``starts_with``        the response starts with the sentence ``text`` (exactly).
``ends_with``          the response ends with ``text`` (a sentence or phrase, exactly).
``include``            the word ``word`` appears (case-insensitive, whole word).
``exclude``            the word ``word`` does not appear (case-insensitive, whole word).
``max_words``          at most ``n`` words (words are whitespace-separated).
``min_words``          at least ``n`` words.
``lowercase``          no uppercase letter anywhere.
``no_commas``          no ``,`` anywhere.
=====================  =====================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Constraint = dict[str, Any]


def words(text: str) -> list[str]:
    """Whitespace-separated words (the word-count rule)."""
    return text.split()


def bare_words(text: str) -> list[str]:
    """Lowercased words without punctuation (the keyword rule)."""
    return re.findall(r"[a-z]+", text.lower())


def letter_count(text: str, letter: str) -> int:
    """How many times ``letter`` appears, either case."""
    return text.lower().count(letter.lower())


def upper_ratio(text: str) -> float:
    """Share of letters in upper case (0 when there are none): the interfering factor of the
    character task, tracked over training by the interference experiment."""
    letters = [ch for ch in text if ch.isalpha()]
    return sum(ch.isupper() for ch in letters) / len(letters) if letters else 0.0


def _verdict(ok: bool) -> str:
    return "satisfied" if ok else "not satisfied"


def _count(c: Constraint, r: str) -> tuple[bool, str]:
    got = letter_count(r, c["letter"])
    ok = got == c["n"]
    return (
        ok,
        f'The letter "{c["letter"]}" must appear {c["n"]} times; it appears {got} times: {_verdict(ok)}.',
    )


def _starts_with(c: Constraint, r: str) -> tuple[bool, str]:
    ok = r.strip().startswith(c["text"])
    seen = "it does" if ok else "it does not"
    return ok, f'The Output must start with "{c["text"]}"; {seen}: {_verdict(ok)}.'


def _ends_with(c: Constraint, r: str) -> tuple[bool, str]:
    ok = r.strip().endswith(c["text"])
    seen = "it does" if ok else "it does not"
    return ok, f'The Output must end with "{c["text"]}"; {seen}: {_verdict(ok)}.'


def _include(c: Constraint, r: str) -> tuple[bool, str]:
    ok = c["word"] in bare_words(r)
    seen = "it does" if ok else "it does not"
    return ok, f'The Output must use the word "{c["word"]}"; {seen}: {_verdict(ok)}.'


def _exclude(c: Constraint, r: str) -> tuple[bool, str]:
    ok = c["word"] not in bare_words(r)
    seen = "it does not" if ok else "it does"
    return ok, f'The Output must not use the word "{c["word"]}"; {seen}: {_verdict(ok)}.'


def _max_words(c: Constraint, r: str) -> tuple[bool, str]:
    got = len(words(r))
    ok = got <= c["n"]
    return ok, f"The Output may have at most {c['n']} words; it has {got}: {_verdict(ok)}."


def _min_words(c: Constraint, r: str) -> tuple[bool, str]:
    got = len(words(r))
    ok = got >= c["n"]
    return ok, f"The Output must have at least {c['n']} words; it has {got}: {_verdict(ok)}."


def _lowercase(c: Constraint, r: str) -> tuple[bool, str]:
    upper = [w for w in words(r) if any(ch.isupper() for ch in w)]
    ok = not upper
    seen = "none has" if ok else f'"{upper[0]}" has one'
    return ok, f"The Output must have no uppercase letters; {seen}: {_verdict(ok)}."


def _no_commas(c: Constraint, r: str) -> tuple[bool, str]:
    got = r.count(",")
    ok = got == 0
    return ok, f"The Output must have no commas; it has {got}: {_verdict(ok)}."


def _describe(c: Constraint) -> str:
    t = c["type"]
    if t == "count":
        return f'Write the letter "{c["letter"]}" {c["n"]} times.'
    if t == "starts_with":
        return f'Start with "{c["text"]}"'
    if t == "ends_with":
        return f'End with "{c["text"]}"'
    if t == "include":
        return f'Use the word "{c["word"]}".'
    if t == "exclude":
        return f'Do not use the word "{c["word"]}".'
    if t == "max_words":
        return f"Use at most {c['n']} words."
    if t == "min_words":
        return f"Use at least {c['n']} words."
    if t == "lowercase":
        return "Use only lowercase letters."
    if t == "no_commas":
        return "Do not use any commas."
    raise ValueError(f"constraint type {t!r} is unknown; known types: {', '.join(VERIFIERS)}")


VERIFIERS: dict[str, Callable[[Constraint, str], tuple[bool, str]]] = {
    "count": _count,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "include": _include,
    "exclude": _exclude,
    "max_words": _max_words,
    "min_words": _min_words,
    "lowercase": _lowercase,
    "no_commas": _no_commas,
}


def describe(c: Constraint) -> str:
    """The instruction sentence asking for constraint ``c``."""
    return _describe(c)


def verify(c: Constraint, response: str) -> tuple[bool, str]:
    """``(passed, one verification line)`` for constraint ``c`` on ``response``."""
    fn = VERIFIERS.get(c.get("type", ""))
    if fn is None:
        raise ValueError(
            f"constraint {c!r} has an unknown type; known types: {', '.join(VERIFIERS)}"
        )
    return fn(c, response)
