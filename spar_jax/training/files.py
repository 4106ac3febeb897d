"""Reading data files into rows (dicts), with per-line accounting for JSON lines.

JSON lines (`.jsonl`, and `.json` files that are not one JSON document) are read line by line
here, so that one bad line is a counted skip naming its line rather than an unreadable file.
JSON arrays (`.json`, LLaMA-Factory's layout) are read whole, each row numbered. Everything else
goes through `datasets`: Parquet, directories written by `save_to_disk`, hub dataset ids, and
JSON compressed as `.zst` / `.lz4` (`.gz`, `.bz2` and `.xz` are read here). Paths may also be
`hf://datasets/OWNER/NAME/PATH` (needs network), read like local files.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from spar_jax.errors import MissingFileError
from spar_jax.training.skips import DataError, RecordError, SkipReport

_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_OPENERS: dict[str, Callable[..., IO[bytes]]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
_VIA_DATASETS = (".zst", ".lz4")  # compressions only `datasets` reads
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _strip_compression(path: str) -> tuple[str, str]:
    name = path.lower()
    for c in (*_OPENERS, *_VIA_DATASETS):
        if name.endswith(c):
            return name.removesuffix(c), c
    return name, ""


def kind_of(path: str) -> str | None:
    """'json' / 'parquet' from the extension (under any compression), None if unknown."""
    return _KINDS.get(Path(_strip_compression(path)[0]).suffix)


def _offline() -> bool:
    import datasets

    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags) or bool(
        datasets.config.HF_HUB_OFFLINE
    )


def expand(source: str) -> list[str]:
    """The data files named by a path, a glob, a directory of data files, or an hf:// path."""
    if source.startswith("hf://"):
        return [source]
    s = os.path.expanduser(source)
    if glob.has_magic(s):
        files = sorted(f for f in glob.glob(s, recursive=True) if os.path.isfile(f))
        if not files:
            raise MissingFileError(f"no file matches the pattern {source!r}; check the glob")
        return files
    if os.path.isdir(s):
        files = sorted(str(f) for f in Path(s).iterdir() if f.is_file() and kind_of(f.name))
        if not files:
            raise DataError(
                f"directory {source} is neither a saved dataset (save_to_disk) nor holds "
                f"{'/'.join(_KINDS)} files; pass a data file, a glob or a saved dataset"
            )
        return files
    if not os.path.exists(s):
        raise MissingFileError(
            f"data file {source} does not exist; check the path (a file of a hub dataset is "
            "hf://datasets/OWNER/NAME/FILE)"
        )
    return [s]


def is_saved_dataset(path: str) -> bool:
    p = Path(os.path.expanduser(path))
    return p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists())


def is_hub_id(source: str) -> bool:
    """A name that is no local path and looks like a hub dataset id ('owner/name')."""
    return (
        not os.path.exists(os.path.expanduser(source))
        and not glob.has_magic(source)
        and kind_of(source) is None
        and not source.startswith(".")
        and _HUB_ID.fullmatch(source) is not None
    )


def _open(path: str) -> IO[bytes]:
    if path.startswith("hf://"):
        if _offline():
            raise MissingFileError(
                f"{path} is on the Hugging Face hub, which is offline (HF_HUB_OFFLINE / "
                "HF_DATASETS_OFFLINE); download it and pass the local path, or go online"
            )
        import fsspec

        return fsspec.open(path, "rb", compression="infer").open()
    opener = _OPENERS.get(_strip_compression(path)[1], open)
    return opener(os.path.expanduser(path), "rb")


def _lines(path: str, report: SkipReport, strict: bool) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of each non-blank line; unreadable lines go to `report`."""
    with _open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                why = f"{e.msg}; column {e.colno}" if hasattr(e, "colno") else "not UTF-8"
                if line.endswith(b"\n"):
                    reason, what = "not_json", "is not JSON"
                else:  # only the last line can lack its newline
                    reason, what = "truncated_line", "ends without a newline and is not JSON"
                _skip(report, strict, f"{path} line {number}", reason, f"{what} ({why})")


def _skip(report: SkipReport, strict: bool, where: str, reason: str, detail: str) -> None:
    error = RecordError(reason, detail)
    if strict:
        raise RecordError(reason, detail, index=where) from None
    report.skip(where, error)


def _objects(
    values: Iterator[tuple[int, Any]], name: str, unit: str, report: SkipReport, strict: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(number, dict) pairs; other JSON values (a list, a number) are skipped as 'not_an_object'."""
    for number, value in values:
        if isinstance(value, dict):
            yield number, value
        else:
            detail = f"got a JSON {type(value).__name__}; each {unit} must be one record object"
            _skip(report, strict, f"{name} {unit} {number}", "not_an_object", detail)


