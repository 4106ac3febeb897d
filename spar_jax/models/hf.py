"""Hugging Face checkpoint import and export, one tensor at a time.

A family module (llama.py, glm.py) describes its checkpoint with a list of
`weight_map.WeightMap`s: which HF tensors make which of our parameters, and the
two pure reshapes between them. Everything else here is family-independent.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from spar_jax.models import glm, llama
from spar_jax.models import safetensors_io as st
from spar_jax.models.config import ModelConfig
from spar_jax.models.transformer import param_shapes
from spar_jax.models.weight_map import CheckpointError, WeightMap

__all__ = ["CheckpointError", "config_from_hf", "config_to_hf", "load_hf", "save_hf"]

log = logging.getLogger(__name__)

# Tensors some checkpoints carry that hold nothing we need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------------------
# Families


# model_type of config.json -> the family module that describes it.
FAMILIES = {"llama": llama, "glm": glm, "glm4": glm}


def _family_module(model_type: str):
    return FAMILIES.get(model_type)


def _supported() -> str:
    return ", ".join(FAMILIES)


def config_from_hf(hf_config: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Our config from a transformers `config.json` dict (any transformers version)."""
    model_type = hf_config.get("model_type")
    family = _family_module(model_type)
    if family is None:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported; supported: {_supported()}"
        )
    return family.config_from_hf(hf_config, source)


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    return _family_module(cfg.family).config_to_hf(cfg)


def weight_maps(cfg: ModelConfig) -> list[WeightMap]:
    return _family_module(cfg.family).weight_maps(cfg)


# ---------------------------------------------------------------------------
# Loading


