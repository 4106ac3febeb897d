"""Run metrics: one JSON line per step, a tqdm bar with loss and throughput, a loss-curve PNG.

    with MetricsLogger(out_dir, total_steps=1000, initial_step=0, desc="dpo") as log:
        log.log(step, {"loss": 0.69, ...}, tokens=4096, seconds=0.5, extra={"epoch": 0})
    plot_loss(log.path, os.path.join(out_dir, "loss.png"))

A resumed run continues the same ``metrics.jsonl``: the records a killed run wrote after its
last checkpoint are cut first (the resumed run computes those steps again), so every step
appears exactly once. A run that starts from step 0 starts the file over.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _scalar(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else repr(f)  # JSON has no nan/inf: keep them readable


class MetricsLogger:
    """Appends per-step metrics to ``out_dir/metrics.jsonl`` and drives a tqdm bar.

    Args:
      out_dir: run directory (created if missing).
      total_steps: steps of the full run (the bar's total).
      initial_step: steps already done (a resumed run starts its bar there); records of later
        steps already in the file are removed.
      desc: bar label.
      progress: show the bar (tqdm also hides it when stderr is not a terminal).
      enabled: write anything at all (False on every process but 0).
    """

    def __init__(
        self,
        out_dir: str,
        *,
        total_steps: int,
        initial_step: int = 0,
        desc: str = "train",
        progress: bool = True,
        enabled: bool = True,
    ):
        from tqdm.auto import tqdm

        self.path = os.path.join(out_dir, METRICS_FILE)
        self._file = None
        if enabled:  # in a multi-process run only process 0 writes
            os.makedirs(out_dir, exist_ok=True)
            cut_back(self.path, initial_step)
            self._file = open(self.path, "a", encoding="utf-8")
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc=desc,
            unit="step",
            disable=None if progress and enabled else True,
            dynamic_ncols=True,
        )
        self._start = time.perf_counter()

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any],
        *,
        tokens: int,
        seconds: float,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Writes one record: ``step``, the metrics (host scalars), ``tokens``, ``tokens_per_s``.

        Args:
          step: the optimizer step just completed (1-based: the state's step after the update).
          metrics: scalars from the train step (device scalars are fetched here).
          tokens: real (non-padding) tokens the step processed.
          seconds: wall time of the step.
          extra: more fields (epoch, batch index, ...).
        """
        record: dict[str, Any] = {"step": int(step)}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        record["tokens"] = int(tokens)
        record["tokens_per_s"] = tokens / seconds if seconds > 0 else 0.0
        record["time"] = time.perf_counter() - self._start
        record.update(extra or {})
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        postfix = {
            "loss": f"{float(metrics['loss']):.4f}",
            "tok/s": f"{record['tokens_per_s']:.0f}",
        }
        if "rewards/accuracies" in metrics:
            postfix["acc"] = f"{float(metrics['rewards/accuracies']):.2f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)
        return record

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_back(path: str, step: int) -> None:
    """Keeps only the records of steps ``<= step`` in the metrics file at ``path`` (if any),
    and drops a last line a kill left half-written. The file is replaced atomically."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and int(record.get("step", step + 1)) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Records of a metrics JSONL file, the last one of each step, in step order."""
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(metrics_path: str, png_path: str, *, keys: tuple[str, ...] = ("loss",)) -> str:
    """Draws ``keys`` against the step from a metrics file into ``png_path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training hosts
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path
