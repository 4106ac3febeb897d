"""Batching prepared examples: padded numpy batches, the same on every process.

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
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from spar_jax.tokenizer import pad_batch, pad_loss_masks
from spar_jax.training.skips import SkipReport

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


# --- Batches -------------------------------------------------------------------------------


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
