r"""IFEval on a checkpoint: greedy answers to the 541 prompts, scored with the official checks.

    python -m spar_jax eval ifeval --config configs/eval_ifeval.py \
        --config.model=/ckpt/Meta-Llama-3-8B-Instruct --config.output_dir=runs/ifeval_llama3

Writes `responses.jsonl` (the official {"prompt", "response"} format, so
`python -m spar_jax eval ifeval --responses runs/ifeval_llama3/responses.jsonl`
scores it again) and `metrics.json` (lm-eval's four metric names, the
per-type table, per-prompt verdicts). Needs NLTK's punkt_tab data (NLTK_DATA).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""  # Hugging Face or native checkpoint directory (required)
    c.tokenizer = ""  # tokenizer directory; "" = the model directory (a native dir needs one)
    c.dtype = "bfloat16"  # float32 | bfloat16 | float16
    c.input = ""  # "" = the copy bundled with spar_jax; a local JSONL; or "google/IFEval"
    c.limit = 0  # answer only the first `limit` prompts (0 = all); scored as a partial run
    c.system_prompt = ""  # prepended as a system turn when not empty
    c.max_new_tokens = 1280  # greedy decoding, as in the SPaR paper's IFEval runs
    c.max_batch = 64  # decode rows per compiled batch
    c.max_cache_gib = 0.0  # KV-cache budget per batch in GiB; 0 = no limit
    # Sampler programs (see sampling.generate): a CPU run of many small calls compiles
    # fewer programs with fixed_slots=True and min_prefix=1 << 30; accelerators keep these.
    c.fixed_slots = False
    c.min_prefix = 16
    c.output_dir = "runs/eval_ifeval"  # responses.jsonl and metrics.json go here
    return c
