"""The tiny tokenizer and LLaMA of the synthetic world, and the files the seed SFT starts from.

* ``build_tokenizer(out_dir)``: a byte-level BPE trained locally (well under a second) on
  texts of the world (prompts, answers, judge and refine conversations), with the LLaMA-3
  special tokens, so the LLaMA-3 chat format applies. Saved as a transformers tokenizer.
* ``model_config(vocab_size, size)``: LLaMA configs of a few million parameters.
* ``write_init(out_dir, ...)``: tokenizer + randomly initialised model in one Hugging Face
  directory (``config.json``, ``model.safetensors``, tokenizer files): the ``model`` of
  ``configs/demo_seed_sft.py``.
* ``write_seed(out_dir, ...)``: ``init/``, ``seed_sft.jsonl`` (the teacher's rows) and
  ``eval_prompts.jsonl`` (held-out prompts of another seed), all deterministic in the seed.

    python -m spar_jax.tasks write-seed runs/demo_seed
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np

from spar_jax.tasks import teacher, world

SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

# name -> (hidden, layers, heads, kv heads, ffw); head_dim = hidden / heads.
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "xs": (96, 2, 4, 2, 256),  # ~0.4M parameters
    "s": (128, 4, 4, 2, 352),  # ~1M
    "m": (192, 4, 6, 2, 512),  # ~2.2M
    "l": (256, 6, 8, 4, 704),  # ~5M
}


def corpus(seed: int = 0, n: int = 300) -> list[str]:
    """Texts the tokenizer is trained on: every kind of conversation of the world."""
    from spar_jax.spar import prompts

    rows = world.make_prompts(n, seed=10_000 + seed)
    texts = [prompts.JUDGE_TEMPLATE, prompts.REFINE_REQUEST]
    for sft in teacher.seed_rows(rows, seed, error_rate=0.5):
        texts += [m["content"] for m in sft["messages"]]
    return texts


def build_tokenizer(out_dir: str, *, vocab_size: int = 1024, seed: int = 0) -> str:
    """Trains the world's byte-level BPE and saves it to ``out_dir``; returns ``out_dir``."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def model_config(vocab_size: int, size: str = "m", *, max_positions: int = 1024) -> Any:
    """A LLaMA ``ModelConfig`` of size ``size`` (``SIZES``) for a ``vocab_size`` tokenizer."""
    from spar_jax import models

    if size not in SIZES:
        raise ValueError(f"size={size!r} is unknown; use one of {sorted(SIZES)}")
    hidden, layers, heads, kv, ffw = SIZES[size]
    return models.ModelConfig(
        family="llama",
        vocab_size=-(-vocab_size // 64) * 64,
        hidden_size=hidden,
        intermediate_size=ffw,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hidden // heads,
        rope_theta=10000.0,
        max_position_embeddings=max_positions,
    )


def init_params(cfg: Any, seed: int = 0) -> Any:
    """Random params (weights normal(0, 0.02), norm scales 1), drawn with numpy: no compile."""
    import jax

    from spar_jax import models

    rng = np.random.default_rng(seed)

    def draw(path, shape):
        in_norm = any("norm" in str(getattr(k, "key", k)) for k in path)
        value = np.ones(shape.shape) if in_norm else rng.normal(0.0, 0.02, shape.shape)
        return np.asarray(value, shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, models.param_shapes(cfg))


def write_init(out_dir: str, *, size: str = "m", vocab_size: int = 1024, seed: int = 0) -> str:
    """Tokenizer and random model in one Hugging Face directory; returns ``out_dir``."""
    from spar_jax import models
    from spar_jax.tokenizer import Tokenizer

    build_tokenizer(out_dir, vocab_size=vocab_size, seed=seed)
    tok = Tokenizer.load(out_dir)
    cfg = model_config(tok.vocab_size, size)
    cfg = cfg.replace(
        bos_token_id=tok.encode("<|begin_of_text|>", parse_special=True)[0],
        eos_token_ids=tuple(tok.stop_token_ids),
    )
    models.save_hf(cfg, init_params(cfg, seed), out_dir)
    return out_dir


def grouped(rows: list[dict], batch_size: int, seed: int) -> list[dict]:
    """``rows`` shuffled in runs of ``batch_size`` rows of one role (same number of turns,
    so similar lengths), the runs in random order: read in order (``shuffle=False``) each
    batch pads to its own role's length instead of the longest role's (3-4x less padding
    for actor batches)."""
    rng = random.Random(f"grouped-{seed}")
    by_role: dict[int, list[dict]] = {}
    for row in rows:
        by_role.setdefault(len(row["messages"]), []).append(row)
    runs, rest = [], []
    for members in by_role.values():
        rng.shuffle(members)
        cut = len(members) - len(members) % batch_size
        runs += [members[i : i + batch_size] for i in range(0, cut, batch_size)]
        rest += members[cut:]
    rng.shuffle(runs)
    return [row for run in runs for row in run] + rest


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_seed(
    out_dir: str,
    *,
    num_prompts: int = 600,
    num_eval: int = 90,
    error_rate: float = 0.4,
    size: str = "m",
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, str]:
    """The seed SFT inputs under ``out_dir``: ``init/``, ``seed_sft.jsonl`` (in ``grouped``
    order for batches of ``batch_size``), ``eval_prompts.jsonl``; returns their paths."""
    paths = {
        "init": os.path.join(out_dir, "init"),
        "sft": os.path.join(out_dir, "seed_sft.jsonl"),
        "eval_prompts": os.path.join(out_dir, "eval_prompts.jsonl"),
    }
    os.makedirs(out_dir, exist_ok=True)
    write_init(paths["init"], size=size, seed=seed)
    rows = teacher.seed_rows(world.make_prompts(num_prompts, seed), seed, error_rate=error_rate)
    _write_jsonl(paths["sft"], grouped(rows, batch_size, seed))
    _write_jsonl(
        paths["eval_prompts"], world.make_prompts(num_eval, seed=world.HELD_OUT_SEED + seed)
    )
    return paths
