"""SPaR refiner SFT round for GLM-4-9B-Chat (judgments and refinements; official configs).

    python -m spar_jax train-sft --config configs/sft_glm4_9b.py \
        --config.model=/ckpt/glm-4-9b-chat-hf --config.data=/data/round1_refiner.jsonl

lr 2e-6, constant schedule after warmup, loss on assistant turns only (the refine prompt is a
3-turn chat: the loss is on the last assistant turn), bfloat16 compute with float32 master
weights, full remat, fsdp over all devices.
"""

import os

from spar_jax import configs


def get_config():
    c = configs.load(os.path.join(os.path.dirname(__file__), "sft_demo.py"))
    c.model = "/ckpt/glm-4-9b-chat-hf"
    c.tokenizer = ""
    c.data = "/data/spar/round1/refiner_sft.jsonl"
    c.toy_data = False
    c.out_dir = "runs/spar_glm4_9b/round1/refiner"
    c.optimizer.learning_rate = 2e-6
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_ratio = 0.1
    c.train_on = "last"
    c.batch_size = 64
    c.grad_accum_steps = 8
    c.max_length = 2048
    c.pad_to_multiple = 128
    c.epochs = 1
    c.compute_dtype = "bfloat16"
    c.remat = "full"
    c.attention = "auto"  # auto (cuDNN flash on GPU in 16-bit, else xla) | xla | cudnn
    c.scan_unroll = 1  # layers per scan iteration; >= layers unrolls (faster, slower compile)
    c.mesh = (1, -1, 1)
    c.checkpoint_every = 50
    c.export = ("native", "hf")
    return c
