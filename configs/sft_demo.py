"""SFT demo: a tiny random LLaMA learns a toy copying task on the CPU in a few seconds.

    python -m spar_jax train-sft --config configs/sft_demo.py

With `toy_data` on and `data` / `tokenizer` empty, a toy tokenizer and toy conversations
("Repeat: <words>" -> "<words>") are written under `toy_dir` first. For the SPaR refiner set
`model` to the round's refiner, `data` to its RFT data and keep the official hyper-parameters:
lr 2e-6, constant schedule with warmup.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "tiny"  # preset name (random init), HF checkpoint dir, or native checkpoint dir
    c.vocab_size = 0  # presets only: 0 = the tokenizer's vocabulary rounded up to 64
    c.tokenizer = ""  # tokenizer dir or sentencepiece .model; "" = the model dir (or toy)
    c.data = ""  # conversations {"messages": [...]}: JSON/JSONL/Parquet file, glob or list
    c.train_on = "all"  # all assistant turns, or only the last one ("last")
    c.toy_data = True  # fill empty tokenizer / data with the toy world
    c.toy_dir = "runs/toy"
    c.out_dir = "runs/sft_demo"  # metrics.jsonl, loss.png, checkpoints/, final_<format>/

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 3e-3  # the paper's refiner: 2e-6 (a random tiny model needs more)
    c.optimizer.schedule = "constant"  # linear | constant | cosine, after linear warmup
    c.optimizer.warmup_ratio = 0.1
    c.optimizer.warmup_steps = 0  # overrides warmup_ratio when > 0
    c.optimizer.weight_decay = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.max_grad_norm = 1.0  # 0 = no clipping

    c.batch_size = 8  # conversations per optimizer step
    c.grad_accum_steps = 1  # micro-batches per step (batch_size must divide by it)
    c.max_length = 64
    c.max_prompt_length = 0  # 0 = never cut the context
    c.pad_to_multiple = 16
    c.epochs = 2
    c.max_steps = 0  # stop early at this step (the schedule keeps its full length); 0 = off
    c.compute_dtype = "float32"  # or bfloat16 (float32 master weights and optimizer)
    c.remat = "none"
    c.attention = "auto"  # auto (cuDNN flash on GPU in 16-bit, else xla) | xla | cudnn
    c.scan_unroll = 1  # layers per scan iteration; >= layers unrolls (faster, slower compile)
    c.chunk_size = 4096
    c.mesh = (1, -1, 1)  # (data, fsdp, tensor) device mesh; -1 = the rest of the devices
    c.sharding_rules = "train"  # spar_jax.sharding rule set, or (logical name, mesh axes) pairs
    c.fast_compile = True  # XLA opt level 0: compiles ~3x faster, runs slower (tiny demos)

    c.checkpoint_every = 0
    c.keep_checkpoints = 2
    c.async_checkpoint = True
    c.resume = True
    c.export = ("native",)
    c.seed = 0
    c.shuffle = True
    c.strict = False
    c.progress = True
    return c
