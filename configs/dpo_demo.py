"""DPO demo: a tiny random LLaMA learns a toy preference on the CPU in a few seconds.

    python -m spar_jax train-dpo --config configs/dpo_demo.py
    python -m spar_jax train-dpo --config configs/dpo_demo.py --config.reference=online

With `toy_data` on and `data` / `tokenizer` empty, a toy tokenizer and toy pairs (chosen
responses end "Done.", rejected "Nope.") are written under `toy_dir` first. For a SPaR round
set `model` to the round's actor, `data` to the round's pairs and keep the paper's
hyper-parameters: lr 2e-7, 1 epoch, linear decay with 10% warmup, beta 0.1, ftx 0.1.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "tiny"  # preset name (random init), HF checkpoint dir, or native checkpoint dir
    c.vocab_size = 0  # presets only: 0 = the tokenizer's vocabulary rounded up to 64
    c.tokenizer = ""  # tokenizer dir or sentencepiece .model; "" = the model dir (or toy)
    c.data = ""  # DPO pairs: JSON/JSONL/Parquet file, glob, or a list of them
    c.eval_data = ""  # held-out pairs: implicit-reward margin and accuracy after training
    c.toy_data = True  # fill empty tokenizer / data / eval_data with the toy world
    c.toy_dir = "runs/toy"
    c.out_dir = "runs/dpo_demo"  # metrics.jsonl, loss.png, checkpoints/, final_<format>/

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "sigmoid"  # key of spar_jax.training.preference.PREFERENCE_LOSSES
    c.loss.beta = 0.1
    c.loss.label_smoothing = 0.0
    c.loss.gamma = None  # simpo only
    c.loss.ftx_weight = 0.1  # + ftx x length-normalised NLL of chosen (LLaMA-Factory pref_ftx)
    c.loss.kwargs = ml_collections.ConfigDict()  # extra hyper-parameters of a custom loss
    c.reference = "precompute"  # precompute (one pass before training) | online

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-3  # the paper's actor: 2e-7 (a random tiny model needs more)
    c.optimizer.schedule = "linear"  # linear | constant | cosine, after linear warmup
    c.optimizer.warmup_ratio = 0.1
    c.optimizer.warmup_steps = 0  # overrides warmup_ratio when > 0
    c.optimizer.weight_decay = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.max_grad_norm = 1.0  # 0 = no clipping

    c.batch_size = 8  # pairs per optimizer step
    c.grad_accum_steps = 1  # micro-batches per step (batch_size must divide by it)
    c.max_length = 64  # prompt + response tokens
    c.max_prompt_length = 0  # 0 = never cut the prompt
    c.pad_to_multiple = 16  # batch length rounded up to this (fewer shapes to compile)
    c.epochs = 2
    c.max_steps = 0  # stop early at this step (the schedule keeps its full length); 0 = off
    c.compute_dtype = "float32"  # or bfloat16 (float32 master weights and optimizer)
    c.remat = "none"  # none | full | dots | dots_no_batch
    c.attention = "auto"  # auto (cuDNN flash on GPU in 16-bit, else xla) | xla | cudnn
    c.scan_unroll = 1  # layers per scan iteration; >= layers unrolls (faster, slower compile)
    c.chunk_size = 4096  # vocabulary chunk of the log-softmax
    c.mesh = (1, -1, 1)  # (data, fsdp, tensor) device mesh; -1 = the rest of the devices
    c.sharding_rules = "train"  # spar_jax.sharding rule set, or (logical name, mesh axes) pairs
    c.fast_compile = True  # XLA opt level 0: compiles ~3x faster, runs slower (tiny demos)

    c.checkpoint_every = 0  # steps; 0 = only at the end
    c.keep_checkpoints = 2
    c.async_checkpoint = True
    c.resume = True  # continue from out_dir/checkpoints when it holds one
    c.export = ("native",)  # param-only exports at the end: "native" and/or "hf"
    c.seed = 0
    c.shuffle = True
    c.strict = False  # a malformed record: error (True) or skip, count and report (False)
    c.progress = True
    return c
