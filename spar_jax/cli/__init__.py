"""`python -m spar_jax <command> [args]`: the one entry point.

Every command is a function `main(argv) -> int` in a module of this package,
named in `COMMANDS` and imported only when called (so `convert` never
imports the trainers). Before a command runs, `main` starts JAX's multi-host
runtime from the environment (`sharding.initialize_distributed`: the
`SPAR_COORDINATOR` / `SPAR_NUM_PROCESSES` / `SPAR_PROCESS_ID` variables, or
`SPAR_DISTRIBUTED=auto`, that the launchers in launch/ set); on a single
machine without them nothing changes. Commands that write files write from
process 0 only.

A user-facing error (`spar_jax.errors.SparError`: bad config key, missing
file, malformed data, mesh mismatch, ...) is printed as one line naming the
input and the fix, with exit status 1 (2 for a bad config or usage). Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """One command: `target` is "module:function", the function `(argv) -> exit status`."""

    target: str
    help: str
    distributed: bool = True  # uses JAX devices: start the multi-host runtime first

    def load(self) -> Callable[[list[str]], int | None]:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: dict[str, Command] = {
    "smoke": Command(
        "spar_jax.cli.smoke:main", "build a tiny model, run a forward pass and a cached decode"
    ),
    "convert": Command(
        "spar_jax.cli.convert:main",
        "Hugging Face checkpoint <-> native orbax checkpoint",
        distributed=False,  # one process, no collectives: a file tool
    ),
    "plan": Command(
        "spar_jax.cli.plan:main", "per-device memory of a model, task and mesh; does it fit?"
    ),
    "sample": Command("spar_jax.cli.sample:main", "sample completions for a JSONL file of prompts"),
    "train-dpo": Command("spar_jax.cli.train:dpo", "DPO training (the actor's step of a round)"),
    "train-sft": Command("spar_jax.cli.train:sft", "SFT training (the refiner, initial SFT)"),
    "selfplay": Command(
        "spar_jax.cli.selfplay:main", "SPaR self-play rounds: sample, judge, refine, train"
    ),
    "eval": Command("spar_jax.cli.eval:main", "IFEval, inference-time scaling and judge accuracy"),
    "interference": Command(
        "spar_jax.cli.interference:main", "DPO on sampled vs refined pairs (paper's Figure 4)"
    ),
}


def usage() -> str:
    lines = ["usage: python -m spar_jax <command> [args]", "", "commands:"]
    lines += [f"  {name:<12} {c.help}" for name, c in COMMANDS.items()]
    lines.append("\n`python -m spar_jax <command> --help` for a command's arguments.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs `argv` = [command, *args]; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    try:
        function = command.load()
    except ModuleNotFoundError as e:
        if not command.target.startswith(f"{e.name}:"):
            raise  # the command exists but something it imports is missing: a real problem
        print(f"{name}: not available in this version of spar_jax", file=sys.stderr)
        return 2

    from spar_jax import configs, errors

    help_only = any(a in ("-h", "--help") for a in rest)
    try:
        if command.distributed and not help_only:
            from spar_jax import sharding

            sharding.initialize_distributed()
        return function(rest) or 0
    except errors.SparError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, configs.ConfigError) else 1
