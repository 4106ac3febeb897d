"""The continuous-batching engine on tiny random LLaMA / GLM models (CPU).

Every test queues more requests than the engine has slots, so slots are refilled while
other samples are still decoding.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from spar_jax import models, sampling
from tests.hf_models import save_tiny
from tests.test_sampling import hf_greedy

NEW = 12


def ragged_prompts(vocab: int, count: int, seed: int, lo: int = 2, hi: int = 30):
    rng = np.random.default_rng(seed)
    return [[1, *rng.integers(3, vocab, rng.integers(lo, hi)).tolist()] for _ in range(count)]


@pytest.fixture(scope="module", params=["llama", "glm"])
def model(request, tmp_path_factory):
    hf, path = save_tiny(str(tmp_path_factory.mktemp(request.param)), request.param)
    cfg, params = models.load_hf(path)
    return hf, cfg, params


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    hf, path = save_tiny(str(tmp_path_factory.mktemp("llama")), "llama")
    cfg, params = models.load_hf(path)
    return hf, cfg, params


def run(engine: sampling.Engine, requests) -> dict:
    """Submits (prompt, params, rng, n) requests tagged 0.. and drains the engine."""
    for i, (prompt, sp, rng, n) in enumerate(requests):
        engine.submit(prompt, sp, n=n, rng=rng, tag=i)
    return {(c.tag, c.sample): c for c in engine.run()}


def frequent_stop(rows) -> int:
    """A token that ends some rows early and not others."""
    counts = {}
    for row in rows:
        for t in set(row[1 : NEW // 2]):
            counts[t] = counts.get(t, 0) + 1
    return max((c, t) for t, c in counts.items() if c < len(rows))[1]


# The decode loop's cache layout: heads-major is the CPU default, slot-major the accelerators'.
@pytest.mark.parametrize("heads_major", [True, False], ids=["heads-major", "slot-major"])
def test_greedy_matches_transformers_with_more_requests_than_slots(model, heads_major):
    hf, cfg, params = model
    prompts = ragged_prompts(cfg.vocab_size, 10, seed=1)
    free = sampling.generate(cfg, params, prompts, sampling.SamplingParams(max_new_tokens=NEW))
    eos = frequent_stop(free.tokens)
    want = hf_greedy(hf, prompts, eos)
    unused = min(set(range(cfg.vocab_size)) - {t for row in free.tokens for t in row})
    sp = sampling.SamplingParams(max_new_tokens=NEW, stop_token_ids=(unused, eos))
    engine = sampling.Engine(cfg, params, slots=4, max_length=48, heads_major=heads_major)
    got = run(engine, [(p, sp, None, 1) for p in prompts])
    lengths = [len(t) for t, _ in want]
    assert min(lengths) < NEW and max(lengths) == NEW, "rows must end at different steps"
    for i, (toks, logp) in enumerate(want):
        assert got[i, 0].tokens == toks, f"prompt {i}"
        np.testing.assert_allclose(got[i, 0].logprobs, logp, atol=1e-4)
        assert got[i, 0].finish_reason == ("stop" if len(toks) < NEW else "length")
    assert engine.stats.decode_calls > 1 and engine.running == engine.queued == 0


def test_outputs_do_not_depend_on_batch_composition(llama):
    _, cfg, params = llama
    prompts = ragged_prompts(cfg.vocab_size, 6, seed=2)
    sp = sampling.SamplingParams(temperature=1.0, top_p=0.9, top_k=40, max_new_tokens=NEW)
    greedy = sampling.SamplingParams(max_new_tokens=NEW - 4, stop_token_ids=(5,))
    keys = [jax.random.key(100 + i) for i in range(6)]
    alone = run(sampling.Engine(cfg, params, slots=2, max_length=48), [
        (p, sp, k, 2) for p, k in zip(prompts, keys, strict=True)
    ])  # fmt: skip
    # Other slot count, other order, greedy and sampled requests of other lengths mixed in.
    mixed = [(p, greedy, None, 1) for p in ragged_prompts(cfg.vocab_size, 5, seed=3)]
    mixed += [(p, sp, k, 2) for p, k in zip(prompts[::-1], keys[::-1], strict=True)]
    crowd = run(sampling.Engine(cfg, params, slots=8, max_length=48), mixed)
    for i in range(6):
        for j in range(2):
            a, b = alone[i, j], crowd[5 + (5 - i), j]
            assert a.tokens == b.tokens, (i, j)
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert len({tuple(c.tokens) for c in alone.values()}) == 12
    # The same through `generate`: the slot count does not change any sample.
    wide = sampling.generate(cfg, params, prompts, sp, rng=keys[0], n=2, max_batch=16)
    narrow = sampling.generate(cfg, params, prompts, sp, rng=keys[0], n=2, max_batch=2)
    assert wide.tokens == narrow.tokens and narrow.stats.decode_rows == 2
    # Nor do the knobs that trade idle slots and recomputed heads for fewer programs.
    fixed = sampling.generate(
        cfg, params, prompts, sp, rng=keys[0], n=2, max_batch=32, fixed_slots=True,
        min_prefix=1 << 30,
    )  # fmt: skip
    assert fixed.tokens == wide.tokens and fixed.stats.decode_rows == 32


def test_compilations_stay_bounded_over_a_long_ragged_run(llama):
    _, cfg, params = llama
    rng = np.random.default_rng(4)

    def requests(seed):
        out = []
        for i, p in enumerate(ragged_prompts(cfg.vocab_size, 40, seed=seed, hi=36)):
            t = float(rng.choice([0.0, 0.7, 1.0]))
            sp = sampling.SamplingParams(
                temperature=t, top_p=float(rng.choice([1.0, 0.9])), top_k=int(rng.choice([0, 5])),
                max_new_tokens=int(rng.integers(1, 25)), stop_token_ids=(int(rng.integers(3, 60)),),
            )  # fmt: skip
            out.append((p, sp, jax.random.key(i), 1))
        return out

    engine = sampling.Engine(cfg, params, slots=4, max_length=64)
    before = sampling.compile_count()
    first = run(engine, requests(5))
    after_first = sampling.compile_count() - before
    second = run(engine, requests(6))
    total = sampling.compile_count() - before
    assert len(first) == len(second) == 40
    # Programs: decode per view bucket {16, 24, 32, 48, 64}; extend per (rows {1, 2, 4},
    # prompt bucket {16, 24, 32, 48}) with one copy per row and a 16-slot view.
    assert after_first <= 5 + 3 * 4 and total <= 5 + 3 * 4, (after_first, total)
    assert total - after_first <= 2, "a second run of the same kind reuses the programs"
    assert engine.stats.decode_calls > 10
    jitted = (sampling.slots.extend, sampling.slots.decode)
    assert sampling.compile_count() == sum(f._cache_size() for f in jitted)


def test_shared_heads_are_copied_not_recomputed(llama):
    _, cfg, params = llama
    rng = np.random.default_rng(5)
    head = [1, *rng.integers(3, cfg.vocab_size, 39).tolist()]  # a judge prompt's 40 tokens
    prompts = [
        head + rng.integers(3, cfg.vocab_size, rng.integers(2, 9)).tolist() for _ in range(9)
    ]
    sp = sampling.SamplingParams(max_new_tokens=NEW)
    reqs = [(p, sp, None, 1) for p in prompts]
    shared = sampling.Engine(cfg, params, slots=4, max_length=64)
    plain = sampling.Engine(cfg, params, slots=4, max_length=64, min_prefix=10**6)
    got, want = run(shared, reqs), run(plain, reqs)
    for key in want:
        assert got[key].tokens == want[key].tokens, key
        np.testing.assert_allclose(got[key].logprobs, want[key].logprobs, atol=1e-5)
    # The first prompt computes the head; the other 8 copy its 40 tokens from a slot (the
    # first round's followers from this round's leader, later rounds from resident slots).
    assert shared.stats.prefix_tokens_reused == 8 * 40
    assert plain.stats.prefill_tokens - shared.stats.prefill_tokens == 8 * 40
    assert plain.stats.prefix_tokens_reused == 0


def test_n_samples_share_one_prefill_and_long_prompts_go_in_pieces(llama):
    _, cfg, params = llama
    prompts = ragged_prompts(cfg.vocab_size, 3, seed=6, lo=40, hi=60)
    sp = sampling.SamplingParams(temperature=0.8, max_new_tokens=NEW)
    reqs = [(p, sp, jax.random.key(i), 3) for i, p in enumerate(prompts)]
    whole = sampling.Engine(cfg, params, slots=9, max_length=80)
    pieces = sampling.Engine(cfg, params, slots=9, max_length=80, prefill_chunk=16)
    got, want = run(pieces, reqs), run(whole, reqs)
    assert {k: c.tokens for k, c in got.items()} == {k: c.tokens for k, c in want.items()}
    # One prefill row per prompt although each has 3 samples; 16-token pieces make
    # ceil(len / 16) rows, each reading the pieces before it from its slot.
    assert whole.stats.prefill_rows == 3
    assert pieces.stats.prefill_rows == sum(-(-len(p) // 16) for p in prompts)
    assert whole.stats.prefill_tokens == pieces.stats.prefill_tokens == sum(map(len, prompts))


def test_incremental_use(llama):
    _, cfg, params = llama
    engine = sampling.Engine(cfg, params, slots=2, max_length=64)
    short = sampling.SamplingParams(max_new_tokens=2)
    long = sampling.SamplingParams(max_new_tokens=40)
    engine.submit([1, 5, 9], long, tag="long")
    engine.submit([1, 7], short, tag="short")
    first = engine.step()
    assert [c.tag for c in first] == ["short"] and len(first[0].tokens) == 2
    assert engine.running == 1
    engine.submit([1, 8, 8], short, n=2, tag="later")  # fed while "long" is decoding
    rest = []
    while engine.running or engine.queued:
        rest += [c.tag for c in engine.step()]
    assert rest.index("later") < rest.index("long"), "finished samples come back first"
    alone = sampling.generate(cfg, params, [[1, 5, 9]], long)
    assert alone.stats.decode_rows == 1
    with pytest.raises(ValueError, match="max_length=64"):
        engine.submit([1] * 30, long)
    with pytest.raises(ValueError, match="scalar"):
        engine.submit([1], sampling.SamplingParams(top_k=[1, 2]))
