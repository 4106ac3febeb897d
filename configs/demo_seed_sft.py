"""Seed SFT of the synthetic world's tiny LLaMA: actor, judge and refiner in one model.

These four commands reproduce `spar_jax/tasks/seed_model`, the model the demo starts from
(configs/demo.py), exactly (~50 min on one CPU core):

    python -m spar_jax.tasks write-seed runs/demo_seed      # tokenizer, init model, 24,000 rows
    python -m spar_jax train-sft --config configs/demo_seed_sft.py
    python -m spar_jax convert native-to-hf runs/demo_seed_sft/final_native spar_jax/tasks/seed_model
    cp runs/demo_seed/init/tokenizer*.json spar_jax/tasks/seed_model/

The seed data is written by the programmatic teacher (`spar_jax.tasks.teacher`): actor answers
(40% with a planted error), perfect judgments of correct and failed answers, and minimal-edit
refinements, all in SPaR's judge / refine formats; 8,000 prompts x 3 rows, each seen once.
Measured sizes, steps and success rates are in docs/results.md ("Seed SFT of the demo model").
"""

import ml_collections

SEED_DIR = "runs/demo_seed"


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = f"{SEED_DIR}/init"  # written by `python -m spar_jax.tasks write-seed`
    c.vocab_size = 0
    c.tokenizer = ""  # the model dir
    c.data = f"{SEED_DIR}/seed_sft.jsonl"
    # Only the last assistant turn: a refine row's critique turn always says "No", so training
    # on it too makes 76% of the trained verdicts "No" and the judge learned to answer "No" to
    # everything (docs/results.md); with "last" the trained verdicts are half "Yes".
    c.train_on = "last"
    c.toy_data = False
    c.out_dir = "runs/demo_seed_sft"

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-3  # a random tiny model; the paper's 2e-6 is for 8B
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_ratio = 0.05
    c.optimizer.warmup_steps = 0
    c.optimizer.weight_decay = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-8
    c.optimizer.max_grad_norm = 1.0

    c.batch_size = 8  # = write-seed --batch-size; more steps beat bigger batches here
    c.grad_accum_steps = 1
    c.max_length = 512  # the longest refine conversation is ~450 tokens
    c.max_prompt_length = 0
    c.pad_to_multiple = 64  # actor batches ~64 tokens, judge ~256, refine ~448
    c.epochs = 1  # 3,000 steps over distinct rows: repeating 1,800 rows plateaued (results.md)
    c.max_steps = 0
    c.compute_dtype = "float32"
    c.remat = "none"
    c.attention = "auto"
    c.scan_unroll = 1
    c.chunk_size = 4096
    c.mesh = (1, -1, 1)
    c.sharding_rules = "train"
    c.fast_compile = False  # steps dominate: full XLA optimisation pays for itself

    c.checkpoint_every = 250
    c.keep_checkpoints = 2
    c.async_checkpoint = True
    c.resume = False
    c.export = ("native",)
    c.seed = 0
    c.shuffle = False  # the file is in batches of one role (tasks.model.grouped), in random order
    c.strict = False
    c.progress = True
    return c
