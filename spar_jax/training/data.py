"""Training data: records -> tokenized examples -> padded numpy batches for the DPO/SFT trainers.

```python
from spar_jax.training import data

records = data.load_records("pairs.jsonl")  # JSON/JSONL/Parquet, glob, saved dataset, hub id
prepared = data.prepare_dpo(records, tok, max_length=2048, max_prompt_length=1024)
print(prepared.report.summary())  # used / skipped by reason / truncated
for batch in data.batches(prepared, 32, seed=0, epoch=0, start=position):
    ...  # position = batches already consumed this epoch (checkpointed by the trainer)
```

Batch contract (numpy, right-padded; B = batch_size // process_count rows on each process):

* SFT:
  * ``tokens``: int32 ``[B, T]``, ``pad_id`` in padding.
  * ``mask``: bool ``[B, T]``, True on real tokens.
  * ``loss_mask``: bool ``[B, T]``, True where ``tokens[:, t]`` is a target, scored from the
    model output at ``t - 1``; so ``loss_mask[:, 0]`` is always False. True exactly on the
    trained assistant responses and the end-of-turn token that closes each.
  * ``weight``: float32 ``[B]``, 1 for a real row, 0 for a padding row.
  * ``index``: int64 ``[B]``, the record's position in the input, -1 for a padding row.
* DPO: ``chosen_tokens``, ``chosen_mask``, ``chosen_loss_mask``, ``rejected_tokens``,
  ``rejected_mask``, ``rejected_loss_mask`` (each ``[B, T]`` as above, chosen and rejected
  padded to the same T; the loss mask is on the response only, never the prompt), plus
  ``weight`` ``[B]`` and ``index`` ``[B]``.

T is the longest row of the *global* batch rounded up to ``pad_to_multiple`` (or a fixed
``length``), so every process gets the same shape and there are few shapes to compile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from spar_jax.tokenizer import (
    ChatTemplateError,
    ConversationError,
    Tokenizer,
    pad_batch,
    pad_loss_masks,
)
from spar_jax.training.records import (
    REASONS,
    DataError,
    RecordError,
    SkipReport,
    load_records,
    parse_dpo,
    parse_sft,
)

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

_PREFIXES = {"sft": ("",), "dpo": ("chosen_", "rejected_")}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Tokenized examples, ragged (one numpy array per example), ready for `batches`.

    Attributes:
      kind: 'sft' or 'dpo'.
      sequences: for 'sft' {"tokens", "loss_mask"}; for 'dpo' {"chosen_tokens",
        "chosen_loss_mask", "rejected_tokens", "rejected_loss_mask"}: N arrays each, the
        i-th of length L_i (tokens int32, loss masks bool).
      index: int64 [N], each example's record index in the input.
      lengths: int64 [N], each example's row length (DPO: the longer of chosen and rejected).
      pad_id: the token written in padding.
      max_length: the truncation length used.
      report: records skipped (by reason) and truncated.
    """

    kind: Literal["sft", "dpo"]
    sequences: dict[str, list[np.ndarray]]
    index: np.ndarray
    lengths: np.ndarray
    pad_id: int
    max_length: int
    report: SkipReport

    @property
    def num_examples(self) -> int:
        """N, the number of records used."""
        return len(self.index)

    def __len__(self) -> int:
        return self.num_examples


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
) -> Prepared:
    report = SkipReport()
    sequences: dict[str, list[np.ndarray]] = {k: [] for k in names}
    index: list[int] = []
    for i, record in enumerate(records):
        report.total += 1
        try:
            arrays, cut_prompt, cut_response = make(record)
        except RecordError as e:
            if strict:
                raise RecordError(e.reason, e.detail, index=i) from None
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
        why = "the input is empty" if not report.total else f"skipped: {report.reasons()}"
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
      records: mappings in a DPO format of `records` (a `datasets.Dataset`, a list of dicts).
      tokenizer: the chat tokenizer; its family decides the allowed roles.
      max_length: the most tokens of prompt + response per sequence.
      max_prompt_length: prompts longer than this are cut from the left when a pair is too
        long; None never cuts the prompt.
      strict: raise `RecordError` naming the record index at the first bad record, instead of
        skipping and counting it in `report`.

    Returns:
      `Prepared` with kind 'dpo'. Raises `DataError` when no record is usable.
    """
    _check_lengths(max_length, max_prompt_length)
    names = ("chosen_tokens", "chosen_loss_mask", "rejected_tokens", "rejected_loss_mask")

    def make(record: Any) -> tuple[list[np.ndarray], bool, bool]:
        return _dpo_example(record, tokenizer, max_length, max_prompt_length)

    return _prepare("dpo", names, make, records, tokenizer, max_length, strict)


def prepare_sft(
    records: Iterable[Any],
    tokenizer: Tokenizer,
    *,
    max_length: int,
    train_on: Literal["all", "last"] = "all",
    max_prompt_length: int | None = None,
    strict: bool = False,
) -> Prepared:
    """Tokenize conversations with `encode_conversation`; the loss is on trained assistant turns.

    Truncation, as in `prepare_dpo` with the "prompt" being every token before the first
    trained response: when a conversation exceeds `max_length`, that context is cut from the
    left to `max_prompt_length` tokens (if set), then the sequence is cut from the right to
    `max_length`. A conversation left with no target token is skipped as 'too_long'.

    Args:
      records: mappings with "messages" (ending with an assistant turn), or TRL's
        "prompt"/"completion".
      tokenizer: the chat tokenizer.
      max_length: the most tokens per sequence.
      train_on: 'all' trains every assistant turn, 'last' only the final one; a message's own
        "train": true/false overrides this.
      max_prompt_length: as in `prepare_dpo`.
      strict: raise at the first bad record instead of skipping it.

    Returns:
      `Prepared` with kind 'sft'. Raises `DataError` when no record is usable.
    """
    _check_lengths(max_length, max_prompt_length)
    if train_on not in ("all", "last"):
        raise ValueError(f"prepare_sft: train_on={train_on!r}; use 'all' or 'last'")

    def make(record: Any) -> tuple[list[np.ndarray], bool, bool]:
        return _sft_example(record, tokenizer, train_on, max_length, max_prompt_length)

    return _prepare("sft", ("tokens", "loss_mask"), make, records, tokenizer, max_length, strict)


# --- Batching -------------------------------------------------------------------------------


def num_batches(prepared: Prepared | int, batch_size: int) -> int:
    """Batches per epoch: ceil(N / batch_size) (the last one is padded, never dropped)."""
    n = prepared if isinstance(prepared, int) else prepared.num_examples
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use a positive int")
    return math.ceil(n / batch_size)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """int64 [n]: the example order of one epoch, a permutation fixed by (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def _collate(prepared: Prepared, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """The batch of example rows [B] (-1 = padding row), every sequence padded to `length`."""
    real = rows >= 0
    batch: dict[str, np.ndarray] = {}
    for p in _PREFIXES[prepared.kind]:
        seqs: Sequence[Any] = prepared.sequences[p + "tokens"]
        masks: Sequence[Any] = prepared.sequences[p + "loss_mask"]
        empty = np.zeros(0, np.int32)
        tokens, mask = pad_batch(
            [seqs[r] if r >= 0 else empty for r in rows], prepared.pad_id, "right", length
        )
        batch[p + "tokens"] = tokens
        batch[p + "mask"] = mask
        batch[p + "loss_mask"] = pad_loss_masks(
            [masks[r] if r >= 0 else empty.astype(bool) for r in rows], "right", length
        )
    batch["weight"] = real.astype(np.float32)
    batch["index"] = np.where(real, prepared.index[np.maximum(rows, 0)], -1).astype(np.int64)
    return batch


def batches(
    prepared: Prepared,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    start: int = 0,
    shuffle: bool = True,
    pad_to_multiple: int | None = 8,
    length: int | None = None,
    data_parallel: int = 1,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's share of each global batch of one epoch (see the module docstring).

    Batch k holds the examples `epoch_order(...)[k * batch_size : (k + 1) * batch_size]`;
    the final partial batch is completed with padding rows (weight 0, index -1). So batches
    depend on (seed, epoch) only, and `start=k` resumes after the k batches already consumed.
    Process i gets the contiguous rows [i * B, (i + 1) * B) of the global batch, B =
    batch_size // process_count: the layout `jax.make_array_from_process_local_data`
    assembles for a mesh whose data axis runs over processes in order.

    Args:
      prepared: from `prepare_sft` / `prepare_dpo`.
      batch_size: the global batch size (rows over all processes).
      seed, epoch: fix the shuffle.
      start: batches of this epoch already consumed (the trainer's data position).
      shuffle: False keeps the input order.
      pad_to_multiple: round T up to a multiple of this (None or 1: the longest row).
      length: a fixed T instead (must fit the longest example).
      data_parallel: data-parallel shards of the global batch; batch_size must divide by it.
      process_index, process_count: this process and the number of processes.

    Yields:
      dicts of numpy arrays with B rows, in the batch contract's layout.
    """
    if batch_size < 1 or batch_size % data_parallel or batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} must be positive and divide by data_parallel="
            f"{data_parallel} and process_count={process_count}; change the batch size"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} with process_count={process_count}")
    total = num_batches(prepared, batch_size)
    if not 0 <= start <= total:
        raise ValueError(f"start={start}, but an epoch has {total} batches; use 0..{total}")
    longest = int(prepared.lengths.max())
    if length is not None and length < longest:
        raise ValueError(
            f"length={length} but the longest example has {longest} tokens; use length >= "
            f"{longest} (e.g. max_length={prepared.max_length}) or length=None"
        )
    multiple = pad_to_multiple or 1
    order = epoch_order(prepared.num_examples, seed=seed, epoch=epoch, shuffle=shuffle)
    local = batch_size // process_count
    lo = process_index * local

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for k in range(start, total):
            rows = order[k * batch_size : (k + 1) * batch_size]
            # T from the global batch, so that every process gets the same shape.
            t = length or math.ceil(int(prepared.lengths[rows].max()) / multiple) * multiple
            rows = np.pad(rows, (0, batch_size - len(rows)), constant_values=-1)
            yield _collate(prepared, rows[lo : lo + local], t)

    return generate()
