"""The sampling engine on a mesh of 8 fake devices gives the single-device tokens.

Slots split over the data axes and KV heads over tensor (the sampling rules); more
requests than slots, so slots are refilled on the mesh.
"""

import jax
import numpy as np

from spar_jax import models, sampling, sharding


def test_engine_on_mesh_equals_single_device():
    cfg = models.preset("tiny", vocab_size=128)
    params = models.init_params(cfg, jax.random.key(3))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 128, n).tolist() for n in (5, 9, 3, 12, 7, 4, 8, 6, 20, 2, 11, 5)]
    greedy = sampling.SamplingParams(max_new_tokens=12, stop_token_ids=(0, 7))
    sampled = sampling.SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10)

    def run(engine_params):
        engine = sampling.Engine(cfg, engine_params, slots=8, max_length=48)
        for i, p in enumerate(prompts):
            sp, n = (greedy, 1) if i % 2 else (sampled, 2)
            engine.submit(p, sp, n=n, rng=jax.random.key(i), tag=i)
        done = {(c.tag, c.sample): c for c in engine.run()}
        return done, engine

    want, _ = run(params)
    mesh = sharding.make_mesh((4, 1, 2))  # slots over data (4), KV heads over tensor (2)
    placed = jax.device_put(params, sharding.param_shardings(cfg, mesh, sharding.SAMPLE_RULES))
    assert placed["layers"]["attn"]["q"].addressable_shards[0].data.shape[2] == cfg.num_heads // 2
    with sharding.context(mesh, sharding.SAMPLE_RULES):
        got, engine = run(placed)
    k = engine.state.k[0]  # [B, S, K, H]
    assert k.addressable_shards[0].data.shape == (8 // 4, k.shape[1], cfg.num_kv_heads // 2, 16)
    assert got.keys() == want.keys() and len(got) == 18
    for key in want:
        assert got[key].tokens == want[key].tokens, key
        np.testing.assert_allclose(got[key].logprobs, want[key].logprobs, atol=1e-4)
