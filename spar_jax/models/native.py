"""Native checkpoints: the params pytree in orbax format plus our config as JSON.

Loading restores straight into the requested shardings (one host copy at
most per array), which is what large runs want; the HF format stays the
interchange format (`load_hf` / `save_hf`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from spar_jax.errors import MissingFileError
from spar_jax.models.config import ModelConfig
from spar_jax.models.transformer import param_shapes

CONFIG_FILE = "model_config.json"


def save_native(cfg: ModelConfig, params: Any, path: str) -> None:
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, "params"), params, force=True)
    if jax.process_index() == 0:
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            f.write(cfg.to_json())


def load_config(path: str) -> ModelConfig:
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise MissingFileError(
            f"{config_path}: missing; a native checkpoint is written by save_native "
            "(or `python -m spar_jax convert hf-to-native`)"
        )
    with open(config_path) as f:
        return ModelConfig.from_dict(json.load(f))


def load_native(path: str, shardings: Any = None) -> tuple[ModelConfig, Any]:
    """(cfg, params) from `path`; `shardings` is a pytree of `jax.sharding.Sharding`."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    cfg = load_config(path)
    target = param_shapes(cfg)
    if shardings is None:  # this process's first device (a multi-host run: every process)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, target)
    target = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), target, shardings
    )
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(path, "params"), target)
    return cfg, params
