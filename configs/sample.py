r"""Sample n completions per prompt from a local checkpoint (the actor step of a SPaR round).

    python -m spar_jax sample --config configs/sample.py \
        --config.model=/ckpt/Meta-Llama-3-8B-Instruct \
        --config.prompts=prompts.jsonl --config.output=completions.jsonl --config.n=5

Input rows: {"prompt": "...", "prompt_id": optional}. Output rows (JSONL, one per
prompt): {"prompt_id", "prompt", "completions": [n texts], "finish_reasons": [n],
"num_tokens": [n]}. Defaults are the paper's actor sampling: temperature 0.9,
top_p 0.9, up to 2048 new tokens.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""  # Hugging Face checkpoint directory (required)
    c.tokenizer = ""  # tokenizer directory or sentencepiece .model; "" = the model directory
    c.prompts = ""  # JSONL (or JSON list) of rows with "prompt" and optional "prompt_id"
    c.output = ""  # JSONL written here, one row per prompt
    c.system_prompt = ""  # prepended as a system turn when not empty
    c.dtype = "bfloat16"  # parameters and activations: float32 | bfloat16 | float16

    c.n = 5  # samples per prompt (they share one prefill)
    c.temperature = 0.9  # 0 = greedy
    c.top_p = 0.9
    c.top_k = 0  # 0 = off
    c.max_new_tokens = 2048
    # prompt + max_new_tokens > the model's positions: "skip" (counted) or "truncate_left"
    # (the prompt's oldest tokens are cut, counted); see spar_jax.sampling.context
    c.prompt_overflow = "skip"
    c.stop_token_ids = ()  # extra stop ids, added to the tokenizer's and the model's
    c.seed = 0

    c.max_batch = 64  # decode rows (prompts x n) per compiled batch
    c.max_cache_gib = 0.0  # KV-cache budget per batch in GiB; 0 = no limit
    c.write_every = 1024  # prompts per generate call; output is appended after each
    c.strict = False  # malformed prompt rows: error (True) or skip, count and report (False)
    return c
