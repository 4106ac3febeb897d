r"""`python -m spar_jax sample`: n completions per prompt of a JSONL file.

    python -m spar_jax sample --config configs/sample.py \
        --config.model=PATH --config.prompts=in.jsonl --config.output=out.jsonl

Reads rows with `prompt` (and optional `prompt_id`), applies the tokenizer's
chat template, samples with `sampling.generate` and writes one JSONL row per
prompt: {"prompt_id", "prompt", "completions", "finish_reasons", "num_tokens"}.
Malformed rows are counted and reported (or an error with `--config.strict=True`).
A prompt too long for the model's positions (prompt + max_new_tokens >
max_position_embeddings) is skipped and counted, or with
`--config.prompt_overflow=truncate_left` cut from the left and counted
(`spar_jax.sampling.context`). Only process 0 writes the output file.
Every field of configs/sample.py can be overridden with `--config.<field>=value`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

from spar_jax.configs import ConfigError
from spar_jax.errors import SparError

log = logging.getLogger(__name__)


class PromptFileError(SparError, ValueError):
    """A prompts file we cannot read, or a malformed row under `strict`."""


@dataclasses.dataclass
class PromptRow:
    prompt_id: Any
    prompt: str


def read_prompts(path: str, strict: bool = False) -> tuple[list[PromptRow], list[str]]:
    """Rows of a JSONL file (or a JSON list) with a non-empty string `prompt`.

    Returns:
      (rows, problems): `problems` names each skipped row ("line 3: not JSON").
      Under `strict` the first problem raises PromptFileError instead.
    """
    if not os.path.isfile(path):
        raise PromptFileError(f"{path}: prompts file not found (set --config.prompts=FILE.jsonl)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            records = list(enumerate(json.loads(text), start=1))
        except (json.JSONDecodeError, TypeError) as e:
            raise PromptFileError(f"{path}: not a JSON list of rows ({e}); use JSONL") from None
        where = "row"
    else:
        records = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        where = "line"

    rows, problems = [], []
    for number, record in records:
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except json.JSONDecodeError:
                problems.append(f"{where} {number}: not JSON")
                continue
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"{where} {number}: no non-empty string 'prompt'")
            continue
        rows.append(PromptRow(record.get("prompt_id", number - 1), prompt))
    if strict and problems:
        raise PromptFileError(f"{path}: {problems[0]} (strict=True; fix the row or drop strict)")
    return rows, problems


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from spar_jax import configs

    return run(configs.from_argv(argv, "configs/sample.py"))


def run(config) -> int:
    """Samples for every prompt of `config.prompts`; writes `config.output` (process 0)."""
    for key in ("model", "prompts", "output"):
        if not config[key]:
            raise ConfigError(f"--config.{key} is required (see configs/sample.py)")
    rows, problems = read_prompts(config.prompts, config.strict)

    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from spar_jax import models, sampling, tokenizer
    from spar_jax.sampling import context

    tok = tokenizer.Tokenizer.load(config.tokenizer or config.model)
    encoded, ids = [], []
    for row in rows:
        messages = [{"role": "user", "content": row.prompt}]
        if config.system_prompt:
            messages.insert(0, {"role": "system", "content": config.system_prompt})
        try:
            ids.append(tok.encode_prompt(messages))
        except (tokenizer.ConversationError, tokenizer.ChatTemplateError) as e:
            if config.strict:
                raise PromptFileError(f"prompt_id {row.prompt_id!r}: {e}") from None
            problems.append(f"prompt_id {row.prompt_id!r}: {e}")
            continue
        encoded.append(row)
    if problems:
        shown = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        log.warning("%s: skipped %d malformed rows: %s", config.prompts, len(problems), shown)

    cfg, params = models.load_hf(config.model, dtype=jnp.dtype(config.dtype))
    ids, index, fit = context.fit_prompts(
        ids,
        max_new_tokens=config.max_new_tokens,
        max_positions=cfg.max_position_embeddings,
        policy=config.prompt_overflow,
    )
    kept = [encoded[i] for i in index]
    stop = tuple(dict.fromkeys((*tok.stop_token_ids, *cfg.eos_token_ids, *config.stop_token_ids)))
    sp = sampling.SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_new_tokens=config.max_new_tokens,
        stop_token_ids=stop,
    )
    budget = int(config.max_cache_gib * 2**30) or None
    rng = jax.random.key(config.seed)
    start, generated = time.perf_counter(), 0
    writer = jax.process_index() == 0  # every process samples; one writes
    if writer:
        os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
    with (
        open(config.output if writer else os.devnull, "w", encoding="utf-8") as f,
        tqdm(total=len(kept), desc="sample", unit="prompt", disable=None) as bar,
    ):
        for lo in range(0, len(kept), config.write_every):
            block = slice(lo, lo + config.write_every)
            out = sampling.generate(
                cfg,
                params,
                ids[block],
                sp,
                rng=jax.random.fold_in(rng, lo),
                n=config.n,
                max_batch=config.max_batch,
                max_cache_bytes=budget,
                progress=bar.update,
            )
            generated += out.stats.generated_tokens
            for i, row in enumerate(kept[block]):
                samples = out.samples(i)
                record = {
                    "prompt_id": row.prompt_id,
                    "prompt": row.prompt,
                    "completions": [tok.decode(s, skip_special_tokens=True) for s in samples],
                    "finish_reasons": out.finish_reason[i * config.n : (i + 1) * config.n],
                    "num_tokens": [len(s) for s in samples],
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
    seconds = time.perf_counter() - start
    print(
        f"wrote {len(kept)} prompts x {config.n} samples to {config.output} "
        f"({generated} tokens, {generated / max(seconds, 1e-9):.1f} tokens/s); "
        f"skipped {len(problems)} malformed rows of {config.prompts}; "
        f"context: {fit.summary()}"
    )
    return 0
