"""`python -m spar_jax <command> [args]`: thin entry points over library functions.

Each command lives in its own module with `main(argv) -> int`, imported only
when called, so `python -m spar_jax convert` never imports the trainers.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "smoke": ("spar_jax.cli.smoke", "build a tiny model, run a forward pass and a cached decode"),
    "convert": ("spar_jax.cli.convert", "Hugging Face checkpoint <-> native orbax checkpoint"),
    "sample": ("spar_jax.sampling.cli", "sample completions for a JSONL file of prompts"),
    "plan": ("spar_jax.plan", "per-device memory of a model, task and mesh; does it fit?"),
    "train-dpo": ("spar_jax.training.cli_dpo", "DPO training (the actor's step of a round)"),
    "train-sft": ("spar_jax.training.cli_sft", "SFT training (the refiner, initial SFT)"),
}


def _usage() -> str:
    lines = ["usage: python -m spar_jax <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`python -m spar_jax <command> --help` for a command's arguments.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
