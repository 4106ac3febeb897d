"""IFEval scoring: strict and loose, prompt- and instruction-level, per instruction type.

    rows = ifeval.load_inputs()                       # the 541 prompts (bundled copy)
    responses = ifeval.read_responses("out.jsonl")    # {"prompt", "response"} rows
    report = ifeval.score(rows, responses)
    report.metrics   # {"prompt_level_strict_acc": ..., "inst_level_loose_acc": ..., ...}
    print(ifeval.format_report(report))

Semantics of the official evaluation (google-research/instruction_following_eval,
`evaluation_lib`; lm-eval's `ifeval` task reports the same four numbers under
the names used here):

* strict: an instruction is followed when the response is not blank and its
  check passes on the response as written;
* loose: when the check passes on any of eight variants that are not blank:
  the response, the response without its first line, without its last line,
  without both (lines split on "\\n", each variant stripped), and those four
  with every `*` removed;
* prompt-level accuracy: the share of prompts whose instructions all pass;
  instruction-level accuracy: the share of all instructions that pass.

Responses are matched to inputs by prompt text, as the official code does
(a later duplicate wins); an input without a response is an error unless
`partial=True`, which scores only the answered prompts and says so.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from spar_jax.errors import MissingFileError, SparError
from spar_jax.eval import ifeval_checks

METRICS = (
    "prompt_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_strict_acc",
    "inst_level_loose_acc",
)
BUNDLED = os.path.join(os.path.dirname(__file__), "data", "ifeval_input_data.jsonl")
HUB_ID = "google/IFEval"


class IFEvalDataError(SparError, ValueError):
    """An IFEval input or responses file we cannot use; the message names the row and the fix."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One IFEval input row: a prompt and the instructions it carries."""

    key: Any
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]  # one dict per instruction; None values dropped


@dataclasses.dataclass(frozen=True)
class Result:
    """The verdicts on one response; `strict[i]` / `loose[i]` belong to instruction i."""

    example: Example
    response: str
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class Report:
    results: list[Result]
    metrics: dict[str, float]  # the four METRICS
    per_type: dict[str, dict[str, float]]  # instruction id -> {"count", "strict", "loose"}
    missing: int = 0  # inputs without a response (only with partial=True)


def _example(record: Mapping, where: str) -> Example:
    try:
        ids, kwargs, prompt = record["instruction_id_list"], record["kwargs"], record["prompt"]
    except (KeyError, TypeError):
        raise IFEvalDataError(
            f"{where}: an IFEval input row needs 'prompt', 'instruction_id_list' and 'kwargs'"
        ) from None
    if len(ids) != len(kwargs):
        raise IFEvalDataError(f"{where}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
    cleaned = []
    for instruction_id, args in zip(ids, kwargs, strict=True):
        if instruction_id not in ifeval_checks.CHECKS:
            raise IFEvalDataError(
                f"{where}: unknown instruction id {instruction_id!r}; known: IFEval's 25 types"
            )
        args = {k: v for k, v in (args or {}).items() if v is not None}
        params = inspect.signature(ifeval_checks.CHECKS[instruction_id]).parameters
        wanted = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
        if set(args) != wanted:
            raise IFEvalDataError(
                f"{where}: {instruction_id} takes kwargs {sorted(wanted)}, got {sorted(args)}"
            )
        cleaned.append(args)
    return Example(record.get("key"), prompt, tuple(ids), tuple(cleaned))


def parse_inputs(records: Iterable[Mapping], source: str = "input") -> list[Example]:
    """IFEval input rows (official JSONL or the `google/IFEval` dataset) -> Examples."""
    return [_example(r, f"{source} row {i + 1}") for i, r in enumerate(records)]


def read_jsonl(path: str, what: str) -> list[dict]:
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: {what} file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise IFEvalDataError(f"{path} line {number}: not JSON") from None
    return rows


def load_inputs(source: str | None = None) -> list[Example]:
    """The IFEval prompts from `source`: a local JSONL path, "google/IFEval" (through
    `datasets`, needs the network or its cache) or None for the copy bundled with
    the package (541 prompts, 834 instructions; Apache-2.0, see data/NOTICE)."""
    if source == HUB_ID:
        import datasets

        return parse_inputs(datasets.load_dataset(HUB_ID, split="train"), HUB_ID)
    path = source or BUNDLED
    return parse_inputs(read_jsonl(path, "IFEval input"), path)


def read_responses(path: str) -> dict[str, str]:
    """prompt -> response from a JSONL file of {"prompt", "response"} rows (official format)."""
    out = {}
    for number, row in enumerate(read_jsonl(path, "responses"), start=1):
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str)):
            raise IFEvalDataError(f"{path} row {number}: needs a string 'prompt'")
        if not isinstance(row.get("response"), str):
            raise IFEvalDataError(f"{path} row {number}: needs a string 'response'")
        out[row["prompt"]] = row["response"]
    return out


