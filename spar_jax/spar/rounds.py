"""The self-play driver: T rounds of sample -> judge -> negatives -> search -> build -> train.

    result = rounds.run(config, workdir="runs/spar")      # what `python -m spar_jax selfplay` calls

Round t starts from actor A_t and refiner R_t (the same checkpoint or two) and ends with
A_{t+1} = DPO(A_t) on its (refined > failed) pairs, with A_t as the reference, and
R_{t+1} = SFT(R_t) on its judgments and refinements. Everything a round makes lives under
`<workdir>/round_<t>/<stage>/`; rerunning the same command skips finished stages and resumes
a killed one (stages_io.py). The run's settings are kept in `<workdir>/config.json`, and a
rerun with different settings (other than `rounds`, `progress` and the trainers' progress) is
refused, since it would mix two experiments in one workdir.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from spar_jax import errors
from spar_jax.spar import build, report, stages
from spar_jax.spar import stages_io as io
from spar_jax.spar.judge import Judgment

# Settings that may change between a run and its resume (they change no result).
RESUMABLE_KEYS = ("rounds", "progress", "compilation_cache")


class LazyChatModel:
    """Loads its model on the first `generate` call, so a finished stage loads nothing."""

    def __init__(self, spec: str, rnd: stages.Round):
        self.spec, self.rnd, self.model = spec, rnd, None

    def generate(self, conversations, sampling_params, n=1, seed=0):
        if self.model is None:
            self.rnd.log(f"loading {self.spec} for generation")
            self.model = stages.load_chat_model(self.spec, self.rnd.tokenizer, self.rnd)
        return self.model.generate(conversations, sampling_params, n=n, seed=seed)

    @property
    def last_skipped(self) -> list[int]:
        """Conversations the last call skipped as too long for the context."""
        return list(getattr(self.model, "last_skipped", []))


def read_prompts(config: Any, workdir: str) -> tuple[list[dict], dict]:
    """The run's prompts, normalised once into `<workdir>/prompts.jsonl` (ids and skips).

    `config.prompts` is a file or hub id, or "tasks": `max_prompts` (default 200) prompts of
    the synthetic world drawn with the run's seed, each with its spec for a rule judge."""
    path = os.path.join(workdir, "prompts.jsonl")
    info_path = os.path.join(workdir, "prompts_summary.json")
    if os.path.exists(info_path):
        return io.read_jsonl(path), io.read_json(info_path)
    from spar_jax.training import formats, records, skips

    if config.prompts == "tasks":  # the synthetic world (spar_jax.tasks): verifiable specs
        from spar_jax import tasks

        raw = tasks.make_prompts(config.max_prompts or 200, config.seed)
        report = skips.SkipReport(total=len(raw))
    else:
        raw, report = records.load_records(config.prompts, strict=False)
    kept: list[dict] = []
    seen: set[str] = set()
    for i, row in enumerate(raw):
        try:
            parsed = formats.parse_prompt(row, i)
        except skips.RecordError as e:  # no usable prompt: counted by reason
            report.skip(i, e)
            continue
        pid = str(parsed.prompt_id)
        while pid in seen:  # a repeated id would merge two prompts' records
            pid += "_"
        seen.add(pid)
        # Extra fields (a verifiable task's spec, say) travel with the prompt to the judge.
        kept.append({**row, "prompt": parsed.prompt, "prompt_id": pid})
    if config.max_prompts:
        kept = kept[: config.max_prompts]
    info = {
        "source": str(config.prompts),
        "records": len(raw),
        "prompts": len(kept),
        "skipped": dict(report.skipped),
        "skip_report": report.summary(),
    }
    if not kept:
        raise errors.SparError(
            f"--config.prompts={config.prompts}: no usable prompt ({info['skip_report']}); "
            "give a JSONL/JSON/Parquet file with a non-empty 'prompt' field per row"
        )
    io.write_jsonl(path, kept)
    io.write_json(info_path, info)
    io.barrier("prompts")
    return kept, info


