"""The trainers' model in and out: load a preset, native or Hugging Face model onto the mesh,
export the trained params, and say which weights a run started from.

    cfg, params = load_model("/ckpt/Meta-Llama-3-8B-Instruct", vocab_size=0, seed=0,
                             placement=placement)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spar_jax import models, sharding
from spar_jax.errors import MissingFileError
from spar_jax.training import checkpoint
from spar_jax.training.placement import Placement, check_fits
from spar_jax.training.run_config import RunConfig, compute_config, preset_vocab


def random_params(cfg: models.ModelConfig, seed: int = 0) -> Any:
    """Random params for ``cfg`` as ``models.init_params`` draws them (weights normal(0.02),
    norm scales 1, biases 0), but from numpy: no XLA compilation, so a demo starts at once."""
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        name = str(getattr(path[-1], "key", path[-1]))
        parents = [str(getattr(k, "key", k)) for k in path[:-1]]
        if any("norm" in p for p in parents):
            value = np.ones(shape.shape)
        elif name.endswith("bias"):
            value = np.zeros(shape.shape)
        else:
            value = rng.normal(0.0, 0.02, shape.shape)
        return jnp.asarray(value, shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, models.param_shapes(cfg))


def load_model(
    spec: str, *, vocab_size: int, seed: int, placement: Placement
) -> tuple[models.ModelConfig, Any]:
    """``(cfg, float32 params)`` from a preset name, a native dir or a Hugging Face dir,
    placed straight onto ``placement``'s mesh by the parameter rules (a model larger than
    one device never has to fit on one).

    A preset starts from random weights (``seed``) with ``vocab_size`` tokens, for demos.
    """

    def shardings(cfg):
        return sharding.param_shardings(cfg, placement.mesh, placement.rules)

    if spec in models.PRESETS:
        cfg = models.preset(spec, **({"vocab_size": vocab_size} if vocab_size else {}))
        return cfg, jax.device_put(random_params(cfg, seed), shardings(cfg))
    if os.path.isfile(os.path.join(spec, "model_config.json")):
        from spar_jax.models import native

        cfg = native.load_config(spec)
        cfg, params = native.load_native(spec, shardings(cfg))
        params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
        return cfg.replace(param_dtype="float32"), params
    if os.path.isdir(spec):
        return models.load_hf(spec, dtype=jnp.float32, shardings=shardings)
    raise MissingFileError(
        f"model {spec!r} is neither a preset ({', '.join(sorted(models.PRESETS))}) nor a "
        "checkpoint directory; set --config.model"
    )


def load_placed_model(
    run: RunConfig,
    tokenizer_vocab: int,
    placement: Placement,
    *,
    task: str,
    reference: str = "precompute",
    log: Callable[[str], None] = print,
) -> tuple[models.ModelConfig, models.ModelConfig, Any]:
    """``(base cfg, compute cfg, params on the mesh)``, after the memory plan says the run
    fits (``placement.check_fits``)."""
    base_cfg, params = load_model(
        run.model,
        vocab_size=preset_vocab(tokenizer_vocab, run.vocab_size),
        seed=run.seed,
        placement=placement,
    )
    cfg = compute_config(base_cfg, run)
    log(f"model {run.model}: {models.count_params(cfg):,} parameters, compute {cfg.dtype}")
    check_fits(cfg, placement, task=task, run=run, reference=reference, log=log)
    return base_cfg, cfg, params


def file_stats(path: str) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of every file under ``path`` (or of ``path`` itself),
    sorted: what changes when a checkpoint or tokenizer on disk is replaced."""
    if os.path.isfile(path):
        st = os.stat(path)
        return [(os.path.basename(path), st.st_size, st.st_mtime_ns)]
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            st = os.stat(full)
            out.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return sorted(out)


def model_identity(run: RunConfig, tokenizer_vocab: int) -> dict[str, Any]:
    """JSON facts that change when the run's starting weights change: a preset's name, seed
    and vocabulary (its weights are drawn from them), or a checkpoint's absolute path with the
    size and modification time of each of its files."""
    if run.model in models.PRESETS:
        vocab = preset_vocab(tokenizer_vocab, run.vocab_size)
        return {"preset": run.model, "seed": run.seed, "vocab_size": vocab}
    path = os.path.abspath(run.model)
    return {"path": path, "files": [list(s) for s in file_stats(path)]}


def export(cfg: models.ModelConfig, params: Any, run: RunConfig) -> dict[str, str]:
    """Param-only exports for the next round under ``out_dir/final_<format>``."""
    out = {}
    for fmt in run.export:
        out[fmt] = checkpoint.export_params(
            cfg, params, os.path.join(run.out_dir, f"final_{fmt}"), fmt
        )
    return out
