"""Greedy sampling with weights sharded over a (2, 1, 4) mesh gives the single-device tokens."""

import jax
import numpy as np

from spar_jax import models, sampling, sharding


def test_greedy_tokens_on_mesh_equal_single_device():
    cfg = models.preset("tiny", vocab_size=128)
    params = models.init_params(cfg, jax.random.key(3))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 128, n).tolist() for n in (5, 9, 3, 12, 7, 4, 8, 6)]
    sp = sampling.SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=(0,))
    want = sampling.generate(cfg, params, prompts, sp, n=1)

    mesh = sharding.make_mesh((2, 1, 4))
    placed = jax.device_put(params, sharding.param_shardings(cfg, mesh, sharding.SAMPLE_RULES))
    assert placed["layers"]["attn"]["q"].addressable_shards[0].data.shape[2] == cfg.num_heads // 4
    with sharding.context(mesh, sharding.SAMPLE_RULES):
        got = sampling.generate(cfg, placed, prompts, sp, n=1)
    assert got.tokens == want.tokens
    np.testing.assert_allclose(
        np.concatenate(got.logprobs), np.concatenate(want.logprobs), atol=1e-4
    )
