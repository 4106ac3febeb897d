"""Prompt texts and parsers against the official SPaR release (thu-coai/SPaR)."""

import hashlib

import pytest

from spar_jax.spar import prompts

# sha256 of the official texts: `judge_template` in src/tasks/prompts.py and the third
# message of `build_refine_message` in src/tasks/science.py.
OFFICIAL_JUDGE_SHA = "347b9d596f30836964b2329f6afec8a067e6d116c5d0dc6bb910364b3f36eea8"
OFFICIAL_REFINE_SHA = "c765a9420d34d6cea7f382471f30cfb8428734ec001d24894054b78bd3c7a032"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_texts_match_the_official_release():
    # The official template formats with "{}" slots; ours has named slots in their place.
    official_form = prompts.JUDGE_TEMPLATE.replace("{instruction}", "{}").replace(
        "{response}", "{}"
    )
    assert sha(official_form) == OFFICIAL_JUDGE_SHA
    assert sha(prompts.REFINE_REQUEST) == OFFICIAL_REFINE_SHA


def test_judge_prompt_treats_text_as_data():
    text = prompts.judge_prompt("Say {response} in {0} words.", "Hi {instruction} }{")
    assert "Prompt: \u201cSay {response} in {0} words.\u201d" in text
    assert "Output: \u201cHi {instruction} }{\u201d" in text
    assert text.endswith(
        "Final Judgement (if the Output accurately follows the Prompt): (Yes or No)"
    )


def test_refine_messages_shape():
    msgs = prompts.refine_messages("Write a haiku.", "A poem", "Step-by-step ... No")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == prompts.judge_prompt("Write a haiku.", "A poem")
    assert msgs[1]["content"] == "Step-by-step ... No"
    assert msgs[2]["content"] == prompts.REFINE_REQUEST


@pytest.mark.parametrize(
    "text, verdict",
    [
        (prompts.format_judgement("all constraints hold", True), 1),
        (prompts.format_judgement("3 paragraphs, not 4", False), 0),
        ("", -1),
        (None, -1),
        ("Yes, it follows the prompt.", -1),  # no "Final Judgement"
        ("Final Judgement: unclear", -1),  # marker but neither word
        ("final judgement: Yes", -1),  # the marker is case-sensitive
        ("Final Judgement: Yes. No constraint is violated.", 1),  # both words: first wins
        ("Final Judgement: No. Yes, it is close.", 0),
        ("Final Judgement: Not quite. Yes", 0),  # substring match, as the official parser
        ("Final Judgement: Yesterday's answer", 1),
        ("Final Judgement: pending Final Judgement: Yes", -1),  # only the first section counts
        ("Step-by-step: No issue.\nFinal Judgement (if ...): Yes", 1),  # text before is ignored
    ],
)
def test_parse_verdict(text, verdict):
    assert prompts.parse_verdict(text) == verdict


@pytest.mark.parametrize(
    "text, refined",
    [
        (prompts.format_refinement("add a title", "  <<T>>\nbody  "), "<<T>>\nbody"),
        ("Final Refined Output: [[start]] a [[end]] trailing", "a"),
        ("no markers at all", None),
        (None, None),
        ("Final Refined Output: a [[end]]", None),  # [[start]] missing
        ("[[start]]   [[end]]", None),  # empty
        ("[[start]] cut off at max tokens", "cut off at max tokens"),  # [[end]] missing
        ("[[start]] a [[end]] [[start]] b [[end]]", "a"),  # repeated: the first pair
        ("[[start]] a [[start]] b [[end]]", "a"),  # a second [[start]] ends the first
        ("[[end]] x [[start]] y [[end]]", "y"),  # a stray [[end]] before [[start]]
    ],
)
def test_parse_refinement(text, refined):
    assert prompts.parse_refinement(text) == refined
