"""Training records: loading them with `datasets`, reading their formats, counting skips.

Formats read (one record = one mapping; a field set to None counts as absent, since Arrow
fills the columns of other formats with nulls when files are merged):

* DPO, SPaR / LLaMA-Factory: ``{"messages": [{"role": "user", "content": ...}, ...],
  "chosen": {"role": "assistant", "content": ...}, "rejected": {...}}`` (chosen/rejected may
  also be plain strings).
* DPO, TRL standard: ``{"prompt": str, "chosen": str, "rejected": str}``.
* DPO, TRL conversational: ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}],
  "rejected": [...]}``; also TRL's implicit prompt, ``{"chosen": [messages..., assistant],
  "rejected": [messages..., assistant]}`` with the same messages before the last one.
* SFT: ``{"messages": [...]}`` ending with an assistant turn (messages may carry "train": bool),
  or TRL's ``{"prompt", "completion"}`` (strings, or message lists).

Every format becomes a `DPORecord` / `SFTRecord`; a record that cannot is a `RecordError`
with a short reason key (see `REASONS`), which `prepare_*` counts in a `SkipReport`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spar_jax.tokenizer import FAMILIES

# Reason keys, each with what it means (shown by `SkipReport.summary`).
REASONS = {
    "not_a_mapping": "the record is not a dict",
    "missing_field": "a field the format needs is absent or null",
    "ambiguous_format": "the record has the fields of two formats",
    "wrong_type": "a field has the wrong type",
    "unknown_role": "a message role the chat family does not have",
    "bad_turn_order": "the prompt does not end with a user turn, or a response is not assistant",
    "empty_prompt": "the last user message is empty",
    "empty_response": "a trained response is empty",
    "chosen_equals_rejected": "chosen and rejected tokenise identically",
    "no_trained_turn": "no assistant turn is selected for training",
    "bad_train_flag": "a message that is not an assistant turn has train=True",
    "tokenizer_error": "the tokenizer rejected the conversation",
    "too_long": "truncation to max_length would remove the whole response",
    "identical_after_truncation": "chosen and rejected are identical once truncated",
}
_MAX_INDICES = 5  # record indices kept per reason


class DataError(ValueError):
    """Training data that cannot be loaded or used; the message names the input and the fix."""


class RecordError(DataError):
    """One malformed record: `reason` is a key of `REASONS`, `detail` says what is wrong.

    `index` is the record's position in the input once known (raised by `strict=True`).
    """

    def __init__(self, reason: str, detail: str, index: int | None = None):
        assert reason in REASONS, reason
        where = "" if index is None else f"record {index}: "
        fix = "" if index is None else "; fix or drop the record, or pass strict=False to skip it"
        super().__init__(f"{where}{reason}: {detail}{fix}")
        self.reason = reason
        self.detail = detail
        self.index = index


@dataclasses.dataclass
class SkipReport:
    """What `prepare_*` did with each record: skipped (by reason) or truncated.

    Attributes:
      total: records read.
      skipped: reason -> number of records skipped for it.
      indices: reason -> the first few record indices skipped for it.
      details: reason -> the detail message of the first record skipped for it.
      truncated: 'prompt' / 'response' -> number of kept examples cut there.
    """

    total: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    indices: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    details: dict[str, str] = dataclasses.field(default_factory=dict)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, index: int, error: RecordError) -> None:
        r = error.reason
        self.skipped[r] = self.skipped.get(r, 0) + 1
        self.details.setdefault(r, error.detail)
        idx = self.indices.setdefault(r, [])
        if len(idx) < _MAX_INDICES:
            idx.append(index)

    def truncate(self, where: str) -> None:
        self.truncated[where] = self.truncated.get(where, 0) + 1

    def reasons(self) -> str:
        """One line: each skip reason with its count and first record, most frequent first."""
        return "; ".join(
            f"{r}: {n} (e.g. record {self.indices[r][0]}: {self.details[r]})"
            for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])
        )

    def summary(self) -> str:
        """A few log lines: counts, then one line per skip reason with example indices."""
        used = self.total - self.num_skipped
        cut = ", ".join(f"{n} in the {w}" for w, n in sorted(self.truncated.items()))
        lines = [
            f"{used}/{self.total} records used, {self.num_skipped} skipped"
            + (f"; truncated: {cut}" if cut else "")
        ]
        for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"  {r} ({REASONS[r]}): {n}, e.g. records {self.indices[r]}: {self.details[r]}"
            )
        return "\n".join(lines)


# --- Loading --------------------------------------------------------------------------------

_LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _loader(path: str) -> str | None:
    name = path.lower()
    for c in _COMPRESSION:
        name = name.removesuffix(c)
    return _LOADERS.get(Path(name).suffix)


def _offline() -> bool:
    import datasets

    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags) or bool(
        datasets.config.HF_HUB_OFFLINE
    )


def _expand(source: str) -> list[str]:
    """The data files named by a path, a glob, or a directory of data files."""
    s = os.path.expanduser(source)
    if glob.has_magic(s):
        files = sorted(f for f in glob.glob(s, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"no file matches the pattern {source!r}; check the glob")
        return files
    if os.path.isdir(s):
        files = sorted(str(f) for f in Path(s).iterdir() if f.is_file() and _loader(f.name))
        if not files:
            raise DataError(
                f"directory {source} is neither a saved dataset (save_to_disk) nor holds "
                f"{'/'.join(_LOADERS)} files; pass a data file, a glob or a saved dataset"
            )
        return files
    if not os.path.exists(s):
        raise FileNotFoundError(f"data file {source} does not exist; check the path")
    return [s]


def load_records(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str = "train",
    cache_dir: str | None = None,
) -> Any:
    """Load training records as a `datasets.Dataset`.

    Args:
      source: a JSON / JSONL / Parquet file (optionally compressed, e.g. `.jsonl.gz`), a glob
        of them, a directory of them, a list of such paths/globs, a directory written by
        `save_to_disk` (read with `load_from_disk`), or a hub dataset id (needs network).
      split: the split of a saved `DatasetDict` or a hub dataset; data files are one split.
      cache_dir: where `datasets` keeps its Arrow cache for data files (its default if None).

    Returns:
      a `datasets.Dataset`, one row per record (iterate it, or pass it to `prepare_*`).
    """
    import datasets

    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        p = Path(os.path.expanduser(s))
        if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
            return _load_saved(p, split)
        if not p.exists() and not glob.has_magic(s):
            if _loader(s) is None and _HUB_ID.fullmatch(s) and not s.startswith("."):
                return _load_hub(s, split, cache_dir)
            raise FileNotFoundError(f"data file {s} does not exist; check the path")
        sources = [s]
    else:
        sources = [os.fspath(x) for x in source]
        if not sources:
            raise DataError("load_records: the list of sources is empty; pass at least one path")
    files = [f for s in sources for f in _expand(s)]
    kinds = {}
    for f in files:
        kind = _loader(f)
        if kind is None:
            raise DataError(
                f"data file {f} has an unknown extension; use one of "
                f"{', '.join(_LOADERS)} (optionally compressed: {', '.join(_COMPRESSION)})"
            )
        kinds.setdefault(kind, f)
    if len(kinds) > 1:
        raise DataError(
            f"cannot load JSON and Parquet files together ({kinds['json']}, {kinds['parquet']}); "
            "convert them to one format or load them separately"
        )
    try:
        return datasets.load_dataset(
            kinds.popitem()[0], data_files=files, split="train", cache_dir=cache_dir
        )
    except Exception as e:  # datasets / pyarrow raise many types for unreadable files
        raise DataError(
            f"cannot read {files[0] if len(files) == 1 else f'{len(files)} files from {files[0]}'}"
            f" ({type(e).__name__}: {str(e)[:300]}); check that it is valid JSON lines, JSON "
            "or Parquet with one record per row"
        ) from None


def _load_saved(path: Path, split: str) -> Any:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"saved dataset {path} has no split {split!r}; pass split= one of {sorted(ds)}"
            )
        ds = ds[split]
    return ds


def _load_hub(name: str, split: str, cache_dir: str | None) -> Any:
    import datasets

    if _offline():
        raise FileNotFoundError(
            f"{name} is not a local file, glob or directory, and the Hugging Face hub is "
            "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); pass a local path, or go online "
            "to load it as a hub dataset"
        )
    try:
        return datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except Exception as e:
        raise DataError(
            f"{name} is not a local path and loading it from the hub failed "
            f"({type(e).__name__}: {str(e)[:300]}); check the path or the dataset id"
        ) from None


# --- Reading the formats --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DPORecord:
    """A preference pair: the prompt conversation (ends with a user turn) and two responses."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    """A conversation ending with an assistant turn; messages may carry "train": bool."""

    messages: list[dict[str, Any]]


def _get(record: Mapping[str, Any], key: str) -> Any:
    """The field, None if absent (Arrow writes null for the columns of other formats)."""
    return record.get(key)


def _messages(value: Any, roles: tuple[str, ...], field: str) -> list[dict[str, Any]]:
    """Validate a message list; keep role, content and a bool "train" (nulls dropped)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise RecordError(
            "wrong_type", f"{field!r} must be a list of messages, got {type(value).__name__}"
        )
    if not value:
        raise RecordError("missing_field", f"{field!r} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise RecordError("wrong_type", f"{field}[{i}] must be a dict, got {type(m).__name__}")
        role, content, train = m.get("role"), m.get("content"), m.get("train")
        if role is None or content is None:
            missing = "role" if role is None else "content"
            raise RecordError("missing_field", f"{field}[{i}] has no {missing!r}")
        if not isinstance(role, str) or not isinstance(content, str):
            bad = "role" if not isinstance(role, str) else "content"
            raise RecordError(
                "wrong_type",
                f"{field}[{i}].{bad} must be a string, got {type(m[bad]).__name__}",
            )
        if role not in roles:
            raise RecordError(
                "unknown_role", f"{field}[{i}] has role {role!r}; use one of {list(roles)}"
            )
        if train is not None and not isinstance(train, bool):
            raise RecordError("wrong_type", f"{field}[{i}].train must be a bool, got {train!r}")
        msg = {"role": role, "content": content}
        if train is not None:
            msg["train"] = train
        out.append(msg)
    return out


def _prompt(
    value: Any, roles: tuple[str, ...], prompt_roles: tuple[str, ...], field: str
) -> list[dict[str, Any]]:
    """A prompt (a string, or messages ending with a user turn) as a message list."""
    if isinstance(value, str):
        msgs = [{"role": "user", "content": value}]
    else:
        msgs = _messages(value, roles, field)
    if msgs[-1]["role"] not in prompt_roles:
        raise RecordError(
            "bad_turn_order",
            f"{field!r} must end with a {'/'.join(prompt_roles)} turn, not {msgs[-1]['role']!r}",
        )
    if not msgs[-1]["content"].strip():
        raise RecordError("empty_prompt", f"the last message of {field!r} is empty")
    return [{k: v for k, v in m.items() if k != "train"} for m in msgs]


def _response(value: Any, roles: tuple[str, ...], field: str) -> str:
    """A response: a string, an assistant message, or a list holding one assistant message."""
    if isinstance(value, str):
        text = value
    else:
        if isinstance(value, Mapping):
            value = [value]
        msgs = _messages(value, roles, field)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise RecordError(
                "bad_turn_order",
                f"{field!r} must be one assistant message, got roles {[m['role'] for m in msgs]}",
            )
        text = msgs[0]["content"]
    if not text.strip():
        raise RecordError("empty_response", f"{field!r} is empty")
    return text


def _family_roles(family: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fam = FAMILIES[family]
    return fam.roles, fam.prompt_roles


def _need(record: Any, *fields: str) -> None:
    if not isinstance(record, Mapping):
        raise RecordError("not_a_mapping", f"got {type(record).__name__}")
    missing = [f for f in fields if _get(record, f) is None]
    if missing:
        raise RecordError(
            "missing_field", f"no {' / '.join(map(repr, missing))} (fields: {sorted(record)})"
        )


def parse_dpo(record: Any, family: str) -> DPORecord:
    """Read one DPO record in any supported format, or raise `RecordError`."""
    roles, prompt_roles = _family_roles(family)
    _need(record, "chosen", "rejected")
    has_messages, has_prompt = (
        _get(record, "messages") is not None,
        _get(record, "prompt") is not None,
    )
    if has_messages and has_prompt:
        raise RecordError("ambiguous_format", "both 'messages' and 'prompt' are set; keep one")
    chosen, rejected = record["chosen"], record["rejected"]
    if has_messages or has_prompt:
        field = "messages" if has_messages else "prompt"
        prompt = _prompt(record[field], roles, prompt_roles, field)
    else:  # TRL implicit prompt: two full conversations that differ in the last turn
        if not all(isinstance(x, list) for x in (chosen, rejected)):
            raise RecordError(
                "missing_field", f"no 'messages' / 'prompt' (fields: {sorted(record)})"
            )
        c = _messages(chosen, roles, "chosen")
        r = _messages(rejected, roles, "rejected")
        if len(c) < 2 or c[:-1] != r[:-1]:
            raise RecordError(
                "missing_field",
                "no 'messages' / 'prompt', and 'chosen' and 'rejected' are not two "
                "conversations sharing their prompt (TRL's implicit-prompt format)",
            )
        prompt = _prompt(c[:-1], roles, prompt_roles, "chosen[:-1]")
        chosen, rejected = c[-1:], r[-1:]
    return DPORecord(
        prompt=prompt,
        chosen=_response(chosen, roles, "chosen"),
        rejected=_response(rejected, roles, "rejected"),
    )


def parse_sft(record: Any, family: str) -> SFTRecord:
    """Read one SFT record (messages, or TRL prompt/completion), or raise `RecordError`."""
    roles, prompt_roles = _family_roles(family)
    if not isinstance(record, Mapping):
        raise RecordError("not_a_mapping", f"got {type(record).__name__}")
    if _get(record, "messages") is not None:
        if _get(record, "completion") is not None:
            raise RecordError("ambiguous_format", "both 'messages' and 'completion' are set")
        msgs = _messages(record["messages"], roles, "messages")
        if msgs[-1]["role"] != "assistant":
            raise RecordError(
                "bad_turn_order",
                f"'messages' must end with an assistant turn, not {msgs[-1]['role']!r}",
            )
    else:
        _need(record, "prompt", "completion")
        prompt = _prompt(record["prompt"], roles, prompt_roles, "prompt")
        completion = _response(record["completion"], roles, "completion")
        msgs = [*prompt, {"role": "assistant", "content": completion}]
    return SFTRecord(messages=msgs)
