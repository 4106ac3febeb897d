"""The one reader of record files for every command: trainers, sampling, self-play, evaluation.

```python
from spar_jax.training import records

rows, report = records.load_records("pairs.jsonl")  # list of dicts + what was skipped
prompts, report = records.load_prompts("prompts.jsonl")  # list of PromptRecord
print(report.summary())
```

Sources: JSON lines, JSON arrays, Parquet (optionally compressed), globs and directories of
them, lists of those, directories written by `save_to_disk`, hub dataset ids and
`hf://datasets/...` paths (`files` says which reader takes which). A JSON-lines line that is not
JSON, a last line cut short by a killed writer, and a row that is not an object are skipped and
counted with their file and line (`strict=True` raises naming them instead); the rest of the
file is read.

Record formats (DPO, SFT and prompts; the project's `messages`, TRL's, and LLaMA-Factory's
sharegpt and alpaca layouts, which the official SPaR release uses) are in `formats` and
`layouts`; `prepare_dpo` / `prepare_sft` in `data` read them, `load_prompts` here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from spar_jax.training.files import read_rows
from spar_jax.training.formats import (
    DPORecord,
    PromptRecord,
    SFTRecord,
    parse_dpo,
    parse_prompt,
    parse_sft,
)
from spar_jax.training.skips import REASONS, DataError, RecordError, SkipReport

__all__ = [
    "REASONS",
    "DPORecord",
    "DataError",
    "PromptRecord",
    "RecordError",
    "SFTRecord",
    "SkipReport",
    "load_prompts",
    "load_records",
    "parse_dpo",
    "parse_prompt",
    "parse_sft",
]

Source = str | os.PathLike | Sequence[str | os.PathLike]


def _sources(source: Source) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    sources = [os.fspath(x) for x in source]
    if not sources:
        raise DataError("load_records: the list of sources is empty; pass at least one path")
    return sources


def load_records(
    source: Source,
    *,
    strict: bool = False,
    split: str = "train",
    cache_dir: str | None = None,
) -> tuple[list[dict[str, Any]], SkipReport]:
    """Read every record of a data source, skipping (and counting) entries that are no record.

    Args:
      source: a JSON / JSONL / Parquet file (optionally compressed, e.g. `.jsonl.gz`), a glob
        of them, a directory of them, a list of such paths/globs, a directory written by
        `save_to_disk`, a hub dataset id or an `hf://datasets/OWNER/NAME/FILE` path (network).
      strict: raise `RecordError` naming the file and line of the first unreadable entry,
        instead of skipping it.
      split: the split of a saved `DatasetDict` or a hub dataset; data files are one split.
      cache_dir: where `datasets` keeps its Arrow cache (Parquet, hub ids); its default if None.

    Returns:
      (rows, report): the records in order, one dict each (their record indices are their
      positions here), and a `SkipReport` with `total = len(rows)` and the unreadable entries
      (reasons `not_json`, `truncated_line`, `not_an_object`, located as "FILE line N").
      Pass the report to `data.prepare_*(..., report=)` to carry the skips into training's.
    """
    return read_rows(_sources(source), strict=strict, split=split, cache_dir=cache_dir)


def load_prompts(
    source: Source,
    *,
    strict: bool = False,
    split: str = "train",
    cache_dir: str | None = None,
) -> tuple[list[PromptRecord], SkipReport]:
    """Read the prompts of a data source: rows with `prompt` (and optional `prompt_id`).

    Also accepted as a prompt: alpaca's `instruction` (+ `input`), and the first user turn of
    `messages` / sharegpt `conversations` rows, so SFT and DPO files (the official SPaR data
    among them) are prompt files too. A prompt without `prompt_id` takes its record index.

    Args:
      source, split, cache_dir: as in `load_records`.
      strict: raise at the first unreadable entry or record with no usable prompt, naming it.

    Returns:
      (prompts, report): `PromptRecord`s in order, and a `SkipReport` counting both unreadable
      entries and records without a prompt (`missing_field`, `empty_prompt`, ...).
    """
    rows, report = load_records(source, strict=strict, split=split, cache_dir=cache_dir)
    prompts = []
    for i, row in enumerate(rows):
        try:
            prompts.append(parse_prompt(row, i))
        except RecordError as e:
            if strict:
                raise RecordError(e.reason, e.detail, index=i, at=report.locate(i)) from None
            report.skip(i, e)
    return prompts, report
