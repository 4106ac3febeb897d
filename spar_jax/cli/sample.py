r"""`python -m spar_jax sample`: n completions per prompt of a JSONL file.

    python -m spar_jax sample --config configs/sample.py \
        --config.model=PATH --config.prompts=in.jsonl --config.output=out.jsonl

Reads prompts with `training.records.load_prompts` (rows with `prompt` and
optional `prompt_id`; also alpaca / messages / sharegpt rows), applies the tokenizer's
chat template, samples with `sampling.generate` and writes one JSONL row per
prompt: {"prompt_id", "prompt", "completions", "finish_reasons", "num_tokens"}.
Malformed rows (a line that is not JSON, a cut last line, a row without a prompt)
are counted and reported with their line numbers (an error with `--config.strict=True`).
A prompt too long for the model's positions (prompt + max_new_tokens >
max_position_embeddings) is skipped and counted, or with
`--config.prompt_overflow=truncate_left` cut from the left and counted
(`spar_jax.sampling.context`). Only process 0 writes the output file.
Every field of configs/sample.py can be overridden with `--config.<field>=value`.
"""

from __future__ import annotations

import json
import os
import time

from spar_jax.configs import ConfigError


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

    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from spar_jax import models, sampling, tokenizer
    from spar_jax.sampling import context
    from spar_jax.training import records

    rows, report = records.load_prompts(config.prompts, strict=config.strict)
    tok = tokenizer.Tokenizer.load(config.tokenizer or config.model)
    encoded, ids = [], []
    for i, row in enumerate(rows):
        messages = [{"role": "user", "content": row.prompt}]
        if config.system_prompt:
            messages.insert(0, {"role": "system", "content": config.system_prompt})
        try:
            ids.append(tok.encode_prompt(messages))
        except (tokenizer.ConversationError, tokenizer.ChatTemplateError) as e:
            error = records.RecordError("tokenizer_error", str(e), index=i)
            if config.strict:
                raise error from None
            report.skip(i, error)
            continue
        encoded.append(row)

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
    if report.num_skipped:
        print(f"{config.prompts}: {report.summary()}")
    print(
        f"wrote {len(kept)} prompts x {config.n} samples to {config.output} "
        f"({generated} tokens, {generated / max(seconds, 1e-9):.1f} tokens/s); "
        f"skipped {report.num_skipped} malformed rows of {config.prompts}; "
        f"context: {fit.summary()}"
    )
    return 0