def read_json(
    path: str, report: SkipReport, strict: bool
) -> tuple[list[dict[str, Any]], str, list[int]]:
    """Rows of a JSON-lines file or a JSON array (or a single JSON object: one row), with the
    unit ('line' / 'row') and number of each."""
    values: Iterator[tuple[int, Any]] | None = None
    if Path(_strip_compression(path)[0]).suffix == ".json":
        with _open(path) as f:
            raw = f.read()
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if raw.lstrip()[:1] == b"[":
                raise DataError(
                    f"{path} is not valid JSON ({e}); fix the array, or write one record per "
                    "line as JSON lines (.jsonl) so that a bad line is skipped, not the file"
                ) from None
            doc = None  # JSON lines under a .json name
        if doc is not None:
            values = enumerate(doc if isinstance(doc, list) else [doc], start=1)
    unit = "row" if values is not None else "line"
    if values is None:
        values = _lines(path, report, strict)
    pairs = list(_objects(values, path, unit, report, strict))
    return [row for _, row in pairs], unit, [n for n, _ in pairs]


def read_datasets(kind: str, files: Sequence[str], cache_dir: str | None) -> list[dict[str, Any]]:
    """Rows of files that only `datasets` reads (Parquet, JSON as .zst / .lz4)."""
    import datasets

    try:
        ds = datasets.load_dataset(kind, data_files=list(files), split="train", cache_dir=cache_dir)
    except Exception as e:  # datasets / pyarrow raise many types for unreadable files
        raise DataError(
            f"cannot read {files[0] if len(files) == 1 else f'{len(files)} files from {files[0]}'}"
            f" ({type(e).__name__}: {str(e)[:300]}); check that it is valid "
            f"{'Parquet' if kind == 'parquet' else 'JSON'} with one record per row"
        ) from None
    return ds.to_list()


def read_saved(path: str, split: str) -> list[dict[str, Any]]:
    """Rows of a directory written by `save_to_disk` (a Dataset, or a DatasetDict's split)."""
    import datasets

    ds = datasets.load_from_disk(os.path.expanduser(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(
                f"saved dataset {path} has no split {split!r}; pass split= one of {sorted(ds)}"
            )
        ds = ds[split]
    return ds.to_list()


def read_hub(name: str, split: str, cache_dir: str | None) -> list[dict[str, Any]]:
    """Rows of a hub dataset's split (needs network)."""
    import datasets

    if _offline():
        raise MissingFileError(
            f"{name} is not a local file, glob or directory, and the Hugging Face hub is "
            "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); pass a local path, or go online "
            "to load it as a hub dataset"
        )
    try:
        return datasets.load_dataset(name, split=split, cache_dir=cache_dir).to_list()
    except Exception as e:
        raise DataError(
            f"{name} is not a local path and loading it from the hub failed "
            f"({type(e).__name__}: {str(e)[:300]}); check the path or the dataset id"
        ) from None


def read_rows(
    sources: Sequence[str], *, strict: bool, split: str, cache_dir: str | None
) -> tuple[list[dict[str, Any]], SkipReport]:
    """Rows of every source in order, and the report of unreadable entries (see `load_records`)."""
    report = SkipReport()
    rows: list[dict[str, Any]] = []

    def add(new: list[dict[str, Any]], name: str, unit: str, numbers: list[int] | None) -> None:
        report.origins.append((len(rows), name, unit, numbers))
        rows.extend(new)

    for source in sources:
        if is_saved_dataset(source):
            add(read_saved(source, split), source, "row", None)
            continue
        if is_hub_id(source):
            add(read_hub(source, split, cache_dir), f"{source}[{split}]", "row", None)
            continue
        files = expand(source)
        unknown = [f for f in files if kind_of(f) is None]
        if unknown:
            raise DataError(
                f"data file {unknown[0]} has an unknown extension; use one of "
                f"{', '.join(_KINDS)} (optionally compressed: "
                f"{', '.join((*_OPENERS, *_VIA_DATASETS))})"
            )
        for f in files:
            if kind_of(f) == "parquet" or _strip_compression(f)[1] in _VIA_DATASETS:
                add(read_datasets(kind_of(f) or "json", [f], cache_dir), f, "row", None)
            else:
                new, unit, numbers = read_json(f, report, strict)
                add(new, f, unit, numbers)
    report.total = len(rows)
    return rows, report
