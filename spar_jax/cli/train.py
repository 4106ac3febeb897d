"""`python -m spar_jax train-dpo|train-sft --config configs/X.py [--config.k=v ...]`.

    python -m spar_jax train-dpo --config configs/dpo_demo.py
    python -m spar_jax train-sft --config configs/sft_demo.py --config.optimizer.learning_rate=2e-6

Every field of the config file can be overridden with `--config.<field>=value`. A run writes
`out_dir/metrics.jsonl`, `out_dir/loss.png`, `out_dir/checkpoints/` and the param-only exports
`out_dir/final_<format>/`, from process 0 only; started again with the same `out_dir` it resumes
from the last checkpoint (use a fresh `out_dir` to start over).
"""

from __future__ import annotations


def dpo(argv: list[str]) -> int:
    """`train-dpo`: DPO on preference pairs (the actor's step of a round)."""
    return _train("dpo", argv)


def sft(argv: list[str]) -> int:
    """`train-sft`: SFT on conversations (the refiner's step, and the initial SFT)."""
    return _train("sft", argv)


def _train(kind: str, argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from spar_jax import configs

    config = configs.from_argv(argv, f"configs/{kind}_demo.py")
    if kind == "dpo":
        from spar_jax.training.dpo import train_dpo

        result = train_dpo(config)
    else:
        from spar_jax.training.sft import train_sft

        result = train_sft(config)
    r = result.loop
    print(
        f"train-{kind}: {r.steps_run} steps, final loss {r.last.get('loss', float('nan')):.4f}; "
        f"metrics {r.metrics_path}, plot {r.plot_path}, checkpoint step {r.checkpoint_step}"
        + "".join(f"; {fmt} export {p}" for fmt, p in result.exports.items())
    )
    return 0
