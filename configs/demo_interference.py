"""The interfering-factor experiment (SPaR, Figure 4, task 1) on the synthetic world.

    python -m spar_jax interference --config configs/demo_interference.py --workdir runs/interf

From the demo's seed model, DPO on independently sampled (passing > failing) pairs against
DPO on (tree-search refinement > failed answer) pairs, on free-case character prompts, the
same number of pairs and settings for both; task success and the upper-case share of the
answers are measured every `eval_every` steps (spar_jax.tasks.interference).
"""

import os

import ml_collections

from spar_jax import configs, tasks

HERE = os.path.dirname(__file__)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = os.path.join(os.path.dirname(tasks.__file__), "seed_model")
    c.tokenizer = ""  # "" = the model dir
    c.seed = 0
    c.prompts = 256  # free-case character prompts to sample and refine
    c.eval_prompts = 48  # held-out free-case character prompts
    c.samples = 4  # independent answers per prompt
    c.temperature = 1.0
    c.top_p = 1.0
    c.max_new_tokens = 32  # the longest answer ("a a a a a b b b b b") is 10 letters
    c.dtype = "float32"
    c.max_batch = 32
    c.fixed_slots = True  # fewer programs to compile (see configs/demo.py)
    c.min_prefix = 1 << 30

    # Refinement of failed answers: the model refines, the rule verifier judges.
    c.refine = ml_collections.ConfigDict()
    c.refine.temperature = 0.7
    c.refine.top_p = 1.0
    c.refine.max_new_tokens = 112
    c.refine.retries = 3
    c.judge = ml_collections.ConfigDict()
    c.judge.tie_retries = 1  # one rule vote never ties
    c.tree = ml_collections.ConfigDict()
    c.tree.strategy = "bfs"
    c.tree.branch = 3
    c.tree.select_branch = 2
    c.tree.max_depth = 2
    c.tree.end_gate = 0.5
    c.tree.selection = "greedy"
    c.tree.max_nodes = 16

    c.train = configs.load(os.path.join(HERE, "dpo_demo.py"))
    c.train.optimizer.learning_rate = 2e-4
    c.train.batch_size = 8
    c.train.epochs = 4
    c.train.max_length = 96
    c.train.pad_to_multiple = 32
    c.train.fast_compile = True
    c.train.export = ()
    c.train.progress = True
    c.eval_every = 4  # steps between evaluations of each arm
    return c
