"""SPaR self-play on LLaMA-3-8B-Instruct: 3 rounds with the paper's settings.

    python -m spar_jax selfplay --config configs/spar_llama3_8b.py --workdir runs/spar_llama3_8b \
        --config.actor=/ckpt/llama3_8b_sft --config.prompts=/data/spar/prompts.jsonl
    python -m spar_jax selfplay --config configs/spar_llama3_8b.py --workdir runs/spar_llama3_8b \
        --config.tree.branch=4 --config.rounds=4          # any field can be overridden

Rerunning the same command continues where a killed run stopped. Where the values come from
(the paper's released code, thu-coai/SPaR): actor sampling n=5 at temperature 0.9, top_p 0.9,
2048 new tokens (src/infer.sh); judging with 5 votes at temperature 0.7, top_p 1.0, 2048 new
tokens (src/judge.sh); refinement one sample per call at 0.7, top_p 1.0, 3072 new tokens, up to
3 retries of an unparsable one, BFS with branch 3, keep 2, depth 3, end gate 0.5, a 1000-node
budget (src/tree_search.py); refiner-data caps 4000 / 1500 / 1000 / 500 / 2500
(src/process_data.py); the trainers' settings are in configs/dpo_llama3_8b.py (actor) and
configs/sft_glm4_9b.py (refiner, the same official SFT settings for both families).
"""

import os

import ml_collections

from spar_jax import configs

HERE = os.path.dirname(__file__)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.actor = "/ckpt/llama3_8b_sft"  # HF or native checkpoint dir (after the initial SFT)
    c.refiner = ""  # "" = the actor's checkpoint (one model plays both roles in round 1)
    c.tokenizer = ""  # "" = the actor's dir
    c.prompts = "/data/spar/prompts.jsonl"  # JSONL / JSON / Parquet / hub id: rows with "prompt"
    c.max_prompts = 0  # 0 = all
    c.rounds = 3
    c.seed = 0
    c.system_prompt = ""

    # Generation (the sample, judge and search stages).
    c.dtype = "bfloat16"  # weights for generation
    c.mesh = (1, -1, 1)  # (data, fsdp, tensor); generation shards by the "sample" rules
    c.max_batch = 256  # decode rows at once
    c.max_cache_gib = 0.0  # KV-cache budget per sampler call; 0 = no limit
    c.fixed_slots = False  # True: every sampler call decodes max_batch slots (fewer programs)
    c.min_prefix = 16  # shortest shared prompt head reused from another slot's KV cache
    c.chunk_prompts = 256  # prompts (or trees) per resumable chunk of a stage
    c.prompt_overflow = "skip"  # prompt + max_new_tokens past the context: skip | truncate_left
    # JAX's persistent compilation cache, a folder (relative paths are inside the workdir): the
    # trainers' steps compile once for all rounds and a resumed run compiles nothing twice.
    c.compilation_cache = "xla_cache"  # "" = off

    c.actor_sampling = ml_collections.ConfigDict()
    c.actor_sampling.n = 5
    c.actor_sampling.temperature = 0.9
    c.actor_sampling.top_p = 0.9
    c.actor_sampling.max_new_tokens = 2048

    c.judge = ml_collections.ConfigDict()
    c.judge.kind = "model"  # model (the refiner judges) | rule (a verifier function)
    c.judge.verifier = ""  # rule judge: "module:function" taking (prompt row, response)
    c.judge.votes = 5
    c.judge.temperature = 0.7
    c.judge.top_p = 1.0
    c.judge.max_new_tokens = 2048
    c.judge.tie_retries = 3  # inside tree search; data building drops ties

    c.refine = ml_collections.ConfigDict()
    c.refine.temperature = 0.7
    c.refine.top_p = 1.0
    c.refine.max_new_tokens = 3072
    c.refine.retries = 3  # an unparsable refinement is sampled again up to this many times

    c.tree = ml_collections.ConfigDict()
    c.tree.strategy = "bfs"  # bfs | dfs
    c.tree.branch = 3
    c.tree.select_branch = 2
    c.tree.max_depth = 3
    c.tree.end_gate = 0.5
    c.tree.selection = "greedy"  # greedy | sample (in proportion to value)
    c.tree.max_nodes = 1000

    c.data = ml_collections.ConfigDict()  # refiner (RFT) data caps per source
    c.data.refine = 4000  # successful refinement steps
    c.data.judge_pass = 1500  # judgments of tree nodes with end_gate < V < 1, one per tree
    c.data.judge_fail = 1000  # judgments of tree nodes with 0 < V < end_gate, one per tree
    c.data.actor_no = 500  # judgments of actor responses, majority No, not unanimous
    c.data.actor_yes = 2500  # judgments of actor responses, majority Yes, not unanimous

    # The per-round trainers; model, tokenizer, data and out_dir are set by the driver.
    c.train_actor = configs.load(os.path.join(HERE, "dpo_llama3_8b.py"))
    c.train_refiner = configs.load(os.path.join(HERE, "sft_glm4_9b.py"))
    # Optional evaluation of the starting models and of each round's trained models.
    c.eval = ml_collections.ConfigDict()
    c.eval.actor_tasks = 0  # synthetic-world prompts (spar_jax.tasks) for the actor; 0 = off
    c.eval.ifeval = False  # the actor's greedy answers to IFEval, official checks
    c.eval.ifeval_input = ""  # "" = the 541 prompts bundled with spar_jax
    c.eval.judge_data = ""  # labelled {"prompt", "response", "label"} JSONL, or "tasks"
    c.eval.judge_votes = (1, 3, 5)
    c.eval.scaling_prompts = ""  # prompts for greedy vs best-of-N vs tree search, or "tasks"
    c.eval.scaling_budgets = (2, 4, 8, 16)
    c.eval.limit = 0  # prompts / rows per evaluation; 0 = all
    c.eval.max_new_tokens = 1280  # answers and refinements (IFEval's usual budget)
    c.eval.judge_max_new_tokens = 2048
    c.progress = True
    return c
