"""DPO trainer for the actor (SPaR: sigmoid DPO, beta 0.1, + 0.1 x length-normalised chosen NLL).

    result = train_dpo(config)   # config: configs/dpo_demo.py's ConfigDict

The reference model is the round's starting model (``config.model``). By default its log-probs
are computed once, in one pass over the data before training, and stored per record index with
a fingerprint of the model, tokenizer, data and limits that produced them
(``out_dir/reference_logps.npz``, see ``training.reference``: reused on resume, recomputed when
anything changed); the step then reads them from the batch, so only one model is in memory
while training. ``reference="online"`` keeps a frozen copy of the params in the state and runs
it on every batch instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax.configs import ConfigError
from spar_jax.training import (
    compiled,
    data,
    loop,
    model_io,
    preference,
    reference,
    runner,
    steps,
    toy,
)
from spar_jax.training.placement import Placement
from spar_jax.training.run_config import RunConfig
from spar_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPOConfig:
    """The loss and reference fields of the DPO experiment config."""

    loss: str = "sigmoid"  # key of preference.PREFERENCE_LOSSES
    beta: float | None = 0.1
    label_smoothing: float | None = None
    gamma: float | None = None
    ftx_weight: float = 0.1  # LLaMA-Factory pref_ftx: weight of the length-normalised NLL
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: str = "precompute"  # or "online"
    eval_data: Any = ""  # held-out pairs: reward margin and accuracy at the end

    def __post_init__(self):
        if self.reference not in steps.REFERENCE_MODES:
            raise ConfigError(f"reference={self.reference!r}; use one of {steps.REFERENCE_MODES}")
        try:
            self.reward_scale()  # an unknown loss or a hyper-parameter it does not take
        except ValueError as e:
            raise ConfigError(f"--config.loss: {e}") from None

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

    def reward_scale(self) -> Any:
        """The scale of the implicit rewards: the loss's declared ``reward_scale``
        hyper-parameter (``beta``) as this config sets it, else the loss's default."""
        entry = preference.get_preference_loss(self.loss)
        values = {"beta": self.beta, "label_smoothing": self.label_smoothing, "gamma": self.gamma}
        return entry.scale(entry.resolve({**values, **self.loss_kwargs}, name=self.loss))


@dataclasses.dataclass
class DPOResult:
    loop: loop.LoopResult
    eval: dict[str, float]
    exports: dict[str, str]
    skipped: data.SkipReport


def _prepare(source: Any, tok: Any, run: RunConfig, *, strict: bool) -> data.Prepared:
    records, read = data.load_records(source, strict=strict)
    return data.prepare_dpo(
        records,
        tok,
        max_length=run.max_length,
        max_prompt_length=run.max_prompt_length,
        strict=strict,
        report=read,
    )


def train_dpo(config: Any, *, log: Callable[[str], None] = print) -> DPOResult:
    """Runs (or resumes) a DPO run described by an experiment ``ConfigDict``."""
    from spar_jax.tokenizer import Tokenizer

    config = toy.with_toy_data(config, "dpo")
    run = RunConfig.from_config(config)
    dpo = DPOConfig.from_config(config)
    scale = dpo.reward_scale()
    tok = Tokenizer.load(run.tokenizer)
    prepared = _prepare(run.data, tok, run, strict=run.strict)
    log(f"dpo data {run.data}: {prepared.report.summary()}")

    placement = Placement.from_config(run.mesh, run.sharding_rules)
    base_cfg, cfg, params = model_io.load_placed_model(
        run, tok.vocab_size, placement, task="dpo", reference=dpo.reference, log=log
    )
    per_epoch = data.num_batches(prepared, run.batch_size)
    tx, _, train_step, state_sharding = compiled.train_step_for(
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
    ref_fn = compiled.reference_fn_for(cfg, run, placement)

    def logps(p: Any, prep: data.Prepared) -> np.ndarray:
        return reference.pair_logps_table(
            ref_fn,
            p,
            prep,
            micro,
            num_records=prep.report.total,
            pad_to_multiple=run.pad_to_multiple,
        )

    def table_for(prep: data.Prepared, source: Any, name: str) -> np.ndarray:
        fp = reference.fingerprint(run, cfg, prep, source, tok.vocab_size)
        path = os.path.join(run.out_dir, name)
        return reference.reference_table(path, lambda: logps(params, prep), fp, prep, log=log)

    eval_prepared = None
    if dpo.eval_data:
        eval_prepared = _prepare(dpo.eval_data, tok, run, strict=False)
        eval_reference = table_for(eval_prepared, dpo.eval_data, "eval_" + reference.REFERENCE_FILE)

    prepare = None
    ref_params = None
    if dpo.reference == "precompute":
        prepare = reference.with_reference(table_for(prepared, run.data, reference.REFERENCE_FILE))
    else:  # the state's params are donated to the step; the reference's copy is not
        ref_params = jax.tree.map(jnp.copy, params)

    state = TrainState.create(params, tx, ref_params=ref_params)
    state = placement.place_state(state, state_sharding)
    result = runner.run_training(
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
        policy = logps(params, eval_prepared)
        evals = reference.reward_metrics(policy, eval_reference, scale)
        if jax.process_index() == 0:
            with open(os.path.join(run.out_dir, "eval.json"), "w") as f:
                json.dump(evals, f, indent=2)
        log(f"held-out: {evals}")
    exports = model_io.export(base_cfg, params, run)
    return DPOResult(loop=result, eval=evals, exports=exports, skipped=prepared.report)
