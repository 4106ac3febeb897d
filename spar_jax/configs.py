"""Experiment configs: `configs/<name>.py` files with `get_config()` -> ConfigDict.

    python -m spar_jax <command> --config configs/demo.py --config.train.lr=1e-6

Overrides are typed by the field they replace (a float field takes "1e-6",
a tuple field takes "(1,2)"); an unknown key is an error naming the key.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any

import ml_collections

from spar_jax.errors import SparError

_PREFIX = "--config."


class ConfigError(SparError, ValueError):
    """A config file or override we cannot use; the message names it."""


def load(path: str, overrides: list[str] | None = None) -> ml_collections.ConfigDict:
    """Loads `path` (a python file with `get_config()`) and applies `--config.k=v` overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found (pass --config configs/<name>.py)")
    spec = importlib.util.spec_from_file_location(f"_spar_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    cfg = module.get_config()
    for item in overrides or []:
        apply_override(cfg, item)
    return cfg


def apply_override(cfg: ml_collections.ConfigDict, item: str) -> None:
    """Applies one `a.b.c=value` (or `--config.a.b.c=value`) override in place."""
    item = item.removeprefix(_PREFIX)
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like --config.key=value")
    key, raw = item.split("=", 1)
    *parents, leaf = key.split(".")
    node = cfg
    for i, part in enumerate(parents):
        if part not in node:
            raise ConfigError(f"unknown config key {'.'.join(parents[: i + 1])!r} in {item!r}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"unknown config key {key!r}; known here: {sorted(node.keys())}")
    node[leaf] = _coerce(node[leaf], raw, key)


def _coerce(current: Any, raw: str, key: str) -> Any:
    if isinstance(current, str):
        return raw
    if current is None:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ConfigError(f"--config.{key}={raw!r}: not a {type(current).__name__}") from None
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"--config.{key}={raw!r}: expected True or False")
        return value
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if not isinstance(value, type(current)):
        raise ConfigError(f"--config.{key}={raw!r}: expected {type(current).__name__}")
    return value


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.k=v` overrides from the other arguments."""
    overrides = [a for a in argv if a.startswith(_PREFIX)]
    rest = [a for a in argv if not a.startswith(_PREFIX)]
    return rest, overrides


def with_workdir(
    argv: list[str], prog: str, doc: str, example: str, workdir_help: str
) -> tuple[ml_collections.ConfigDict, str]:
    """(config, workdir) of a command taking `--config PATH --workdir DIR [--config.k=v ...]`;
    argparse prints `doc` for --help and names `example` for --config."""
    import argparse

    rest, overrides = split_argv(argv)
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", required=True, help=example)
    parser.add_argument("--workdir", required=True, help=workdir_help)
    args = parser.parse_args(rest)
    return load(args.config, overrides), args.workdir


def from_argv(argv: list[str], example: str) -> ml_collections.ConfigDict:
    """The config named by `--config PATH` (or `--config=PATH`) with the `--config.k=v`
    overrides in `argv` applied; `example` is the file to suggest when it is missing."""
    rest, overrides = split_argv(argv)
    path = None
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        raise ConfigError(f"pass --config {example}")
    return load(path, overrides)
