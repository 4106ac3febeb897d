"""SPaR actor DPO round for LLaMA-3-8B-Instruct (the paper's hyper-parameters).

    python -m spar_jax train-dpo --config configs/dpo_llama3_8b.py \
        --config.model=/ckpt/Meta-Llama-3-8B-Instruct --config.data=/data/round1_pairs.jsonl
    python -m spar_jax plan --config configs/dpo_llama3_8b.py --preset llama3_8b --devices 8 --device h100

lr 2e-7, 1 epoch, linear decay with 10% warmup, sigmoid DPO beta 0.1 plus 0.1 x length-
normalised NLL of the chosen response, reference = the round's starting actor (precomputed).
bfloat16 compute with float32 master weights, full remat, weights and optimizer sharded over
all devices (fsdp).

Where the values come from: the paper's released LLaMA-Factory DPO settings (lr 2e-7, 1 epoch,
linear schedule with 10% warmup, pref_beta 0.1, pref_ftx 0.1, cutoff_len 2048, 2 pairs per GPU x
2 accumulation steps on 8 GPUs = 32 pairs per optimizer step). Here batch_size counts pairs per
step over all devices, so 2 micro-batches of 16 pairs give the same 2 pairs per device on 8.
"""

import os

from spar_jax import configs


def get_config():
    c = configs.load(os.path.join(os.path.dirname(__file__), "dpo_demo.py"))
    c.model = "/ckpt/Meta-Llama-3-8B-Instruct"  # HF checkpoint dir or native dir
    c.tokenizer = ""  # the model dir
    c.data = "/data/spar/round1/actor_pairs.jsonl"
    c.eval_data = ""
    c.toy_data = False
    c.out_dir = "runs/spar_llama3_8b/round1/actor"
    c.optimizer.learning_rate = 2e-7
    c.optimizer.schedule = "linear"
    c.optimizer.warmup_ratio = 0.1
    c.loss.name = "sigmoid"
    c.loss.beta = 0.1
    c.loss.ftx_weight = 0.1
    c.batch_size = 32  # official: 2 per GPU x 2 accumulation x 8 GPUs
    c.grad_accum_steps = 2
    c.max_length = 2048
    c.max_prompt_length = 1024
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
