"""The judge and refine prompts of SPaR, and the parsers of their outputs.

Texts and parsing follow the paper's released code (thu-coai/SPaR:
`src/tasks/prompts.py`, `src/tasks/science.py`, `src/models/get_response.py`)
word for word, typographic quotes and the judge prompt's "weather" included,
because the released models were trained on exactly these strings.

    judge_prompt(instruction, response)            # user message of a judgment
    refine_messages(instruction, response, critique)
        # [user: judge prompt, assistant: critique, user: REFINE_REQUEST]
    parse_verdict(judge_output)      # 1 (Yes), 0 (No), -1 (no verdict)
    parse_refinement(refine_output)  # the refined response, or None

One refine request text serves both search and training (the official code
trains the refiner on a copy indented by four spaces; the search text is used).

Odd outputs, with the official semantics:
  * verdict: only the text between the first "Final Judgement" and the next one
    (or the end) is read; within it, whichever of the substrings "Yes" / "No"
    comes first wins (case-sensitive, so "Not" counts as "No"); neither, or no
    "Final Judgement" at all, is -1.
  * refinement: the text after the first "[[start]]" up to the first "[[end]]"
    after it (a second "[[start]]" also ends it), stripped. A missing
    "[[start]]" or an empty result is a failure (None). A missing "[[end]]"
    keeps everything after "[[start]]", as the official parser does.
"""

from __future__ import annotations

JUDGE_TEMPLATE = """Please act an expert in evaluating the capabilities of instruction-following. In the instruction-following task, the Output needs to honestly/precisely/closely follow the given Prompt.
Your task is to carefully judge whether the Output to honestly/precisely/closely follows the given Prompt. If there are any constraints in the Prompt that are not satisfied by the Output, please list all the constraints that are not satisfied.

Prompt: \u201c{instruction}\u201d

Output: \u201c{response}\u201d

Please carefully judge if each constraint is perfectly satisfied and give a final judgement weather the Output accurately follows the Prompt in the following format:
Step-by-step verification: xxx
Final Judgement (if the Output accurately follows the Prompt): (Yes or No)"""

REFINE_REQUEST = """Based on your judgement, refine the Output to make sure it can honestly/precisely/closely follows the given Prompt.


Please carefully refine the Output to meet all the constraints in the Prompt. 

Please format like this:
Reflection on how to refine the Output: xxx
Final Refined Output: [[start]] xxx [[end]]"""  # noqa: W291 (the official text ends a line with a space)

VERDICT_MARKER = "Final Judgement"
START, END = "[[start]]", "[[end]]"


def judge_prompt(instruction: str, response: str) -> str:
    """The user message asking whether `response` follows every constraint of `instruction`."""
    # Plain concatenation, not str.format: instructions and responses are data (braces and all).
    head, rest = JUDGE_TEMPLATE.split("{instruction}", 1)
    mid, tail = rest.split("{response}", 1)
    return head + instruction + mid + response + tail


def judge_messages(instruction: str, response: str) -> list[dict]:
    """The one-turn judgment conversation."""
    return [{"role": "user", "content": judge_prompt(instruction, response)}]


def refine_messages(instruction: str, response: str, critique: str) -> list[dict]:
    """The three-turn refine conversation: judge prompt, the critique, the refine request."""
    return [
        {"role": "user", "content": judge_prompt(instruction, response)},
        {"role": "assistant", "content": critique},
        {"role": "user", "content": REFINE_REQUEST},
    ]


def format_judgement(verification: str, verdict: bool) -> str:
    """A judge output in the requested format (what a perfect judge writes)."""
    answer = "Yes" if verdict else "No"
    return (
        f"Step-by-step verification: {verification}\n"
        f"{VERDICT_MARKER} (if the Output accurately follows the Prompt): {answer}"
    )


def format_refinement(reflection: str, refined: str) -> str:
    """A refine output in the requested format; `parse_refinement` of it is `refined.strip()`."""
    return (
        f"Reflection on how to refine the Output: {reflection}\n"
        f"Final Refined Output: {START} {refined} {END}"
    )


def parse_verdict(text: str | None) -> int:
    """1 if the judgment says Yes, 0 if No, -1 if it gives no verdict (see module doc)."""
    if not text or VERDICT_MARKER not in text:
        return -1
    verdict = text.split(VERDICT_MARKER)[1]
    yes, no = verdict.find("Yes"), verdict.find("No")
    if yes < 0 and no < 0:
        return -1
    if yes < 0:
        return 0
    if no < 0:
        return 1
    return 1 if yes < no else 0


def parse_refinement(text: str | None) -> str | None:
    """The refined response between [[start]] and [[end]], or None (see module doc)."""
    if not text or START not in text:
        return None
    refined = text.split(START)[1].split(END)[0].strip()
    return refined or None
