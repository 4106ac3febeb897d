"""Training data: records -> tokenized examples (`Prepared`) for the DPO/SFT trainers.

```python
from spar_jax.training import data

rows, read = data.load_records("pairs.jsonl")  # see `records`: files, formats, skips
prepared = data.prepare_dpo(rows, tok, max_length=2048, max_prompt_length=1024, report=read)
print(prepared.report.summary())  # used / skipped by reason and place / truncated
for batch in data.batches(prepared, 32, seed=0, epoch=0, start=position):
    ...  # position = batches already consumed this epoch (checkpointed by the trainer)
```

`batches` and the batch contract are in `batching`; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from spar_jax.tokenizer import (
    ChatTemplateError,
    ConversationError,
    Tokenizer,
)
from spar_jax.training.batching import Prepared, batches, epoch_order, num_batches
from spar_jax.training.formats import parse_dpo, parse_sft
from spar_jax.training.records import load_records
from spar_jax.training.skips import REASONS, DataError, RecordError, SkipReport

__all__ = [
    "REASONS",
    "DataError",
    "Prepared",
    "RecordError",
    "SkipReport",
    "batches",
    "epoch_order",
    "load_records",
    "num_batches",
    "prepare_dpo",
    "prepare_sft",
]

# --- Tokenizing and truncating --------------------------------------------------------------


def _check_lengths(max_length: int, max_prompt_length: int | None) -> None:
    if max_length < 2:
        raise ValueError(f"max_length={max_length}; use at least 2 (a prompt and a target)")
    if max_prompt_length is not None and not 1 <= max_prompt_length < max_length:
        raise ValueError(
            f"max_prompt_length={max_prompt_length} with max_length={max_length}; use "
            "1 <= max_prompt_length < max_length (room must remain for the response), or None"
        )


def _truncate(
    prompt: list[int],
    rests: list[tuple[list[int], list[bool]]],
    max_length: int,
    max_prompt_length: int | None,
) -> tuple[list[int], list[tuple[list[int], list[bool]]], bool, bool]:
    """The truncation policy (see `prepare_dpo`) on a shared prompt and its continuations.

    Returns (prompt, rests, prompt was cut, a continuation was cut).
    """
    longest = max(len(t) for t, _ in rests)
    if len(prompt) + longest <= max_length:
        return prompt, rests, False, False
    cut_prompt = max_prompt_length is not None and len(prompt) > max_prompt_length
    if cut_prompt:
        prompt = prompt[-max_prompt_length:]  # keep the end: it holds the generation prompt
    room = max_length - len(prompt)
    if room <= 0:
        raise RecordError(
            "too_long",
            f"the prompt has {len(prompt)} tokens, leaving no room for the response in "
            f"max_length={max_length}; raise max_length or set max_prompt_length",
        )
    cut_rest = longest > room
    rests = [(t[:room], m[:room]) for t, m in rests]
    if not all(any(m) for _, m in rests):
        raise RecordError(
            "too_long",
            f"the first {room} tokens after the prompt hold no target within "
            f"max_length={max_length}; raise max_length or set max_prompt_length",
        )
    return prompt, rests, cut_prompt, cut_rest


def _tokenize(fn: Any, *args: Any) -> tuple[list[int], list[bool]]:
    try:
        return fn(*args)
    except (ConversationError, ChatTemplateError) as e:
        raise RecordError("tokenizer_error", str(e)) from None


def _dpo_example(
    record: Any, tok: Tokenizer, max_length: int, max_prompt_length: int | None
) -> tuple[list[np.ndarray], bool, bool]:
    r = parse_dpo(record, tok.family)
    chosen, c_mask = _tokenize(tok.encode_pair, r.prompt, r.chosen)
    rejected, r_mask = _tokenize(tok.encode_pair, r.prompt, r.rejected)
    n = len(chosen) - sum(c_mask)  # encode_pair: prompt tokens, then response tokens (masked)
    assert n == len(rejected) - sum(r_mask) and chosen[:n] == rejected[:n], "shared prompt"
    if chosen[n:] == rejected[n:]:
        raise RecordError(
            "chosen_equals_rejected", "chosen and rejected have the same response tokens"
        )
    rests = [(chosen[n:], c_mask[n:]), (rejected[n:], r_mask[n:])]
    prompt, rests, cut_p, cut_r = _truncate(chosen[:n], rests, max_length, max_prompt_length)
    if rests[0][0] == rests[1][0]:
        raise RecordError(
            "identical_after_truncation",
            f"chosen and rejected share their first {len(rests[0][0])} response tokens, all "
            "that max_length leaves; raise max_length or max_prompt_length",
        )
    arrays = []
    for t, m in rests:
        arrays.append(np.asarray(prompt + t, np.int32))
        arrays.append(np.asarray([False] * len(prompt) + m, np.bool_))
    return arrays, cut_p, cut_r


def _trained_turns(messages: list[dict[str, Any]], train_on: str) -> None:
    """Raise `RecordError` unless the turns `train_on` and "train" flags select are trainable."""
    last = len(messages) - 1
    trained = []
    for i, m in enumerate(messages):
        default = m["role"] == "assistant" and (train_on == "all" or i == last)
        train = m.get("train", default)
        if train and m["role"] != "assistant":
            raise RecordError(
                "bad_train_flag", f"message {i} ({m['role']}) has train=True; only assistant can"
            )
        if train and not m["content"].strip():
            raise RecordError("empty_response", f"message {i} (assistant, trained) is empty")
        trained.append(train)
    if not any(trained):
        raise RecordError("no_trained_turn", "every assistant message has train=False")


def _sft_example(
    record: Any, tok: Tokenizer, train_on: str, max_length: int, max_prompt_length: int | None
) -> tuple[list[np.ndarray], bool, bool]:
    r = parse_sft(record, tok.family)
    _trained_turns(r.messages, train_on)
    tokens, mask = _tokenize(tok.encode_conversation, r.messages, train_on)
    n = mask.index(True)  # the context before the first trained response is the "prompt"
    rests = [(tokens[n:], mask[n:])]
    prompt, rests, cut_p, cut_r = _truncate(tokens[:n], rests, max_length, max_prompt_length)
    tokens, mask = prompt + rests[0][0], [False] * len(prompt) + rests[0][1]
    mask[0] = False  # nothing predicts the first token (n >= 1 already: a user turn comes first)
    if not any(mask):
        raise RecordError("too_long", "no target token is left after truncation")
    return [np.asarray(tokens, np.int32), np.asarray(mask, np.bool_)], cut_p, cut_r


def _prepare(
    kind: Literal["sft", "dpo"],
    names: tuple[str, ...],
    make: Any,
    records: Iterable[Any],
    tok: Tokenizer,
    max_length: int,
    strict: bool,
    read: SkipReport | None,
) -> Prepared:
    report = SkipReport()
    if read is not None:
        report.add_skips(read)  # unreadable lines of the files, counted while reading
    sequences: dict[str, list[np.ndarray]] = {k: [] for k in names}
    index: list[int] = []
    for i, record in enumerate(records):
        report.total += 1
        try:
            arrays, cut_prompt, cut_response = make(record)
        except RecordError as e:
            if strict:
                raise RecordError(e.reason, e.detail, index=i, at=report.locate(i)) from None
            report.skip(i, e)
            continue
        for k, a in zip(names, arrays, strict=True):
            sequences[k].append(a)
        index.append(i)
        if cut_prompt:
            report.truncate("prompt")
        if cut_response:
            report.truncate("response")
    if not index:
        why = "the input is empty" if not report.num_skipped else f"skipped: {report.reasons()}"
        raise DataError(
            f"prepare_{kind}: none of the {report.total} records is usable ({why}); check that "
            f"the data is in a {kind.upper()} format (see spar_jax.training.records)"
        )
    token_keys = [k for k in names if k.endswith("tokens")]
    lengths = np.max([[len(a) for a in sequences[k]] for k in token_keys], axis=0)
    return Prepared(
        kind=kind,
        sequences=sequences,
        index=np.asarray(index, np.int64),
        lengths=lengths.astype(np.int64),
        pad_id=int(tok.pad_id),
        max_length=max_length,
        report=report,
    )


def prepare_dpo(
    records: Iterable[Any],
    tokenizer: Tokenizer,
    *,
    max_length: int,
    max_prompt_length: int | None = None,
    strict: bool = False,
    report: SkipReport | None = None,
) -> Prepared:
    """Tokenize preference pairs: chosen and rejected each as `encode_pair(prompt, response)`.

    Truncation (TRL's policy): when the prompt plus the longer response exceed `max_length`,
    the prompt is first cut from the left to its last `max_prompt_length` tokens (its end holds
    the generation prompt; the start, BOS included, is what goes), if `max_prompt_length` is
    set; then both responses are cut from the right to the room left, `max_length - prompt`
    (a cut response loses its end-of-turn token, so the model is not taught to stop there).
    A pair with no room left for a response is skipped as 'too_long'; one whose responses
    become identical is skipped as 'identical_after_truncation'. Every row is then at most
    `max_length` tokens; `report.truncated` counts pairs cut in the prompt / response.

    Args:
      records: mappings in a DPO format of `formats` (`load_records`' rows, a `datasets.Dataset`).
      tokenizer: the chat tokenizer; its family decides the allowed roles.
      max_length: the most tokens of prompt + response per sequence.
      max_prompt_length: prompts longer than this are cut from the left when a pair is too
        long; None never cuts the prompt.
      strict: raise `RecordError` naming the record index at the first bad record, instead of
        skipping and counting it in `report`.
      report: `load_records`' report; its skips (unreadable lines) are carried into the
        result's report, so that one summary covers the file and its records.

    Returns:
      `Prepared` with kind 'dpo'. Raises `DataError` when no record is usable.
    """
    _check_lengths(max_length, max_prompt_length)
    names = ("chosen_tokens", "chosen_loss_mask", "rejected_tokens", "rejected_loss_mask")

    def make(record: Any) -> tuple[list[np.ndarray], bool, bool]:
        return _dpo_example(record, tokenizer, max_length, max_prompt_length)

    return _prepare("dpo", names, make, records, tokenizer, max_length, strict, report)


def prepare_sft(
    records: Iterable[Any],
    tokenizer: Tokenizer,
    *,
    max_length: int,
    train_on: Literal["all", "last"] = "all",
    max_prompt_length: int | None = None,
    strict: bool = False,
    report: SkipReport | None = None,
) -> Prepared:
    """Tokenize conversations with `encode_conversation`; the loss is on trained assistant turns.

    Truncation, as in `prepare_dpo` with the "prompt" being every token before the first
    trained response: when a conversation exceeds `max_length`, that context is cut from the
    left to `max_prompt_length` tokens (if set), then the sequence is cut from the right to
    `max_length`. A conversation left with no target token is skipped as 'too_long'.

    Args:
      records: mappings in an SFT format of `formats` ("messages" ending with an assistant
        turn, sharegpt, alpaca, or TRL's "prompt"/"completion").
      tokenizer: the chat tokenizer.
      max_length: the most tokens per sequence.
      train_on: 'all' trains every assistant turn, 'last' only the final one; a message's own
        "train": true/false overrides this.
      max_prompt_length: as in `prepare_dpo`.
      strict: raise at the first bad record instead of skipping it.
      report: as in `prepare_dpo`.

    Returns:
      `Prepared` with kind 'sft'. Raises `DataError` when no record is usable.
    """
    _check_lengths(max_length, max_prompt_length)
    if train_on not in ("all", "last"):
        raise ValueError(f"prepare_sft: train_on={train_on!r}; use 'all' or 'last'")

    def make(record: Any) -> tuple[list[np.ndarray], bool, bool]:
        return _sft_example(record, tokenizer, train_on, max_length, max_prompt_length)

    names = ("tokens", "loss_mask")
    return _prepare("sft", names, make, records, tokenizer, max_length, strict, report)
