"""Padding token sequences and loss masks into rectangular numpy batches.

Left padding for generation (every prompt ends at the last column, where decoding
starts), right padding for training (sequences start at column 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np


def _pad(
    seqs: Sequence[Sequence[int | bool]],
    value: int | bool,
    dtype: type,
    side: str,
    length: int | None,
    multiple_of: int | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    if side not in ("left", "right"):
        raise ValueError(f"{what}: side={side!r}; use 'left' (generation) or 'right' (training)")
    if multiple_of is not None and multiple_of < 1:
        raise ValueError(f"{what}: multiple_of={multiple_of}; use a positive int or None")
    lens = [len(s) for s in seqs]
    longest = max(lens, default=0)
    if length is None:
        length = longest
    elif longest > length:
        i = lens.index(longest)
        raise ValueError(
            f"{what}: sequence {i} has {longest} tokens but length={length}; "
            "raise length or truncate the sequences first"
        )
    if multiple_of is not None:
        length = math.ceil(length / multiple_of) * multiple_of
    out = np.full((len(seqs), length), value, dtype=dtype)
    mask = np.zeros((len(seqs), length), dtype=bool)
    for b, s in enumerate(seqs):
        if not len(s):
            continue
        cols = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        out[b, cols] = np.asarray(s, dtype=dtype)
        mask[b, cols] = True
    return out, mask


def pad_batch(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    length: int | None = None,
    multiple_of: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad token sequences to one length.

    Args:
      seqs: B token-id sequences, of any lengths.
      pad_id: the id written in padding positions.
      side: 'left' puts padding before the tokens (generation), 'right' after (training).
      length: the padded length T; None uses the longest sequence. Longer sequences raise.
      multiple_of: round T up to a multiple of this (fewer distinct shapes to compile).

    Returns:
      tokens: int32 [B, T]; mask: bool [B, T], True on real tokens.
    """
    return _pad(seqs, pad_id, np.int32, side, length, multiple_of, "pad_batch")


def pad_loss_masks(
    loss_masks: Sequence[Sequence[bool]],
    side: Literal["left", "right"] = "right",
    length: int | None = None,
    multiple_of: int | None = None,
) -> np.ndarray:
    """Pad loss masks [B][L_b] exactly as `pad_batch` pads their tokens.

    Returns:
      bool [B, T], False in padding.
    """
    return _pad(loss_masks, False, np.bool_, side, length, multiple_of, "pad_loss_masks")[0]
