"""SFT trainer: the refiner each round (SPaR: lr 2e-6, constant schedule with warmup) and the
initial SFT of both roles. The loss is the token-mean NLL of the trained assistant turns.

    result = train_sft(config)   # config: configs/sft_demo.py's ConfigDict
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from spar_jax.training import compiled, data, loop, model_io, runner, toy
from spar_jax.training.placement import Placement
from spar_jax.training.run_config import RunConfig
from spar_jax.training.state import TrainState


@dataclasses.dataclass
class SFTResult:
    loop: loop.LoopResult
    exports: dict[str, str]
    skipped: data.SkipReport


def train_sft(config: Any, *, log: Callable[[str], None] = print) -> SFTResult:
    """Runs (or resumes) an SFT run described by an experiment ``ConfigDict``."""
    from spar_jax.tokenizer import Tokenizer

    config = toy.with_toy_data(config, "sft")
    run = RunConfig.from_config(config)
    tok = Tokenizer.load(run.tokenizer)
    records, read = data.load_records(run.data, strict=run.strict)
    prepared = data.prepare_sft(
        records,
        tok,
        max_length=run.max_length,
        train_on=config.train_on,
        max_prompt_length=run.max_prompt_length,
        strict=run.strict,
        report=read,
    )
    log(f"sft data {run.data}: {prepared.report.summary()}")

    placement = Placement.from_config(run.mesh, run.sharding_rules)
    base_cfg, cfg, params = model_io.load_placed_model(
        run, tok.vocab_size, placement, task="sft", log=log
    )
    per_epoch = data.num_batches(prepared, run.batch_size)
    tx, _, train_step, state_sharding = compiled.train_step_for(
        "sft", cfg, run, run.epochs * per_epoch, placement
    )
    state = placement.place_state(TrainState.create(params, tx), state_sharding)
    del params  # donated with the state
    result = runner.run_training(
        state, train_step, prepared, run, placement, kind="sft", per_epoch=per_epoch, log=log
    )
    exports = model_io.export(base_cfg, result.state.params, run)
    return SFTResult(loop=result, exports=exports, skipped=prepared.report)
