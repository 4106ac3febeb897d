"""The self-play workdir on disk: append-only JSONL stages that a killed run resumes.

A stage that produces records for many items (prompts, responses, trees) processes them in
fixed chunks and appends each chunk's rows as one write. Each row carries the index of its
chunk. On resume, rows of a chunk that is not complete (a kill in the middle of a write) and a
half-written last line are cut off, and only the missing chunks run again. Every chunk's
randomness comes from `chunk_seed(base, round, stage, chunk)`, so a rerun of a chunk gives the
same rows as the run that was killed: nothing is lost or duplicated. A stage is finished when
its `summary.json` exists; that file is written last, atomically.

Only process 0 writes. All processes compute the same rows (generation is one SPMD program over
the mesh), so every process can return them without reading the files back, and a barrier
after each stage keeps a fast process from reading a file that process 0 is still writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax

CHUNK_KEY = "_chunk"
SUMMARY = "summary.json"


def is_writer() -> bool:
    """Whether this process writes files (process 0 of a multi-host run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits for every process (a no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def chunk_seed(*parts: Any) -> int:
    """A stable 31-bit seed from `parts` (never Python's salted `hash`): the search's own
    `derive_seed`, so one rule makes every seed of a run."""
    from spar_jax.spar.generator import derive_seed

    return derive_seed(*(str(p) for p in parts))


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as JSON atomically (temporary file, then rename); process 0 only."""
    if not is_writer():
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
    """Writes `rows` as a whole JSONL file atomically; process 0 only."""
    if not is_writer():
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file this package wrote (a missing file is empty)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def finished(stage_dir: str) -> bool:
    return os.path.exists(os.path.join(stage_dir, SUMMARY))


def once(stage_dir: str, compute: Callable[[], dict]) -> dict:
    """`compute()`, run once per stage: a finished stage's `summary.json` is read back instead.

    The result is written (process 0) as the stage's summary, then every process waits.
    """
    done = os.path.join(stage_dir, SUMMARY)
    if os.path.exists(done):
        return read_json(done)
    result = compute()
    write_json(done, result)
    barrier(f"once:{stage_dir}")
    return result


def _recover(path: str, chunk_sizes: Sequence[int]) -> dict[int, list[dict]]:
    """The complete chunks already in `path`; cuts everything else off the file."""
    if not os.path.exists(path):
        return {}
    rows: dict[int, list[dict]] = {}
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # a half-written last line
            continue
        rows.setdefault(row[CHUNK_KEY], []).append(row)
    done = {c: r for c, r in rows.items() if c < len(chunk_sizes) and len(r) == chunk_sizes[c]}
    if len(done) != len(rows) or (not data.endswith(b"\n") and data):
        # Rewrite with only the complete chunks, in chunk order.
        write_jsonl(path, [row for c in sorted(done) for row in done[c]])
    return done


def run_chunked(
    path: str,
    items: Sequence[Any],
    chunk_size: int,
    compute: Callable[[int, Sequence[Any]], list[dict]],
    *,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Rows for all `items`, computing only the chunks that `path` does not hold yet.

    Args:
      path: the stage's JSONL file (appended one chunk at a time).
      items: everything the stage processes, in a fixed order.
      chunk_size: items per chunk (fixed across a run and its resumes).
      compute: `(chunk_index, chunk_items) -> rows`, one row per item, deterministic in its
        arguments (take randomness from `chunk_seed(..., chunk_index)`).
      progress: called with the number of items finished (resumed chunks included).
    Returns:
      every row, in item order, each with its chunk index under `_chunk`.
    """
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    done = _recover(path, [len(c) for c in chunks])
    if is_writer():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out: list[dict] = []
    for c, chunk in enumerate(chunks):
        if c in done:
            rows = done[c]
        else:
            rows = compute(c, chunk)
            if len(rows) != len(chunk):
                raise RuntimeError(f"chunk {c} of {path}: {len(rows)} rows for {len(chunk)} items")
            for row in rows:
                row[CHUNK_KEY] = c
            if is_writer():
                with open(path, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                    f.flush()
                    os.fsync(f.fileno())
        out.extend(rows)
        if progress is not None:
            progress(len(chunk))
    return out
