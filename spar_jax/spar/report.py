"""What a self-play run reports: each round's summary table, report.md and summary.png.

    print(format_summary(summary))                 # after each round
    write_report(summaries, "runs/spar/report.md") # one table row per round (+ round 0)
    plot_rounds(summaries, "runs/spar/summary.png")

A round's summary is the dict `rounds.run_round` writes. When the run evaluates its models
(`config.eval`), `summary["eval"]` holds the trained models' metrics and
`summary["eval_start"]` the starting models'; they become round 0 and the round's row.
"""

from __future__ import annotations

from collections.abc import Callable

SUMMARY_ROWS = (
    ("prompts", "prompts"),
    ("responses", "responses"),
    ("judged failures", "judged_no"),
    ("trees searched", "trees"),
    ("search success rate", "search_success_rate"),
    ("pairs built", "pairs"),
    ("RFT examples", "rft_examples"),
    ("actor DPO loss", "actor_loss"),
    ("refiner SFT loss", "refiner_loss"),
)


def _text(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_summary(s: dict) -> str:
    """The round's summary table (what the driver prints after each round)."""
    lines = [f"round {s['round']} summary"]
    for name, key in SUMMARY_ROWS:
        lines.append(f"  {name:<22} {_text(s.get(key)):>12}")
    for name, value in eval_metrics(s.get("eval")).items():
        lines.append(f"  {name:<22} {_text(value):>12}")
    for stage, seconds in s["seconds"].items():
        compiled = s.get("compiles", {}).get(stage)
        note = f"  ({compiled} programs compiled)" if compiled else ""
        lines.append(f"  {'time ' + stage:<22} {seconds:>11.1f}s{note}")
    return "\n".join(lines)


def eval_metrics(metrics: dict | None) -> dict[str, float]:
    """The headline numbers of an evaluation (`spar_jax.eval.rounds`), by display name."""
    if not metrics:
        return {}
    out: dict[str, float] = {}
    if "tasks" in metrics:
        out["actor success"] = metrics["tasks"]["success"]
        if "upper_ratio_chars" in metrics["tasks"]:
            out["upper-case share"] = metrics["tasks"]["upper_ratio_chars"]
    for key, value in metrics.get("judge", {}).items():
        out[f"judge acc. {key.removeprefix('votes_')}v"] = value["accuracy"]
    if "ifeval" in metrics:
        out["IFEval prompt strict"] = metrics["ifeval"]["prompt_level_strict_acc"]
        out["IFEval inst. loose"] = metrics["ifeval"]["inst_level_loose_acc"]
    return out


def _evaluations(summaries: list[dict]) -> tuple[list[int], list[dict[str, float]]]:
    """(rounds, headline metrics) of every evaluation: round 0 (the starting models) when
    they were evaluated, then each round's trained models."""
    start = summaries[0].get("eval_start") if summaries else None
    rounds = [s["round"] for s in summaries]
    evals = [eval_metrics(s.get("eval")) for s in summaries]
    if start:
        return [0, *rounds], [eval_metrics(start), *evals]
    return rounds, evals


# Report columns from the round summaries: (header, value of a summary or None for round 0).
_ROUND_COLUMNS: tuple[tuple[str, Callable[[dict], object]], ...] = (
    ("responses", lambda s: s["responses"]),
    ("judged No", lambda s: s["judged_no"]),
    ("trees", lambda s: s["trees"]),
    ("search success", lambda s: s["search_success_rate"]),
    ("pairs", lambda s: s["pairs"]),
    ("RFT examples", lambda s: s["rft_examples"]),
    ("actor loss", lambda s: s["actor_loss"]),
    ("refiner loss", lambda s: s["refiner_loss"]),
    ("minutes", lambda s: sum(s["seconds"].values()) / 60),
)


def report_table(summaries: list[dict]) -> list[list[str]]:
    """Header and one row per round; round 0 (the starting models) when they were evaluated."""
    rounds, evals = _evaluations(summaries)
    names = list(dict.fromkeys(k for e in evals for k in e))
    header = ["round", *names, *(h for h, _ in _ROUND_COLUMNS)]
    rows = []
    if rounds and rounds[0] == 0:  # the starting models were evaluated
        rows.append(["0 (start)", *(_text(evals[0].get(n)) for n in names)])
        rows[-1] += ["-"] * len(_ROUND_COLUMNS)
    for s, e in zip(summaries, evals[len(evals) - len(summaries) :], strict=True):
        rows.append(
            [str(s["round"]), *(_text(e.get(n)) for n in names)]
            + [_text(get(s)) for _, get in _ROUND_COLUMNS]
        )
    return [header, *rows]


def write_report(summaries: list[dict], path: str, title: str = "Self-play report") -> None:
    """report.md: the per-round table and the models each round produced."""
    header, *rows = report_table(summaries)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Models after each round:", ""]
    for s in summaries:
        lines.append(
            f"* round {s['round']}: actor `{s['next_actor']}`, refiner `{s['next_refiner']}`"
        )
    lines += [
        "",
        "Actor success: greedy answers to held-out prompts passing their rule verifiers. "
        "Judge acc. Nv: the refiner's majority verdict over N votes against the verifiers' "
        "labels. Search success: share of searched trees that reached a passing refinement.",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def plot_rounds(summaries: list[dict], path: str) -> None:
    """Search success, pairs, share judged No and (when evaluated) the models' metrics across
    rounds, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [s["round"] for s in summaries]
    panels = [
        ("search success rate", rounds, [s["search_success_rate"] for s in summaries]),
        ("pairs built", rounds, [s["pairs"] for s in summaries]),
        (
            "share judged No",
            rounds,
            [s["judged_no"] / max(s["responses_judged"], 1) for s in summaries],
        ),
    ]
    xs, evals = _evaluations(summaries)
    for name in dict.fromkeys(k for e in evals for k in e):
        points = [(x, e[name]) for x, e in zip(xs, evals, strict=True) if name in e]
        panels.append((name, [x for x, _ in points], [y for _, y in points]))
    cols = min(len(panels), 4)
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.9 * nrows), squeeze=False)
    for ax, (title, x, ys) in zip(axes.flat, panels, strict=False):
        ax.plot(x, ys, marker="o")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        ax.set_xticks(x)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
