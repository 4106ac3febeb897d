r"""Inference-time scaling: greedy vs best-of-N vs tree-search refinement per response budget.

    python -m spar_jax eval scaling --config configs/eval_scaling.py \
        --config.model=/ckpt/spar_iter3 --config.limit=100

The actor answers; the refiner (the same model unless `refiner` is set) judges
for best-of-N and refines for BFS / DFS. Writes scaling.json, scaling.md (the
table), scaling.png (score vs responses generated) and answers.jsonl to
output_dir. prompts: "ifeval" (the bundled 541, scored with the official
checks; needs NLTK_DATA), "tasks" (the synthetic world, scored by its rule
verifiers), or a JSONL of IFEval input rows or world rows.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ""  # actor: Hugging Face or native checkpoint directory (required)
    c.refiner = ""  # refiner checkpoint; "" = the actor (one model plays both roles)
    c.tokenizer = ""  # "" = the model directory
    c.dtype = "bfloat16"
    c.prompts = "ifeval"  # "ifeval" | "tasks" | a JSONL path
    c.limit = 100  # prompts used (0 = all)
    c.budgets = (2, 4, 8, 16)  # responses per prompt to compare at
    c.methods = ("greedy", "best_of_n", "bfs", "dfs")
    c.max_new_tokens = 1280  # actor answers
    c.temperature = 0.9  # best-of-N samples (the actor's self-play sampling)
    c.top_p = 0.9
    c.n_votes = 5  # judge votes per response
    c.judge_temperature = 0.7
    c.judge_max_new_tokens = 2048
    c.refine_temperature = 0.7
    c.refine_max_new_tokens = 3072
    c.branch = 3  # tree shape (official BFS: 3 / 2 / 3)
    c.select_branch = 2
    c.max_depth = 3
    c.seed = 0
    c.max_batch = 64
    c.max_cache_gib = 0.0
    # Sampler programs (see sampling.generate): a CPU run of many small calls compiles
    # fewer programs with fixed_slots=True and min_prefix=1 << 30; accelerators keep these.
    c.fixed_slots = False
    c.min_prefix = 16
    c.output_dir = "runs/eval_scaling"
    return c
