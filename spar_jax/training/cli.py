"""`python -m spar_jax train-dpo|train-sft --config configs/X.py [--config.k=v ...]`.

    python -m spar_jax train-dpo --config configs/dpo_demo.py
    python -m spar_jax train-sft --config configs/sft_demo.py --config.optimizer.learning_rate=2e-6

Every field of the config file can be overridden with `--config.<field>=value`. A run writes
`out_dir/metrics.jsonl`, `out_dir/loss.png`, `out_dir/checkpoints/` and the param-only exports
`out_dir/final_<format>/`; started again with the same `out_dir` it resumes from the last
checkpoint (use a fresh `out_dir` to start over).
"""

from __future__ import annotations

import sys


def run_command(kind: str, argv: list[str]) -> int:
    """Parses `--config` and overrides, then runs `train_dpo` / `train_sft`; the exit status."""
    prog = f"train-{kind}"
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from spar_jax import configs

    try:
        config = configs.from_argv(argv, f"configs/{kind}_demo.py")
    except configs.ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    from spar_jax import models, tokenizer
    from spar_jax.training import data, loop

    user_errors = (
        ValueError,
        FileNotFoundError,
        models.CheckpointError,
        data.DataError,
        tokenizer.TokenizerNotFoundError,
        tokenizer.TokenizerLoadError,
        tokenizer.FamilyError,
        loop.NonFiniteLossError,
        MemoryError,  # the memory plan refused the run
    )
    try:
        if kind == "dpo":
            from spar_jax.training.dpo import train_dpo

            result = train_dpo(config)
        else:
            from spar_jax.training.sft import train_sft

            result = train_sft(config)
    except user_errors as e:
        print(f"{prog}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    r = result.loop
    print(
        f"{prog}: {r.steps_run} steps, final loss {r.last.get('loss', float('nan')):.4f}; "
        f"metrics {r.metrics_path}, plot {r.plot_path}, checkpoint step {r.checkpoint_step}"
        + "".join(f"; {fmt} export {p}" for fmt, p in result.exports.items())
    )
    return 0
