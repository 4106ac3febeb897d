"""A tiny, learnable toy world for the demo configs and the trainer tests (built locally).

* ``build_tokenizer(dir)``: a byte-level BPE trained in well under a second on the toy texts,
  with the LLaMA-3 chat special tokens, saved as a transformers tokenizer directory.
* ``dpo_records(n)``: preference pairs whose chosen response always ends "... Done." and whose
  rejected one ends "... Nope." (otherwise identical), so a model can learn the preference.
* ``sft_records(n)``: "repeat these words" conversations, a copying task whose loss falls fast.
* ``write_demo(dir)``: all three on disk (``tokenizer/``, ``dpo.jsonl``, ``sft.jsonl``).
* ``dpo_token_batch`` / ``sft_token_batch``: the same two tasks directly as token batches in
  the batch contract (no tokenizer), for unit tests and benchmarks.
* ``with_toy_data(config, kind)``: a demo config with the toy world filled in.

Real models and data never pass through here: ``training.model_io`` loads models (a preset's
random weights included) and ``training.records`` reads data files.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np

_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
_WORDS = (
    "apple river stone cloud green small quick blue light paper music table window garden "
    "orange silver winter summer yellow happy"
).split()


def _phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def dpo_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` pairs in the SPaR / LLaMA-Factory format; chosen ends "Done.", rejected "Nope."."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = f"Describe item {i}: {_phrase(rng, 3)}."
        body = f"Item {i} is {_phrase(rng, rng.randint(2, 5))}."
        out.append(
            {
                "messages": [{"role": "user", "content": prompt}],
                "chosen": {"role": "assistant", "content": f"{body} Done."},
                "rejected": {"role": "assistant", "content": f"{body} Nope."},
            }
        )
    return out


def sft_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` conversations: the user lists words, the assistant repeats them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = _phrase(rng, rng.randint(2, 6))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"Repeat: {words}"},
                    {"role": "assistant", "content": words},
                ]
            }
        )
    return out


def _corpus() -> list[str]:
    rng = random.Random(1)
    texts = [_phrase(rng, 8) for _ in range(200)]
    texts += ["Describe item 12: Item 3 is Done. Nope. Repeat: user assistant system\n\n"] * 20
    return texts


def build_tokenizer(out_dir: str, *, vocab_size: int = 400) -> str:
    """Trains a byte-level BPE on the toy texts and saves it with LLaMA-3 specials; the dir."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_demo(out_dir: str, *, num_dpo: int = 64, num_sft: int = 64, seed: int = 0) -> dict:
    """Writes the toy tokenizer and datasets under ``out_dir`` (once); returns their paths."""
    paths = {
        "tokenizer": os.path.join(out_dir, "tokenizer"),
        "dpo": os.path.join(out_dir, "dpo.jsonl"),
        "dpo_eval": os.path.join(out_dir, "dpo_eval.jsonl"),
        "sft": os.path.join(out_dir, "sft.jsonl"),
    }
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.isfile(os.path.join(paths["tokenizer"], "tokenizer.json")):
        build_tokenizer(paths["tokenizer"])
    if not os.path.isfile(paths["dpo"]):
        _write_jsonl(paths["dpo"], dpo_records(num_dpo, seed))
    if not os.path.isfile(paths["dpo_eval"]):
        _write_jsonl(paths["dpo_eval"], dpo_records(max(num_dpo // 4, 8), seed + 1))
    if not os.path.isfile(paths["sft"]):
        _write_jsonl(paths["sft"], sft_records(num_sft, seed))
    return paths


# --- Token-level toy batches (no tokenizer), in the batch contract of ``training.data`` -------


def _row(tokens: list[int], targets: list[bool], length: int) -> tuple[list, list, list]:
    pad = length - len(tokens)
    return tokens + [0] * pad, [True] * len(tokens) + [False] * pad, targets + [False] * pad


def dpo_token_batch(
    rng: np.random.Generator,
    batch: int,
    length: int,
    vocab: int,
    *,
    good: int = 3,
    bad: int = 4,
    padding_rows: int = 0,
) -> dict[str, np.ndarray]:
    """A DPO batch ``[batch, length]`` of random prompts and responses that differ only in
    their last token: ``good`` for chosen, ``bad`` for rejected (a learnable preference).

    The last ``padding_rows`` rows are padding (weight 0, index -1). Token ids 0..4 are
    reserved (0 = pad); the rest are drawn from ``[5, vocab)``.
    """
    out: dict[str, list] = {f"{s}_{k}": [] for s in ("chosen", "rejected") for k in _KEYS}
    for _ in range(batch):
        prompt = rng.integers(5, vocab, rng.integers(2, length // 2 + 1)).tolist()
        body = rng.integers(5, vocab, rng.integers(1, length - len(prompt))).tolist()
        for side, last in (("chosen", good), ("rejected", bad)):
            response = [*body, last]
            row = _row(prompt + response, [False] * len(prompt) + [True] * len(response), length)
            for key, value in zip(_KEYS, row, strict=True):
                out[f"{side}_{key}"].append(value)
    return _finish(out, batch, padding_rows)


def sft_token_batch(
    rng: np.random.Generator, batch: int, length: int, vocab: int, *, padding_rows: int = 0
) -> dict[str, np.ndarray]:
    """An SFT batch ``[batch, length]`` of a copy task: prompt ``x 2``, response ``x 1``
    (``2`` separates, ``1`` ends); the loss mask is on the response."""
    out: dict[str, list] = {k: [] for k in _KEYS}
    for _ in range(batch):
        x = rng.integers(5, vocab, rng.integers(1, (length - 2) // 2 + 1)).tolist()
        row = _row([*x, 2, *x, 1], [False] * (len(x) + 1) + [True] * (len(x) + 1), length)
        for key, value in zip(_KEYS, row, strict=True):
            out[key].append(value)
    return _finish(out, batch, padding_rows)


_KEYS = ("tokens", "mask", "loss_mask")


def _finish(out: dict[str, list], batch: int, padding_rows: int) -> dict[str, np.ndarray]:
    arrays = {
        k: np.asarray(v, np.int32 if k.endswith("tokens") else np.bool_) for k, v in out.items()
    }
    real = np.arange(batch) < batch - padding_rows
    for k in arrays:
        if not k.endswith("tokens"):
            arrays[k] &= real[:, None]
    arrays["weight"] = real.astype(np.float32)
    arrays["index"] = np.where(real, np.arange(batch), -1).astype(np.int64)
    return arrays


def with_toy_data(config: Any, kind: str) -> Any:
    """``config`` with the toy world (written under ``config.toy_dir`` once) in its empty
    ``tokenizer`` / ``data`` / ``eval_data`` when ``toy_data`` is on and ``data`` is empty
    (real data always comes with its own tokenizer). ``kind`` is "dpo" or "sft"."""
    if not config.get("toy_data", False) or config.data:
        return config
    config = config.copy_and_resolve_references()
    empty = [k for k in ("tokenizer", "data", "eval_data") if k in config and not config[k]]
    paths = write_demo(config.toy_dir)
    filled = {"tokenizer": paths["tokenizer"], "data": paths[kind], "eval_data": paths["dpo_eval"]}
    for key in empty:
        config[key] = filled[key]
    return config
