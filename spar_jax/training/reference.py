"""The DPO reference log-probs: one pass of the starting model over the pairs, stored per record.

The table is saved as ``out_dir/reference_logps.npz`` together with a fingerprint of what
produced it: the model (a preset's name and seed, or a checkpoint's path and the size and
modification time of its files), the tokenizer's files, a digest of the tokenized examples
(which the data, the tokenizer and the length limits decide) and the compute dtype. A later
run in the same ``out_dir`` (a resume, or the next round by mistake) reuses the table only when
the fingerprint is the same; otherwise it recomputes it and the log says what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from spar_jax import models
from spar_jax.errors import SparError
from spar_jax.training import data
from spar_jax.training.model_io import file_stats, model_identity
from spar_jax.training.run_config import RunConfig

REFERENCE_FILE = "reference_logps.npz"


class NonFiniteReferenceError(SparError, FloatingPointError):
    """The reference model gave nan/inf log-probs; the message names the records."""


def pair_logps_table(
    fn: Callable[[Any, Any], tuple[jax.Array, jax.Array]],
    params: Any,
    prepared: data.Prepared,
    batch_size: int,
    *,
    num_records: int,
    pad_to_multiple: int = 8,
) -> np.ndarray:
    """``[num_records, 2]`` float32 (chosen, rejected) summed log-probs by record index.

    One pass over ``prepared`` in input order with the jitted ``fn(params, batch)``
    (``steps.make_reference_fn``); rows of skipped records stay nan.
    """
    table = np.full((num_records, 2), np.nan, np.float32)
    for batch in data.batches(
        prepared, batch_size, seed=0, shuffle=False, pad_to_multiple=pad_to_multiple
    ):
        index = batch.pop("index")
        chosen, rejected = jax.device_get(fn(params, batch))
        real = index >= 0
        table[index[real], 0] = chosen[real]
        table[index[real], 1] = rejected[real]
    return table


def with_reference(table: np.ndarray) -> Callable[[Mapping[str, np.ndarray]], dict]:
    """A loop ``prepare`` hook: drops ``index`` and adds the batch's reference log-probs."""

    def prepare(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "index"}
        index = np.asarray(batch["index"])
        rows = table[np.maximum(index, 0)]
        rows = np.where((index >= 0)[:, None], rows, 0.0)  # padding rows: weight 0 anyway
        out["reference_chosen_logps"] = rows[:, 0].astype(np.float32)
        out["reference_rejected_logps"] = rows[:, 1].astype(np.float32)
        return out

    return prepare


def reward_metrics(policy: np.ndarray, reference: np.ndarray, beta: float) -> dict[str, float]:
    """Held-out implicit-reward margin and accuracy from two ``[N, 2]`` log-prob tables."""
    ok = ~np.isnan(policy).any(axis=1) & ~np.isnan(reference).any(axis=1)
    rewards = beta * (policy[ok] - reference[ok])  # [n, 2]
    margin = rewards[:, 0] - rewards[:, 1]
    return {
        "eval/rewards/margins": float(margin.mean()),
        "eval/rewards/accuracies": float((margin > 0).mean()),
        "eval/pairs": int(ok.sum()),
    }


def examples_digest(prepared: data.Prepared) -> str:
    """SHA-256 of the tokenized examples (token ids, loss masks, record indices)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prepared.index, np.int64).tobytes())
    for key in sorted(prepared.sequences):
        for row in prepared.sequences[key]:
            h.update(np.int64(len(row)).tobytes())
            h.update(np.ascontiguousarray(row).tobytes())
    return h.hexdigest()


def fingerprint(
    run: RunConfig,
    cfg: models.ModelConfig,
    prepared: data.Prepared,
    data_source: Any,
    tokenizer_vocab: int,
) -> dict[str, Any]:
    """What a reference table depends on, as JSON values (see the module docstring)."""
    tokenizer = os.path.abspath(run.tokenizer)
    value = {
        "model": model_identity(run, tokenizer_vocab),
        "tokenizer": {"path": tokenizer, "files": file_stats(tokenizer)}
        if os.path.exists(tokenizer)
        else {"name": run.tokenizer},
        "data": {"source": data_source, "examples_sha256": examples_digest(prepared)},
        "max_length": run.max_length,
        "max_prompt_length": run.max_prompt_length,
        "dtype": cfg.dtype,
    }
    return json.loads(json.dumps(value, default=str))  # the form it has when read back


def _model_name(identity: Mapping[str, Any] | None) -> str:
    identity = identity or {}
    if "path" in identity:
        return identity["path"]
    return f"preset {identity.get('preset')} (seed {identity.get('seed')})"


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    out = []
    for key in new:
        a, b = old.get(key), new[key]
        if a == b:
            continue
        if key == "model" and _model_name(a) == _model_name(b):
            out.append(f"model (the files of {_model_name(b)})")
        elif key == "model":
            out.append(f"model ({_model_name(a)} -> {_model_name(b)})")
        elif isinstance(b, dict):
            fields = sorted(k for k in set(a or {}) | set(b) if (a or {}).get(k) != b.get(k))
            out.append(f"{key} ({', '.join(fields)})")
        else:
            out.append(f"{key} ({a!r} -> {b!r})")
    return ", ".join(out) or "the table's shape"


def _read(path: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    try:
        with np.load(path) as f:
            return f["logps"], json.loads(str(f["fingerprint"]))
    except (OSError, KeyError, ValueError):
        return None


def reference_table(
    path: str,
    compute: Callable[[], np.ndarray],
    fp: dict[str, Any],
    prepared: data.Prepared,
    *,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """The ``[records, 2]`` table at ``path`` when its fingerprint is ``fp``; else ``compute()``
    checked and saved there (by process 0).

    Raises:
      NonFiniteReferenceError: a record the run trains on has a nan/inf reference log-prob.
    """
    name = os.path.basename(path)
    stored = _read(path) if os.path.isfile(path) else None
    shape = (prepared.report.total, 2)
    if stored is not None:
        table, old = stored
        if old == fp and table.shape == shape:
            log(f"{name}: reference log-probs reused (same model, tokenizer, data and limits)")
            return table
        log(f"{name}: recomputing the reference log-probs; changed since: {_changes(old, fp)}")
    table = compute()
    used = table[prepared.index]  # rows of skipped records stay nan
    bad = prepared.index[~np.isfinite(used).all(axis=1)]
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise NonFiniteReferenceError(
            f"the reference model gives non-finite log-probs for {bad.size} records of "
            f"{fp['data']['source']} (record indices {shown}); check those records, or compute "
            "in float32 (--config.compute_dtype=float32)"
        )
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, logps=table, fingerprint=np.asarray(json.dumps(fp)))
        os.replace(tmp, path)  # a run killed while saving leaves no half-written table
    return table
