"""What reading data did with each entry: the error classes and the `SkipReport` that counts skips.

Two levels of skip share one report:

* reading a file: an entry that is not a record at all (a JSON-lines line that is not JSON, a
  last line cut short by a killed writer, a row that is not an object), located by file and line;
* reading a record: a record in no known format, or one the tokenizer or the length limits
  reject, located by its record index (its position among the records read).
"""

from __future__ import annotations

import bisect
import dataclasses

from spar_jax.errors import SparError

# Reasons an entry of a file is not read as a record (located as "FILE line N" / "FILE row N").
READ_REASONS = {
    "not_json": "a line of a JSON-lines file is not valid JSON",
    "truncated_line": "the last line is cut short (no newline, not valid JSON): a killed writer",
    "not_an_object": "a line or row is valid JSON but not an object",
}
# Reasons a record is skipped (located by record index).
RECORD_REASONS = {
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
REASONS = {**READ_REASONS, **RECORD_REASONS}
_MAX_EXAMPLES = 5  # locations kept per reason


class DataError(SparError, ValueError):
    """Data that cannot be loaded or used; the message names the input and the fix."""


class RecordError(DataError):
    """One malformed record: `reason` is a key of `REASONS`, `detail` says what is wrong.

    `where` locates it once known: a record index, or "FILE line N" for an unreadable line
    (raised with it under `strict=True`).
    """

    def __init__(
        self, reason: str, detail: str, index: int | str | None = None, at: str | None = None
    ):
        assert reason in REASONS, reason
        if index is None:
            where, fix = "", ""
        else:
            where = f"record {index}" if isinstance(index, int) else f"{index}"
            where += f" ({at}): " if at else ": "
            what = "record" if isinstance(index, int) else "line"
            fix = f"; fix or drop the {what}, or pass strict=False to skip it"
        super().__init__(f"{where}{reason}: {detail}{fix}")
        self.reason = reason
        self.detail = detail
        self.index = index


@dataclasses.dataclass
class SkipReport:
    """Entries skipped (by reason, with where) and examples truncated.

    Attributes:
      total: records read and handed on (record indices run 0..total-1); unreadable lines are
        not records and are not in it.
      skipped: reason -> number of entries skipped for it (both levels).
      indices: reason -> the first few places skipped for it: record indices (int) for record
        reasons, "FILE line N" / "FILE row N" (str) for read reasons.
      details: reason -> the detail message of the first entry skipped for it.
      truncated: 'prompt' / 'response' -> number of kept examples cut there.
      origins: where the records came from, for `locate`: (first record index, file, unit,
        the line / row number of each record or None when they are rows 1, 2, ...), per file.
    """

    total: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    indices: dict[str, list[int | str]] = dataclasses.field(default_factory=dict)
    details: dict[str, str] = dataclasses.field(default_factory=dict)
    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    origins: list[tuple[int, str, str, list[int] | None]] = dataclasses.field(
        default_factory=list, repr=False
    )

    def locate(self, index: int) -> str | None:
        """Where record `index` was read ("FILE line N"), None if unknown."""
        k = bisect.bisect_right([o[0] for o in self.origins], index) - 1
        if k < 0:
            return None
        first, name, unit, numbers = self.origins[k]
        end = self.origins[k + 1][0] if k + 1 < len(self.origins) else self.total
        if index >= end:
            return None
        number = numbers[index - first] if numbers is not None else index - first + 1
        return f"{name} {unit} {number}"

    @property
    def num_skipped(self) -> int:
        """Entries skipped at either level."""
        return sum(self.skipped.values())

    @property
    def num_unreadable(self) -> int:
        """Entries of the files that were not records (skipped while reading)."""
        return sum(n for r, n in self.skipped.items() if r in READ_REASONS)

    @property
    def num_used(self) -> int:
        """Records read and not skipped."""
        return self.total - (self.num_skipped - self.num_unreadable)

    def skip(self, where: int | str, error: RecordError) -> None:
        """Counts one skip: `where` is a record index or "FILE line N"."""
        r = error.reason
        self.skipped[r] = self.skipped.get(r, 0) + 1
        self.details.setdefault(r, error.detail)
        places = self.indices.setdefault(r, [])
        if len(places) < _MAX_EXAMPLES:
            places.append(where)

    def truncate(self, where: str) -> None:
        self.truncated[where] = self.truncated.get(where, 0) + 1

    def add_skips(self, other: SkipReport) -> None:
        """Counts `other`'s skips here too, and takes its origins (not its total, truncations)."""
        self.origins = list(other.origins)
        for r, n in other.skipped.items():
            self.skipped[r] = self.skipped.get(r, 0) + n
            self.details.setdefault(r, other.details[r])
            places = self.indices.setdefault(r, [])
            places.extend(other.indices[r][: _MAX_EXAMPLES - len(places)])

    def _record(self, index: int) -> str:
        at = self.locate(index)
        return f"record {index}" + (f" ({at})" if at else "")

    def _place(self, reason: str) -> str:
        first = self.indices[reason][0]
        return self._record(first) if isinstance(first, int) else str(first)

    def reasons(self) -> str:
        """One line: each skip reason with its count and first place, most frequent first."""
        return "; ".join(
            f"{r}: {n} (e.g. {self._place(r)}: {self.details[r]})"
            for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])
        )

    def summary(self) -> str:
        """A few log lines: counts, then one line per skip reason with example places."""
        cut = ", ".join(f"{n} in the {w}" for w, n in sorted(self.truncated.items()))
        head = f"{self.num_used}/{self.total} records used, "
        head += f"{self.num_skipped - self.num_unreadable} skipped"
        if self.num_unreadable:
            head += f"; {self.num_unreadable} unreadable lines skipped"
        lines = [head + (f"; truncated: {cut}" if cut else "")]
        for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            places = self.indices[r]
            if isinstance(places[0], int):
                at = ", ".join(self._record(int(i)) for i in places)
            else:
                at = ", ".join(map(str, places))
            lines.append(f"  {r} ({REASONS[r]}): {n}, e.g. {at}: {self.details[r]}")
        return "\n".join(lines)