def loose_variants(response: str) -> list[str]:
    """The eight texts a loose check tries, in the official order."""
    lines = response.split("\n")
    cuts = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return [cuts[0], cuts[0].replace("*", ""), *cuts[1:], *(c.replace("*", "") for c in cuts[1:])]


def follows(instruction_id: str, kwargs: Mapping, response: str) -> bool:
    """Strict verdict of one instruction on one text (a blank text never passes)."""
    return bool(response.strip()) and ifeval_checks.CHECKS[instruction_id](response, **kwargs)


def evaluate(example: Example, response: str) -> Result:
    """Strict and loose verdicts for every instruction of `example` on `response`."""
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(example.instruction_id_list, example.kwargs, strict=True):
        strict.append(follows(instruction_id, kwargs, response))
        loose.append(any(follows(instruction_id, kwargs, v) for v in variants))
    return Result(example, response, tuple(strict), tuple(loose))


def aggregate(results: Sequence[Result]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The four metrics and the per-instruction-type table of `results`."""
    if not results:
        raise IFEvalDataError("no responses to score")
    n_inst = sum(len(r.strict) for r in results)
    metrics = {
        "prompt_level_strict_acc": sum(all(r.strict) for r in results) / len(results),
        "prompt_level_loose_acc": sum(all(r.loose) for r in results) / len(results),
        "inst_level_strict_acc": sum(sum(r.strict) for r in results) / n_inst,
        "inst_level_loose_acc": sum(sum(r.loose) for r in results) / n_inst,
    }
    counts: dict[str, list[int]] = {}
    for r in results:
        for i, instruction_id in enumerate(r.example.instruction_id_list):
            c = counts.setdefault(instruction_id, [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + r.strict[i], c[2] + r.loose[i]
    per_type = {
        k: {"count": c[0], "strict": c[1] / c[0], "loose": c[2] / c[0]}
        for k, c in sorted(counts.items())
    }
    return metrics, per_type


def score(
    examples: Sequence[Example], responses: Mapping[str, str], *, partial: bool = False
) -> Report:
    """Scores `responses` (prompt -> response) against `examples`.

    Raises IFEvalDataError when an input has no response, unless `partial`."""
    missing = [
        e.key if e.key is not None else e.prompt[:40] for e in examples if e.prompt not in responses
    ]
    if missing and not partial:
        raise IFEvalDataError(
            f"{len(missing)} of {len(examples)} IFEval prompts have no response (first keys: "
            f"{missing[:5]}); answer every prompt or pass --partial to score the answered ones"
        )
    results = [evaluate(e, responses[e.prompt]) for e in examples if e.prompt in responses]
    metrics, per_type = aggregate(results)
    return Report(results, metrics, per_type, len(missing))


def format_report(report: Report) -> str:
    """The four metrics (and their mean) and the per-type table, as plain text."""
    m = report.metrics
    lines = [
        f"IFEval on {len(report.results)} prompts"
        + (f" ({report.missing} unanswered prompts not scored)" if report.missing else ""),
        *(f"  {name:<24} {m[name] * 100:6.2f}" for name in METRICS),
        f"  {'average':<24} {sum(m.values()) / 4 * 100:6.2f}",
        "",
        f"  {'instruction type':<46} {'n':>4} {'strict':>7} {'loose':>7}",
    ]
    for k, row in report.per_type.items():
        lines.append(
            f"  {k:<46} {row['count']:>4} {row['strict'] * 100:7.1f} {row['loose'] * 100:7.1f}"
        )
    return "\n".join(lines)


def to_json(report: Report) -> dict:
    """The metrics under lm-eval's names, the per-type table, and per-prompt verdicts."""
    return {
        **report.metrics,
        "num_prompts": len(report.results),
        "num_missing": report.missing,
        "per_type": report.per_type,
        "prompts": [
            {
                "key": r.example.key,
                "prompt": r.example.prompt,
                "response": r.response,
                "instruction_id_list": list(r.example.instruction_id_list),
                "follow_instruction_list_strict": list(r.strict),
                "follow_instruction_list_loose": list(r.loose),
                "follow_all_instructions_strict": all(r.strict),
                "follow_all_instructions_loose": all(r.loose),
            }
            for r in report.results
        ],
    }
