"""The self-play demo: 3 SPaR rounds on the synthetic world, on a CPU, in minutes.

    python -m spar_jax selfplay --config configs/demo.py --workdir runs/demo
    python -m spar_jax selfplay --config configs/demo.py --workdir runs/demo_rule \
        --config.judge.kind=rule                       # control: the rule verifier judges

The actor and refiner start as one tiny LLaMA (`spar_jax/tasks/seed_model`, about 1M
parameters) trained with SFT on the programmatic teacher's seed data: actor answers, judgments
in the judge format and minimal-edit refinements (`python -m spar_jax.tasks write-seed` +
configs/demo_seed_sft.py reproduce it; docs/results.md has the recipe and what it learned).
Each round the model samples answers to the world's prompts, judges them itself, refines the
failed ones by tree search, and trains: the actor by DPO on (refined > failed) pairs, the
refiner by SFT on its judgments and refinements. Before the first round and after each one,
the actor's greedy answers to held-out prompts are checked by the rule verifiers and the
refiner judges held-out teacher answers against the verifiers' labels.

Outputs in the workdir: report.md (the per-round table), summary.png (the plot),
summary.json, and every stage's files under round_<t>/. Rerunning continues a killed run.
"""

import os

import ml_collections

from spar_jax import configs, tasks

HERE = os.path.dirname(__file__)
SEED_MODEL = os.path.join(os.path.dirname(tasks.__file__), "seed_model")


def get_config() -> ml_collections.ConfigDict:
    c = configs.load(os.path.join(HERE, "spar_llama3_8b.py"))
    c.actor = SEED_MODEL
    c.refiner = ""
    c.tokenizer = ""
    c.prompts = "tasks"  # the synthetic world, drawn with the run's seed
    c.max_prompts = 40
    c.rounds = 3
    c.seed = 0

    c.dtype = "float32"
    c.mesh = (1, -1, 1)
    c.max_batch = 32
    # Compiling dominates a CPU run of a tiny model: every sampler call decodes all 32 slots
    # and no prompt head is copied between slots, which halves the programs compiled.
    c.fixed_slots = True
    c.min_prefix = 1 << 30
    c.chunk_prompts = 48

    c.actor_sampling.n = 4
    c.actor_sampling.max_new_tokens = 48  # the longest world answer is ~35 tokens
    c.judge.verifier = "spar_jax.tasks:check"  # used with --config.judge.kind=rule (control)
    c.judge.votes = 3
    c.judge.max_new_tokens = 80  # a judgment of three constraints is ~60 tokens
    c.refine.max_new_tokens = 112  # reflection + the refined answer in [[start]] [[end]]
    c.tree.branch = 2
    c.tree.select_branch = 1
    c.tree.max_depth = 2
    c.tree.max_nodes = 16

    for name in ("refine", "judge_pass", "judge_fail", "actor_no", "actor_yes"):
        c.data[name] = 200

    c.train_actor = configs.load(os.path.join(HERE, "dpo_demo.py"))
    c.train_actor.toy_data = False
    c.train_actor.optimizer.learning_rate = 2e-4
    c.train_actor.batch_size = 8
    c.train_actor.epochs = 2
    c.train_actor.max_length = 128
    c.train_actor.pad_to_multiple = 64

    c.train_refiner = configs.load(os.path.join(HERE, "sft_demo.py"))
    c.train_refiner.toy_data = False
    c.train_refiner.train_on = "last"  # a refine row's critique turn is always "No"
    c.train_refiner.optimizer.learning_rate = 2e-4
    c.train_refiner.batch_size = 8
    c.train_refiner.epochs = 1
    c.train_refiner.max_length = 512
    c.train_refiner.pad_to_multiple = 128
    for t in (c.train_actor, c.train_refiner):
        t.resume = True
        t.export = ("native",)
    c.train_actor.fast_compile = True  # short rows: compiling dominates
    c.train_refiner.fast_compile = False  # 512-token rows: unoptimised steps cost 4x more

    c.eval.actor_tasks = 48  # held-out world prompts, greedy, rule-verified
    c.eval.judge_data = "tasks"  # held-out teacher answers, labelled by the verifiers
    c.eval.judge_votes = (1, 3)
    c.eval.limit = 48
    c.eval.max_new_tokens = 48
    c.eval.judge_max_new_tokens = 80
    return c
