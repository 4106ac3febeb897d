"""SPaR self-play on GLM-4-9B-Chat: 3 rounds with the paper's settings.

    python -m spar_jax selfplay --config configs/spar_glm4_9b.py --workdir runs/spar_glm4_9b \
        --config.actor=/ckpt/glm4_9b_sft --config.prompts=/data/spar/prompts.jsonl

The same recipe as configs/spar_llama3_8b.py (where every value comes from); only the models
differ. The actor's DPO uses the LLaMA-3 DPO settings, which the paper uses for both families.
"""

import os

import ml_collections

from spar_jax import configs

HERE = os.path.dirname(__file__)


def get_config() -> ml_collections.ConfigDict:
    c = configs.load(os.path.join(HERE, "spar_llama3_8b.py"))
    c.actor = "/ckpt/glm4_9b_sft"
    c.prompts = "/data/spar/prompts.jsonl"
    return c
