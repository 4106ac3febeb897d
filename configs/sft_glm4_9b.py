"""SPaR refiner SFT round for GLM-4-9B-Chat (judgments and refinements; official configs).

    python -m spar_jax train-sft --config configs/sft_glm4_9b.py \
        --config.model=/ckpt/glm-4-9b-chat-hf --config.data=/data/round1_refiner.jsonl

The official SFT settings (the paper's released LLaMA-Factory config, used for the initial SFT
and for every refiner round): lr 2e-6, 5 epochs, constant schedule after 10% warmup, cutoff
4096 tokens, loss on every assistant turn (LLaMA-Factory trains all assistant turns of a
multi-turn chat), 2 examples per GPU x 4 accumulation steps on 8 GPUs = 64 per optimizer step
(here: 4 micro-batches of 16, the same 2 per device on 8). bfloat16 compute with float32 master
weights, full remat, fsdp over all devices (memory choices, not recipe ones).
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
    c.train_on = "all"  # every assistant turn, as LLaMA-Factory
    c.batch_size = 64  # official: 2 per GPU x 4 accumulation x 8 GPUs
    c.grad_accum_steps = 4
    c.max_length = 4096  # official cutoff_len
    c.pad_to_multiple = 128
    c.epochs = 5
    c.compute_dtype = "bfloat16"
    c.remat = "full"
    c.attention = "auto"  # auto (cuDNN flash on GPU in 16-bit, else xla) | xla | cudnn
    c.scan_unroll = 1  # layers per scan iteration; >= layers unrolls (faster, slower compile)
    c.mesh = (1, -1, 1)
    c.checkpoint_every = 50
    c.export = ("native", "hf")
    return c
