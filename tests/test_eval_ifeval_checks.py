"""IFEval checks, one hand-written passing and failing response (or more) per instruction type.

Each case gives the strict and the loose verdict expected by the official
semantics; the loose cases show which official variant rescues the response
(first line, last line or both removed, `*` removed). NLTK's punkt_tab data is
read from ../shared/data/nltk_data through NLTK_DATA.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NLTK_DATA = ROOT.parent / "shared" / "data" / "nltk_data"
os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))

from spar_jax.eval import ifeval, ifeval_checks  # noqa: E402

EN = "the weather today is sunny and warm and i am going for a long walk in the park"
FR = "Le chat est sur la table et il mange une pomme rouge tous les matins."

# (instruction id, kwargs, response, strict, loose)
CASES = [
    ("keywords:existence", {"keywords": ["river", "bank"]}, "The Riverbank was muddy.", True, True),
    ("keywords:existence", {"keywords": ["river", "bank"]}, "The river was muddy.", False, False),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 3, "relation": "at least"},
        "Cat, cats and a CAT.",
        True,
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 3, "relation": "at least"},
        "A cat and a dog.",
        False,
        False,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "less than"},
        "A cat and a dog.",
        True,
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "less than"},
        "Cats:\nA cat and a dog.",
        False,
        True,
    ),  # the first line's match goes with it
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["bad", "evil"]},
        "Nothing badly wrong here.",
        True,
        True,
    ),  # word boundaries: "badly" is allowed
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["bad", "evil"]},
        "Nothing BAD here.",
        False,
        False,
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["bad"]},
        "Note: bad words removed\nAll fine here.",
        False,
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "Zig zag zoo.",
        True,
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "Zig zag.",
        False,
        False,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "#", "let_frequency": 2, "let_relation": "at least"},
        "#one #two",
        True,
        True,
    ),  # counted as given (the official code picks a random letter)
    (
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": 2, "let_relation": "less than"},
        "A banana.",
        False,
        False,
    ),
    ("language:response_language", {"language": "fr"}, FR, True, True),
    ("language:response_language", {"language": "fr"}, EN, False, False),
    ("language:response_language", {"language": "fr"}, "12345 !!!", True, True),  # undecidable
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Hello Mr. Smith. How are you?",
        True,
        True,
    ),  # "Mr." does not end a sentence
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "One. Two. Three.",
        False,
        False,
    ),  # one line: the cut variants are blank, never pass
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "One. Two. Three.",
        True,
        True,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Intro line here.\nOne. Two. Three.",
        False,
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n***\nSecond.",
        True,
        True,
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "***\nFirst.\n***\nSecond.\n***",
        True,
        True,
    ),  # empty ends do not count
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n***\n***\nSecond.",
        False,
        False,
    ),  # an empty middle paragraph fails
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n\nSecond.",
        False,
        False,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three four five",
        True,
        True,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two-three, four!",
        False,
        False,
    ),  # \w+ runs: one two three four
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "Here are the words:\none two",
        False,
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        'Spring is here.\n\n"Summer, at last."',
        True,
        True,
    ),  # quotes and comma stripped
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        "Spring is here.\n\nWinter comes.",
        False,
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        "Spring is here.\n\n**Summer** at last.",
        False,
        True,
    ),  # `*` removed
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"},
        "Spring.\n\nSummer. More.\n\nAutumn. Winter.\nEnd.",
        False,
        False,
    ),  # three paragraphs
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], at [address].",
        True,
        True,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name].",
        False,
        False,
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. bye", True, True),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Hi.\np. p. s more",
        True,
        True,
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nPS bye", False, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two", True, True),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "**Title**\n* one\n* two",
        True,
        True,
    ),  # a `**` line is no bullet
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "* one\n* two\n* three\n* four\n* five",
        False,
        False,
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "Points:\n* one\n* two\n- signed, me",
        False,
        True,
    ),  # the last line removed
    ("detectable_format:constrained_response", {}, "My answer is maybe.", True, True),
    ("detectable_format:constrained_response", {}, "My answer is: yes.", False, False),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*one* and **two**",
        True,
        True,
    ),  # "**two**" counts as a `*...*` span and a `**...**` span
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*one* and * *",
        False,
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nHi.\nSection 2\nBye.",
        True,
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nHi.\nSECTION two\nBye.",
        False,
        False,
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True, True),
    ("detectable_format:json_format", {}, '{"a": 1,}', False, False),
    ("detectable_format:json_format", {}, 'Here it is:\n{"a": 1}', False, True),
    ("detectable_format:title", {}, "<<Joy>>\nA poem.", True, True),
    ("detectable_format:title", {}, "<<   >>\nA poem.", False, False),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True, True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False, False),
    ("combination:two_responses", {}, "One.\n******\n******\nTwo.", False, False),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "write a POEM. Roses are red.",
        True,
        True,
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "Sure!\nWrite a poem. Roses are red.",
        False,
        True,
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "Roses are red.",
        False,
        False,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        '"Text. Any other QUESTIONS?"',
        True,
        True,
    ),  # quotes around the whole reply are ignored
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Text. Any other questions?\nBye.",
        False,
        True,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Text. Any other questions? Yes.",
        False,
        False,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "I AM very HAPPY-GO-LUCKY",
        True,
        True,
    ),  # I, AM, HAPPY-GO-LUCKY
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "I AM here",
        False,
        False,
    ),
    ("change_case:english_capital", {}, EN.upper(), True, True),
    ("change_case:english_capital", {}, EN.upper() + " ok", False, False),
    ("change_case:english_capital", {}, "Note:\n" + EN.upper(), False, True),
    ("change_case:english_lowercase", {}, EN, True, True),
    ("change_case:english_lowercase", {}, FR.lower(), False, False),
    ("change_case:english_lowercase", {}, "Sure!\n" + EN, False, True),
    ("punctuation:no_comma", {}, "No commas here.", True, True),
    ("punctuation:no_comma", {}, "Yes, one.", False, False),
    ("punctuation:no_comma", {}, "Hello, friend!\nNo commas here.", False, True),
    ("startend:quotation", {}, '"Quoted reply."', True, True),
    ("startend:quotation", {}, '"', False, False),
    ("startend:quotation", {}, 'Here you go:\n"Quoted reply."', False, True),
    ("startend:quotation", {}, '*"Quoted reply."*', False, True),  # `*` removed
]


def _example(instruction_id, kwargs):
    rows = [{"key": 0, "prompt": "p", "instruction_id_list": [instruction_id], "kwargs": [kwargs]}]
    return ifeval.parse_inputs(rows)[0]


@pytest.mark.parametrize("instruction_id,kwargs,response,strict,loose", CASES)
def test_check(instruction_id, kwargs, response, strict, loose):
    result = ifeval.evaluate(_example(instruction_id, kwargs), response)
    assert (result.strict[0], result.loose[0]) == (strict, loose)


def test_every_type_has_passing_and_failing_cases():
    assert len(ifeval_checks.CHECKS) == 25
    for instruction_id in ifeval_checks.CHECKS:
        verdicts = {c[3] for c in CASES if c[0] == instruction_id}
        assert verdicts == {True, False}, instruction_id


def test_loose_variants_in_official_order():
    assert ifeval.loose_variants("*a*\nb\n*c*") == [
        "*a*\nb\n*c*",
        "a\nb\nc",
        "b\n*c*",
        "*a*\nb",
        "b",
        "b\nc",
        "a\nb",
        "b",
    ]


def test_blank_response_follows_nothing():
    result = ifeval.evaluate(_example("punctuation:no_comma", {}), " \n ")
    assert result.strict == (False,) and result.loose == (False,)


def test_bad_kwargs_name_the_row():
    rows = [
        {
            "key": 7,
            "prompt": "p",
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{"x": 1}],
        }
    ]
    with pytest.raises(ifeval.IFEvalDataError, match="row 1: punctuation:no_comma takes kwargs"):
        ifeval.parse_inputs(rows)
    rows[0]["kwargs"] = [{"x": None}]  # the google/IFEval dataset fills unused kwargs with None
    assert ifeval.parse_inputs(rows)[0].kwargs == ({},)
    rows[0]["instruction_id_list"] = ["nope:nothing"]
    with pytest.raises(ifeval.IFEvalDataError, match="unknown instruction id 'nope:nothing'"):
        ifeval.parse_inputs(rows)


def test_missing_nltk_data_is_one_line_error(tmp_path):
    code = "from spar_jax.eval import ifeval_text\nifeval_text.count_sentences('One. Two.')\n"
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("spar_jax.eval.ifeval_text.NltkDataError: NLTK data 'punkt_tab'")
    assert "NLTK_DATA" in last
