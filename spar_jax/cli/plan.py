"""`python -m spar_jax plan`: per-device memory of a model, task and mesh, before anything runs.

    python -m spar_jax plan --preset llama3_8b --task dpo --mesh 1,-1,1 --devices 8 --device h100
    python -m spar_jax plan --config configs/dpo_llama3_8b.py --devices 8 --device h100
    python -m spar_jax plan --config configs/dpo_llama3_8b.py --config.model=/ckpt/llama3_8b

The model is the config's `model` (a preset name, a Hugging Face checkpoint directory, of
which only config.json is read, or a native directory, of which only model_config.json is
read); `--preset` overrides it. Batch size, length, accumulation, remat, dtype and mesh come
from the config too, and each has a flag that overrides it. Exit status 1 when the plan does
not fit the given device memory.
"""

from __future__ import annotations

import argparse
import json
import os

from spar_jax import errors
from spar_jax.configs import ConfigError


def model_config(spec: str):
    """The `ModelConfig` that `spec` names, read without touching any weights.

    spec: a preset name ("llama3_8b"), a Hugging Face checkpoint directory (its config.json)
      or a native checkpoint directory (its model_config.json).
    """
    from spar_jax import models

    if spec in models.PRESETS:
        return models.preset(spec)
    if os.path.isfile(os.path.join(spec, "model_config.json")):
        from spar_jax.models import native

        return native.load_config(spec)
    config_path = os.path.join(spec, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                hf_config = json.load(f)
        except json.JSONDecodeError as e:
            raise models.CheckpointError(f"{config_path}: invalid JSON ({e})") from None
        return models.config_from_hf(hf_config, config_path)
    what = "a directory without config.json or model_config.json" if os.path.isdir(spec) else None
    raise errors.MissingFileError(
        f"model {spec!r} is {what or 'neither a preset nor a directory'}; pass a preset "
        f"({', '.join(sorted(models.PRESETS))}), a Hugging Face checkpoint directory or a "
        "native one, with --config.model=... or --preset"
    )


def _parser() -> argparse.ArgumentParser:
    from spar_jax import plan

    parser = argparse.ArgumentParser(
        prog="python -m spar_jax plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="experiment config; its model/batch/length/remat are used")
    parser.add_argument("--preset", help="model preset (overrides the config's model)")
    parser.add_argument("--task", choices=["dpo", "sft", "sample"], default=None)
    parser.add_argument("--mesh", default=None, help="data,fsdp,tensor sizes; -1 = the rest")
    parser.add_argument(
        "--devices", type=int, default=None, help="number of devices (default: this machine's)"
    )
    parser.add_argument(
        "--device", choices=sorted(plan.DEVICE_GIB), help="device kind, for its memory"
    )
    parser.add_argument("--device-gib", type=float, help="device memory in GiB")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--grad-accum-steps", type=int)
    parser.add_argument("--remat", choices=["none", "full", "dots", "dots_no_batch"])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype")
    return parser


def _default_task(c) -> str:
    """What a config file is for: sampling configs have max_new_tokens, DPO ones a reference."""
    if c is None:
        return "dpo"
    if "task" in c:
        return c.task
    return "sample" if "max_new_tokens" in c else "dpo" if "reference" in c else "sft"


def main(argv: list[str]) -> int:
    import jax

    from spar_jax import configs, models, plan, sharding

    argv, overrides = configs.split_argv(argv)
    args = _parser().parse_args(argv)
    if overrides and not args.config:
        raise ConfigError(f"{overrides[0]} overrides a config file: pass --config configs/X.py")
    c = configs.load(args.config, overrides) if args.config else None
    get = lambda key, default: c[key] if c is not None and key in c else default  # noqa: E731

    spec = args.preset or get("model", "") or "tiny"
    if args.preset and args.preset not in models.PRESETS:
        raise ConfigError(f"--preset {args.preset!r}: known presets {sorted(models.PRESETS)}")
    remat = args.remat or get("remat", "none")
    dtype = args.dtype or get("compute_dtype", None) or get("dtype", "float32")
    cfg = model_config(spec).replace(
        remat_policy=remat, dtype=dtype, attention=get("attention", "auto")
    )
    task = args.task or _default_task(c)
    mesh_arg = args.mesh or ",".join(str(x) for x in get("mesh", (1, -1, 1)))
    devices = args.devices or jax.device_count()
    mesh_shape = sharding.mesh_shape([int(x) for x in mesh_arg.strip("()").split(",")], devices)
    batch_size = args.batch_size or get("batch_size", 0) or get("max_batch", 8)
    length = args.length or get("max_length", 2048)
    result = plan.plan(
        cfg,
        mesh_shape,
        task=task,
        batch_size=batch_size,
        length=length,
        grad_accum_steps=args.grad_accum_steps or get("grad_accum_steps", 1),
        chunk_size=get("chunk_size", 4096),
        reference=get("reference", "precompute"),
    )
    device_bytes = None
    if args.device_gib:
        device_bytes = args.device_gib * plan.GiB
    elif args.device:
        device_bytes = plan.DEVICE_GIB[args.device] * plan.GiB
    print(f"model {spec}: {models.count_params(cfg):,} parameters, remat {remat}, compute {dtype}")
    print(result.format(device_bytes))
    return 0 if device_bytes is None or result.fits(device_bytes) else 1
