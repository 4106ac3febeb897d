"""DPO trainer for the actor (SPaR: sigmoid DPO, beta 0.1, + 0.1 x length-normalised chosen NLL).

    result = train_dpo(config)   # config: configs/dpo_demo.py's ConfigDict

The reference model is the round's starting model (``config.model``). By default its log-probs
are computed once, in one pass over the data before training, and stored per record index
(``out_dir/reference_logps.npy``, reused on resume); the step then reads them from the batch,
so only one model is in memory while training. ``reference="online"`` keeps a frozen copy of
the params in the state and runs it on every batch instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from spar_jax.training import common, data, loop
from spar_jax.training.state import TrainState

REFERENCE_FILE = "reference_logps.npy"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPOConfig:
    """The loss and reference fields of the DPO experiment config."""

    loss: str = "sigmoid"  # key of losses.PREFERENCE_LOSSES
    beta: float | None = 0.1
    label_smoothing: float | None = None
    gamma: float | None = None
    ftx_weight: float = 0.1  # LLaMA-Factory pref_ftx: weight of the length-normalised NLL
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: str = "precompute"  # or "online"
    eval_data: Any = ""  # held-out pairs: reward margin and accuracy at the end

    @classmethod
    def from_config(cls, config: Any) -> DPOConfig:
        loss = config.loss
        return cls(
            loss=loss.name,
            beta=loss.beta,
            label_smoothing=loss.label_smoothing or None,
            gamma=loss.gamma,
            ftx_weight=loss.ftx_weight,
            loss_kwargs=dict(loss.kwargs),
            reference=config.reference,
            eval_data=config.eval_data,
        )


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


def _load_reference(path: str, shape: tuple[int, int]) -> np.ndarray | None:
    if os.path.isfile(path):
        table = np.load(path)
        if table.shape == shape:
            return table
    return None


@dataclasses.dataclass
class DPOResult:
    loop: loop.LoopResult
    eval: dict[str, float]
    exports: dict[str, str]
    skipped: data.SkipReport


def train_dpo(config: Any, *, log: Callable[[str], None] = print) -> DPOResult:
    """Runs (or resumes) a DPO run described by an experiment ``ConfigDict``."""
    from spar_jax.tokenizer import Tokenizer

    config = common.with_toy_data(config, "dpo")
    run = common.RunConfig.from_config(config)
    dpo = DPOConfig.from_config(config)
    tok = Tokenizer.load(run.tokenizer)
    records, read = data.load_records(run.data, strict=run.strict)
    prepared = data.prepare_dpo(
        records,
        tok,
        max_length=run.max_length,
        max_prompt_length=run.max_prompt_length,
        strict=run.strict,
        report=read,
    )
    log(f"dpo data {run.data}: {prepared.report.summary()}")

    base_cfg, cfg, params, placement = common.load_placed_model(
        run, tok.vocab_size, task="dpo", reference=dpo.reference, log=log
    )
    per_epoch = data.num_batches(prepared, run.batch_size)
    tx, _, train_step, state_sharding = common.train_step_for(
        "dpo",
        cfg,
        run,
        run.epochs * per_epoch,
        placement,
        loss=dpo.loss,
        beta=dpo.beta,
        label_smoothing=dpo.label_smoothing,
        gamma=dpo.gamma,
        ftx_weight=dpo.ftx_weight,
        loss_kwargs=dict(dpo.loss_kwargs),
        reference=dpo.reference,
    )
    micro = run.batch_size // run.grad_accum_steps
    ref_fn = common.reference_fn_for(cfg, run.chunk_size, run.fast_compile, placement)

    def table_for(prep: data.Prepared, name: str) -> np.ndarray:
        path = os.path.join(run.out_dir, name)
        table = _load_reference(path, (prep.report.total, 2))
        if table is None:
            table = pair_logps_table(
                ref_fn,
                params,
                prep,
                micro,
                num_records=prep.report.total,
                pad_to_multiple=run.pad_to_multiple,
            )
            if jax.process_index() == 0:
                os.makedirs(run.out_dir, exist_ok=True)
                np.save(path, table)
        return table

    eval_prepared = None
    if dpo.eval_data:
        eval_records, eval_read = data.load_records(dpo.eval_data)
        eval_prepared = data.prepare_dpo(
            eval_records,
            tok,
            max_length=run.max_length,
            max_prompt_length=run.max_prompt_length,
            report=eval_read,
        )
        eval_reference = table_for(eval_prepared, "eval_" + REFERENCE_FILE)

    prepare = None
    ref_params = None
    if dpo.reference == "precompute":
        prepare = with_reference(table_for(prepared, REFERENCE_FILE))
    else:
        ref_params = common.copy_tree(params)  # the state's params are donated; this is not

    state = TrainState.create(params, tx, seed=run.seed, ref_params=ref_params)
    state = placement.place_state(state, state_sharding)
    result = common.run_training(
        state,
        train_step,
        prepared,
        run,
        placement,
        kind="dpo",
        per_epoch=per_epoch,
        prepare=prepare,
        log=log,
    )
    params = result.state.params

    evals: dict[str, float] = {}
    if eval_prepared is not None:
        policy = pair_logps_table(
            ref_fn,
            params,
            eval_prepared,
            micro,
            num_records=eval_prepared.report.total,
            pad_to_multiple=run.pad_to_multiple,
        )
        evals = reward_metrics(policy, eval_reference, dpo.beta or 0.1)
        if jax.process_index() == 0:
            with open(os.path.join(run.out_dir, "eval.json"), "w") as f:
                json.dump(evals, f, indent=2)
        log(f"held-out: {evals}")
    exports = common.export(base_cfg, params, run)
    return DPOResult(loop=result, eval=evals, exports=exports, skipped=prepared.report)