def _check_settings(config: Any, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    now = json.loads(config.to_json_best_effort())
    for key in RESUMABLE_KEYS:
        now.pop(key, None)
    if os.path.exists(path):
        before = io.read_json(path)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise errors.SparError(
                f"workdir {workdir} holds a run with other settings (changed: "
                f"{', '.join(changed)}); use a new --workdir, or rerun with the settings in "
                f"{path}"
            )
    else:
        io.write_json(path, now)


Evaluate = Callable[[str, str, str], dict]  # (actor, refiner, out_dir) -> metrics


def run(
    config: Any,
    workdir: str,
    *,
    log: Callable[[str], None] = print,
    evaluate: Evaluate | None = None,
) -> list[dict]:
    """Runs (or resumes) `config.rounds` rounds in `workdir`; returns each round's summary.

    `evaluate`, when given, measures the starting models once (`round_0/eval/`) and each
    round's trained models (`round_<t>/eval/`); its metrics join the summaries (the
    `selfplay` command builds it from the config's `eval` section, `spar_jax.eval.rounds`).
    """
    from spar_jax import sharding

    os.makedirs(workdir, exist_ok=True)
    _check_settings(config, workdir)
    rows, prompt_info = read_prompts(config, workdir)
    log(f"{len(rows)} prompts from {config.prompts}: {prompt_info['skip_report']}")
    mesh = sharding.make_mesh(tuple(config.mesh))
    actor, refiner = config.actor, config.refiner or config.actor
    tokenizer = config.tokenizer or config.actor
    summaries = []
    start_eval = None
    if evaluate is not None:
        start_eval = evaluate_stage(
            evaluate, os.path.join(workdir, "round_0", "eval"), actor, refiner, log
        )
    for t in range(1, config.rounds + 1):
        rnd = stages.Round(config, workdir, t, actor, refiner, tokenizer, mesh, log)
        summary = run_round(rnd, rows, evaluate)
        if start_eval is not None:
            summary["eval_start"] = start_eval
        summary["prompts_skipped"] = prompt_info["skipped"]
        summaries.append(summary)
        actor, refiner = summary["next_actor"], summary["next_refiner"]
        log(report.format_summary(summary))
    io.write_json(os.path.join(workdir, "summary.json"), summaries)
    if io.is_writer():
        report.write_report(summaries, os.path.join(workdir, "report.md"))
        report.plot_rounds(summaries, os.path.join(workdir, "summary.png"))
    return summaries


def _timed(times: dict, name: str, fn: Callable, *args):
    """Runs a stage, adding its seconds and the sampler programs it compiled to `times`."""
    from spar_jax import sampling

    start, compiles = time.perf_counter(), sampling.compile_count()
    out = fn(*args)
    times[name] = times.get(name, 0.0) + time.perf_counter() - start
    times.setdefault("_compiles", {})[name] = sampling.compile_count() - compiles
    return out


def evaluate_stage(
    evaluate: Evaluate, out_dir: str, actor: str, refiner: str, log: Callable[[str], None]
) -> dict:
    """Runs `evaluate` once per `out_dir` (a finished evaluation is read back)."""

    def compute() -> dict:
        log(f"evaluating actor {actor} and refiner {refiner}")
        return evaluate(actor, refiner, out_dir)

    return io.once(out_dir, compute)


def run_round(rnd: stages.Round, rows: list[dict], evaluate: Evaluate | None = None) -> dict:
    """One round; a finished round is read back from its summary."""
    path = os.path.join(rnd.workdir, f"round_{rnd.t}", "summary.json")
    if os.path.exists(path):
        return io.read_json(path)
    times: dict[str, float] = {}
    actor = LazyChatModel(rnd.actor, rnd)
    samples = _timed(times, "sample", stages.sample, rnd, rows, actor)
    del actor  # frees the actor's weights before the refiner loads
    refiner = LazyChatModel(rnd.refiner, rnd)
    judge = stages.make_judge(rnd, refiner)
    judged = _timed(times, "judge", stages.judge, rnd, samples, rows, judge)
    roots, negative_counts = _timed(
        times, "negatives", stages.negatives, rnd, rows, samples, judged
    )
    trees = _timed(times, "search", stages.search, rnd, roots, refiner, judge)
    del refiner, judge
    built = _timed(times, "build", build_data, rnd, trees, samples, judged)
    actor_out = _timed(times, "train_actor", train_actor, rnd, built)
    refiner_out = _timed(times, "train_refiner", train_refiner, rnd, built)

    metrics = None
    if evaluate is not None:
        metrics = _timed(
            times, "eval", evaluate_stage, evaluate, rnd.dir("eval"),
            actor_out["model"], refiner_out["model"], rnd.log,
        )  # fmt: skip

    passed = sum(tree["status"] == "passed" for tree in trees)
    summary = {
        "round": rnd.t,
        "actor": rnd.actor,
        "refiner": rnd.refiner,
        "prompts": len(rows),
        "prompts_too_long": sum(s["skipped"] for s in samples),
        "responses": sum(len(s["responses"]) for s in samples if not s["skipped"]),
        **stages.judged_counts(judged),
        "trees": len(trees),
        "trees_passed": passed,
        "search_success_rate": passed / len(trees) if trees else 0.0,
        "pairs": built["pairs"],
        "rft_examples": built["rft_examples"],
        "negatives": negative_counts,
        "build_counts": built["counts"],
        "actor_loss": actor_out.get("loss"),
        "refiner_loss": refiner_out.get("loss"),
        "next_actor": actor_out["model"],
        "next_refiner": refiner_out["model"],
        "eval": metrics,
        "seconds": {k: round(v, 2) for k, v in times.items() if k != "_compiles"},
        # Sampler programs compiled by each stage in this process (0 for a resumed stage).
        "compiles": times["_compiles"],
    }
    io.write_json(path, summary)
    return summary


def build_data(rnd: stages.Round, trees: list[dict], samples, judged) -> dict:
    """Actor pairs and refiner data files of the round (build.py), with their counts."""
    return io.once(rnd.dir("build"), lambda: _build(rnd, trees, samples, judged))


def _build(rnd: stages.Round, trees: list[dict], samples, judged) -> dict:
    out_dir, c = rnd.dir("build"), rnd.config
    pairs, pair_counts = build.dpo_pairs(trees, end_gate=c.tree.end_gate)
    texts = {s["prompt_id"]: s for s in samples}
    actor_judgments = [
        (texts[row["prompt_id"]]["prompt"], response, Judgment.from_dict(j))
        for row in judged
        for response, j in zip(texts[row["prompt_id"]]["responses"], row["judgments"], strict=True)
    ]
    examples, rft_counts = build.refiner_data(
        trees,
        actor_judgments,
        seed=rnd.seed("build"),
        end_gate=c.tree.end_gate,
        caps=dict(c.data),
    )
    pairs_path = os.path.join(out_dir, "actor_pairs.jsonl")
    rft_path = os.path.join(out_dir, "refiner_sft.jsonl")
    io.write_jsonl(pairs_path, pairs)
    io.write_jsonl(rft_path, examples)
    return {
        "pairs": len(pairs),
        "rft_examples": len(examples),
        "pairs_path": pairs_path,
        "rft_path": rft_path,
        "counts": {"pairs": dict(pair_counts), "refiner": dict(rft_counts)},
    }


def _train(rnd: stages.Round, stage: str, base: str, section: Any, data: str, n: int, fn):
    """Trains `base` on `data` with the trainer `fn` once; the summary names the export."""
    return io.once(rnd.dir(stage), lambda: _train_once(rnd, stage, base, section, data, n, fn))


def _train_once(rnd: stages.Round, stage: str, base: str, section: Any, data: str, n: int, fn):
    out_dir = rnd.dir(stage)
    if n == 0:
        rnd.log(f"round {rnd.t} {stage}: no training data; the model stays {base}")
        return {"model": base, "loss": None, "skipped": "no data"}
    cfg = section.copy_and_resolve_references()
    cfg.model, cfg.tokenizer, cfg.data, cfg.out_dir = base, rnd.tokenizer, data, out_dir
    if "toy_data" in cfg:
        cfg.toy_data = False
    if "eval_data" in cfg:
        cfg.eval_data = ""
    if "native" not in cfg.export:
        cfg.export = (*cfg.export, "native")
    cfg.progress = rnd.config.progress
    result = fn(cfg, log=rnd.log)
    return {"model": result.exports["native"], "loss": result.loop.last.get("loss"), "examples": n}


def train_actor(rnd: stages.Round, built: dict) -> dict:
    """A_{t+1} = DPO(A_t) on the round's pairs, reference = A_t."""
    from spar_jax.training.dpo import train_dpo

    c = rnd.config
    return _train(
        rnd, "train_actor", rnd.actor, c.train_actor, built["pairs_path"], built["pairs"], train_dpo
    )


def train_refiner(rnd: stages.Round, built: dict) -> dict:
    """R_{t+1} = SFT(R_t) on the round's judgments and refinements."""
    from spar_jax.training.sft import train_sft

    c = rnd.config
    return _train(
        rnd,
        "train_refiner",
        rnd.refiner,
        c.train_refiner,
        built["rft_path"],
        built["rft_examples"],
        train_sft,
    )
