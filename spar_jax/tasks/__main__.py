"""`python -m spar_jax.tasks write-seed OUT_DIR [--size s] [--prompts 8000] [--seed 0]`:
writes the seed SFT inputs of the synthetic world (see `spar_jax.tasks.model.write_seed`);
the defaults are the recipe of the shipped seed model (configs/demo_seed_sft.py).

`python -m spar_jax.tasks probe MODEL_DIR --tokenizer DIR --prompts FILE`: measures the model
as actor, judge and refiner on held-out prompts (see `spar_jax.tasks.probe`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    from spar_jax.tasks import model

    if argv[:1] == ["probe"]:
        from spar_jax.tasks import probe

        return probe.main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m spar_jax.tasks", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write-seed", help="tokenizer, random init model, seed SFT rows")
    w.add_argument("out_dir")
    w.add_argument("--size", default="s", choices=sorted(model.SIZES))
    w.add_argument("--prompts", type=int, default=8000, help="prompts (3 SFT rows each)")
    w.add_argument("--eval-prompts", type=int, default=90)
    w.add_argument("--error-rate", type=float, default=0.4, help="actor rows with an error")
    w.add_argument("--batch-size", type=int, default=8, help="rows grouped per batch")
    w.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = model.write_seed(
        args.out_dir,
        num_prompts=args.prompts,
        num_eval=args.eval_prompts,
        error_rate=args.error_rate,
        size=args.size,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
