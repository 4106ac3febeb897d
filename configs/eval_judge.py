r"""Judge accuracy of a refiner: its verdicts on labelled (prompt, response, label) rows.

    python -m spar_jax eval judge --config configs/eval_judge.py \
        --config.model=/ckpt/refiner --config.data=labelled.jsonl

`data`: JSONL rows {"prompt", "response", "label": 1 | 0}, the metrics.json
of `eval ifeval` (labels = the official checks' prompt-level strict verdicts),
or "tasks": `num_rows` synthetic-world prompts with teacher answers, half of
them with a planted error, labelled by the rule verifiers.
Prints accuracy and F1 with majority voting over each number of votes.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""  # the refiner: Hugging Face or native checkpoint directory (required)
    c.tokenizer = ""  # "" = the model directory
    c.dtype = "bfloat16"
    c.data = ""  # labelled JSONL, an `eval ifeval` metrics.json, or "tasks" (required)
    c.num_rows = 200  # rows made when data="tasks" (seeded by `seed`)
    c.votes = (1, 3, 5)  # majority voting over the first k sampled votes, for each k
    c.temperature = 0.7  # the judge's self-play sampling
    c.top_p = 1.0
    c.max_new_tokens = 2048
    c.seed = 0
    c.max_batch = 64
    c.max_cache_gib = 0.0
    # Sampler programs (see sampling.generate): a CPU run of many small calls compiles
    # fewer programs with fixed_slots=True and min_prefix=1 << 30; accelerators keep these.
    c.fixed_slots = False
    c.min_prefix = 16
    c.output = ""  # JSON report written here when set
    return c