def _read_config(path: str) -> dict[str, Any]:
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path}: no such checkpoint directory (load_hf takes a local directory "
            "with config.json and *.safetensors)"
        )
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"{config_path}: missing; a Hugging Face checkpoint needs config.json"
        )
    try:
        with open(config_path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: invalid JSON ({e})") from None


def _index_tensors(path: str) -> dict[str, st.SafetensorsFile]:
    """Tensor name -> the file that holds it."""
    index_path = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(path, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{index_path}: lists shard {shard}, which is missing")
            files[shard] = st.SafetensorsFile(shard_path)
        return {name: files[shard] for name, shard in weight_map.items()}
    shards = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not shards:
        pickles = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
        hint = (
            " (only PyTorch pickle files found; spar_jax reads safetensors only: re-save the"
            " model with save_pretrained(..., safe_serialization=True))"
            if pickles
            else ""
        )
        raise CheckpointError(f"{path}: no *.safetensors files{hint}")
    tensors = {}
    for shard in shards:
        f = st.SafetensorsFile(shard)
        for name in f.names():
            tensors[name] = f
    return tensors


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _expected_hf_shapes(m: WeightMap, shapes) -> tuple[tuple[int, ...], ...]:
    structs = []
    for p in m.jax_paths:
        s = _get(shapes, p)
        shape = s.shape[1:] if m.per_layer else s.shape
        structs.append(jax.ShapeDtypeStruct(shape, jnp.float32))
    return tuple(o.shape for o in jax.eval_shape(m.to_hf, *structs))


def load_hf(
    path: str,
    dtype=jnp.float32,
    *,
    compute_dtype=None,
    shardings: Callable[[ModelConfig], Any] | None = None,
    **overrides: Any,
) -> tuple[ModelConfig, Any]:
    """Reads a local Hugging Face checkpoint directory into (config, params).

    Args:
      path: directory with config.json and model.safetensors (or shards and
        model.safetensors.index.json).
      dtype: parameter dtype; every floating tensor is cast to it.
      compute_dtype: activation dtype (defaults to `dtype`).
      shardings: `cfg -> pytree of jax.sharding.Sharding` (e.g. `sharding.param_shardings`
        on a mesh): each tensor goes from host memory straight to its shards, so a model
        larger than one device loads; default: the default device.
      **overrides: further `ModelConfig` fields (e.g. `remat_policy="full"`).
    Returns:
      (cfg, params) with params as device arrays.
    """
    hf_config = _read_config(path)
    dtype = jnp.dtype(dtype)
    cfg = config_from_hf(hf_config, os.path.join(path, "config.json")).replace(
        param_dtype=dtype.name, dtype=jnp.dtype(compute_dtype or dtype).name, **overrides
    )
    tensors = _index_tensors(path)
    shapes = param_shapes(cfg)
    placement = shardings(cfg) if shardings is not None else None
    used: set[str] = set()
    params: dict = {}
    maps = weight_maps(cfg)
    total = sum(cfg.num_layers if m.per_layer else 1 for m in maps)
    with tqdm(total=total, desc=f"load {os.path.basename(path)}", unit="t", disable=None) as bar:
        for m in maps:
            expected = _expected_hf_shapes(m, shapes)
            bufs = [np.empty(_get(shapes, p).shape, dtype) for p in m.jax_paths]
            for i in range(cfg.num_layers) if m.per_layer else [None]:
                hf = []
                for name_t, shape in zip(m.hf_names, expected, strict=True):
                    name = name_t.format(i=i)
                    hf.append(_read_tensor(path, tensors, name, shape, dtype))
                    used.add(name)
                for buf, value in zip(bufs, m.to_jax(*hf), strict=True):
                    if m.per_layer:
                        buf[i] = value
                    else:
                        buf[...] = value
                bar.update()
            for p, buf in zip(m.jax_paths, bufs, strict=True):
                target = _get(placement, p) if placement is not None else None
                _set(params, p, jax.device_put(buf, target))
    unused = sorted(n for n in tensors if n not in used and not n.endswith(_IGNORED_SUFFIXES))
    if cfg.tie_embeddings and "lm_head.weight" in unused:
        unused.remove("lm_head.weight")  # some tied checkpoints store the copy
    if unused:
        log.warning(
            "%s: %d tensors not used by the %s model, e.g. %s",
            path,
            len(unused),
            cfg.family,
            unused[:5],
        )
    return cfg, params


def _read_tensor(path, tensors, name, shape, dtype) -> np.ndarray:
    f = tensors.get(name)
    if f is None:
        raise CheckpointError(f"{path}: tensor {name!r} is missing from the checkpoint")
    if name not in f.header:
        raise CheckpointError(f"{f.path}: index lists tensor {name!r} but the file lacks it")
    if f.shape(name) != tuple(shape):
        raise CheckpointError(
            f"{f.path}: tensor {name!r} has shape {list(f.shape(name))}, expected"
            f" {list(shape)} from config.json"
        )
    code = f.dtype_code(name)
    if code not in st.FLOAT_CODES:
        raise CheckpointError(
            f"{f.path}: tensor {name!r} has dtype {code}, which cannot be cast to {dtype.name}"
            " (quantised checkpoints are not supported: load a float16/bfloat16/float32 one)"
        )
    return f.read(name).astype(dtype)


# ---------------------------------------------------------------------------
# Saving


def save_hf(
    cfg: ModelConfig,
    params: Any,
    out_dir: str,
    *,
    dtype=None,
    max_shard_bytes: int = 4 * 1024**3,
) -> None:
    """Writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Args:
      dtype: dtype of the written tensors (default: the params' dtype).
      max_shard_bytes: above this, weights go to several shards plus
        model.safetensors.index.json, as transformers writes them.
    """
    os.makedirs(out_dir, exist_ok=True)
    first = jax.tree.leaves(params)[0]
    dtype = np.dtype(dtype or first.dtype)
    hf_config = config_to_hf(cfg)
    hf_config["dtype"] = dtype.name
    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for m in weight_maps(cfg):
        leaves = [_get(params, p) for p in m.jax_paths]
        for i in range(cfg.num_layers) if m.per_layer else [None]:
            # One layer at a time to host memory.
            values = [np.asarray(x[i] if m.per_layer else x) for x in leaves]
            for name_t, value in zip(m.hf_names, m.to_hf(*values), strict=True):
                value = np.asarray(value).astype(dtype)
                if size and size + value.nbytes > max_shard_bytes:
                    shards.append([])
                    size = 0
                shards[-1].append((name_t.format(i=i), value))
                size += value.nbytes
    for stale in glob.glob(os.path.join(out_dir, "model*.safetensors*")):
        os.remove(stale)
    if len(shards) == 1:
        st.write(os.path.join(out_dir, "model.safetensors"), shards[0])
    else:
        weight_map, total = {}, 0
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            total += st.write(os.path.join(out_dir, fname), shard)
            weight_map.update({name: fname for name, _ in shard})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
