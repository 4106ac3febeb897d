"""Tests for spar_jax.sampling on tiny random LLaMA / GLM models (CPU).

Compiling is the slow part here, so the prompts are chosen to reuse a few
programs: every prompt fits the 16-token length bucket, every call asks for
at most 16 new tokens, and batches are 1 or 4 prompts.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from spar_jax import models, sampling
from spar_jax.tokenizer import Tokenizer
from tests.hf_models import save_tiny
from tests.tokenizer_fixtures import LLAMA3_SPECIALS, build_hf_tokenizer

VOCAB = 1100  # room for the 1000-token test tokenizer of the CLI test
PROMPTS = [[1, 5, 9], [1, 7, 3, 3, 8, 20, 11, 4, 9], [1, *range(30, 43)], [1, 60, 61, 62, 63, 64]]
NEW = 12
EOS = 2


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    hf, _ = save_tiny(str(path), "llama", vocab_size=VOCAB, max_position_embeddings=2048)
    build_hf_tokenizer(path, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>")
    cfg, params = models.load_hf(str(path))
    return hf, cfg, params, str(path)


@pytest.fixture(scope="module")
def glm(tmp_path_factory):
    hf, path = save_tiny(str(tmp_path_factory.mktemp("glm")), "glm")
    cfg, params = models.load_hf(path)
    return hf, cfg, params, path


def greedy(stop_token_ids=(EOS,)):
    return sampling.SamplingParams(max_new_tokens=NEW, stop_token_ids=stop_token_ids)


def hf_greedy(hf, prompts, eos, new=NEW):
    """transformers generate(do_sample=False) on a left-padded batch.

    Returns per prompt (tokens up to the first `eos`, log-softmax of each step's logits).
    """
    T = max(map(len, prompts))
    ids = torch.zeros((len(prompts), T), dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :] = torch.tensor(p)
        mask[i, T - len(p) :] = 1
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=eos,
            return_dict_in_generate=True,
            output_logits=True,
        )
    logp = torch.stack(out.logits, 1).log_softmax(-1).numpy()  # [B, steps, V]
    result = []
    for i, row in enumerate(out.sequences[:, T:].tolist()):
        toks = row[: row.index(eos)] if eos in row else row
        result.append((toks, logp[i, np.arange(len(toks)), toks]))
    return result


# --- Parity with transformers ----------------------------------------------------------------


# Stop ids that these random models emit after a few tokens in some rows only, so rows of
# one batch finish at different steps.
@pytest.mark.parametrize("name, eos", [("llama", 994), ("glm", 87)])
def test_greedy_matches_transformers(name, eos, request):
    hf, cfg, params, _ = request.getfixturevalue(name)
    out = sampling.generate(cfg, params, PROMPTS, greedy(stop_token_ids=(eos,)))
    want = hf_greedy(hf, PROMPTS, eos)
    assert {len(t) for t, _ in want} != {NEW}, "some row should stop early"
    for i, (toks, logp) in enumerate(want):
        assert out.tokens[i] == toks, f"prompt {i}"
        np.testing.assert_allclose(out.logprobs[i], logp, atol=1e-4)
        assert out.finish_reason[i] == ("stop" if len(toks) < NEW else "length")


def test_batch_invariance_and_chunking(llama):
    _, cfg, params, _ = llama
    batch = sampling.generate(cfg, params, PROMPTS, greedy())
    alone = sampling.generate(cfg, params, PROMPTS[2:3], greedy())
    assert alone.tokens == batch.tokens[2:3]
    # max_batch=1: one prompt per chunk, same programs as `alone`.
    chunked = sampling.generate(cfg, params, PROMPTS[1:3], greedy(), max_batch=1)
    assert chunked.stats.decode_rows == 1 and chunked.stats.prefill_rows == 2
    assert chunked.tokens == batch.tokens[1:3]


def test_stop_tokens_and_per_prompt_limits(llama):
    _, cfg, params, _ = llama
    free = sampling.generate(cfg, params, PROMPTS, sampling.SamplingParams(max_new_tokens=NEW))
    row = free.tokens[1]
    a, b = row[4], row[7]  # two stop ids: the earlier one in the row must end it
    sp = sampling.SamplingParams(max_new_tokens=NEW, stop_token_ids=(b, a))
    out = sampling.generate(cfg, params, PROMPTS, sp)
    assert out.tokens[1] == row[: min(row.index(a), row.index(b))]
    assert out.finish_reason[1] == "stop"
    limits = sampling.SamplingParams(max_new_tokens=[3, 12, 1, 5])
    out = sampling.generate(cfg, params, PROMPTS, limits)
    assert [len(t) for t in out.tokens] == [3, 12, 1, 5]
    assert out.tokens[3] == free.tokens[3][:5] and out.finish_reason[3] == "length"
    # With stop ids: row 1 stops at its first `a`; row 3's sixth token is a stop id too,
    # but its limit of 5 ends it first, so it ended by length, not by a stop.
    stops = (a, free.tokens[3][5])
    assert not any(s in free.tokens[i][:lim] for i, lim in [(0, 3), (2, 1), (3, 5)] for s in stops)
    out = sampling.generate(cfg, params, PROMPTS, dataclasses.replace(limits, stop_token_ids=stops))
    assert [len(t) for t in out.tokens] == [3, row.index(a), 1, 5]
    assert out.finish_reason == ["length", "stop", "length", "length"]


def test_each_step_draws_a_fresh_uniform(llama):
    """With the LM head zeroed every token is equally likely, so a row that reused one
    uniform at every step would repeat one token; independent draws rarely repeat."""
    _, cfg, params, _ = llama
    flat = {**params, "lm_head": jnp.zeros_like(params["lm_head"])}
    sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=NEW)
    out = sampling.generate(cfg, flat, PROMPTS, sp, rng=jax.random.key(3), n=2)
    for row in out.tokens:
        assert len(row) == NEW and len(set(row)) >= NEW - 2, row
    assert len({tuple(r) for r in out.tokens}) == len(out.tokens)
    np.testing.assert_allclose(np.concatenate(out.logprobs), -np.log(VOCAB), rtol=1e-5)


def test_prompt_past_positions_is_an_error(llama):
    _, cfg, params, _ = llama
    limit = cfg.max_position_embeddings
    prompts = [[1, 2, 3], [5] * (limit - 10)]
    with pytest.raises(sampling.ContextLengthError) as e:
        sampling.generate(cfg, params, prompts, sampling.SamplingParams(max_new_tokens=11))
    msg = str(e.value)
    assert f"prompt 1 has {limit - 10} tokens and max_new_tokens=11" in msg
    assert f"max_position_embeddings={limit}" in msg and "lower max_new_tokens to at most 10" in msg
    assert isinstance(e.value, ValueError)
    sampling.check_context(cfg, [limit - 10], [10])  # exactly full is fine


# --- Sampling --------------------------------------------------------------------------------


def np_filter(logits, temperature, top_p, top_k):
    """Reference: transformers' warper order (temperature, top-k, top-p), row by row."""
    out = []
    for x, t, p, k in zip(logits, temperature, top_p, top_k, strict=True):
        x = x / t if t > 0 else x.copy()
        if 0 < k < len(x):
            x[x < np.sort(x)[-k]] = -np.inf
        if p < 1:
            order = np.argsort(-x, kind="stable")
            probs = np.exp(x[order] - x.max())
            probs /= probs.sum()
            keep = np.cumsum(probs) - probs < p
            keep[0] = True
            dropped = order[~keep]
            x[dropped] = -np.inf
        out.append(x)
    return np.stack(out)


def test_filter_matches_numpy_and_transformers():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 50)).astype(np.float32) * 3
    temperature = np.array([1.0, 0.7, 1.3, 0.5, 0.0, 2.0], np.float32)
    top_p = np.array([1.0, 0.9, 0.5, 1.0, 0.8, 0.3], np.float32)
    top_k = np.array([0, 0, 10, 3, 5, 20], np.int32)
    got = np.asarray(jax.jit(sampling.filter_logits)(logits, temperature, top_p, top_k))
    want = np_filter(logits, temperature, top_p, top_k)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[~np.isinf(got)], want[~np.isinf(want)], rtol=1e-6)
    for i in range(6):
        warpers = [transformers.TopKLogitsWarper(int(top_k[i]))] if top_k[i] else []
        if temperature[i] > 0:
            warpers.insert(0, transformers.TemperatureLogitsWarper(float(temperature[i])))
        if top_p[i] < 1:
            warpers.append(transformers.TopPLogitsWarper(float(top_p[i])))
        x = torch.tensor(logits[i : i + 1])
        for w in warpers:
            x = w(None, x)
        np.testing.assert_array_equal(np.isinf(got[i]), np.isinf(x[0].numpy()), f"row {i}")


def test_sample_tokens_distribution():
    logits = np.log(np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02], np.float32))
    B = 4000
    rows = np.tile(logits, (B, 1))
    temperature = np.full(B, 0.8, np.float32)
    temperature[:10] = 0.0  # greedy rows mixed in
    top_p, top_k = np.full(B, 0.9, np.float32), np.full(B, 5, np.int32)
    keys = jax.random.split(jax.random.key(0), B)
    tokens, logp = jax.jit(sampling.sample_tokens)(keys, rows, temperature, top_p, top_k)
    tokens = np.asarray(tokens)
    assert (tokens[:10] == 0).all()
    want = np_filter(logits[None], [0.8], [0.9], [5])[0]
    want = np.exp(want - want.max())
    want /= want.sum()
    freq = np.bincount(tokens[10:], minlength=len(logits)) / (B - 10)
    np.testing.assert_allclose(freq, want, atol=0.03)
    assert freq[want == 0].sum() == 0
    np.testing.assert_allclose(np.asarray(logp), logits[tokens], rtol=1e-5)  # untempered


def test_inverse_cdf_lands_on_support():
    V = 600  # three blocks of 256, the last one partial
    probs = np.zeros((2, V), np.float32)
    probs[0, [3, 300, 599]] = [0.2, 0.5, 0.3]
    probs[1, 255:257] = [2.0, 2.0]  # unnormalised, straddling a block boundary
    u = np.linspace(0.0, 1.0, 1001, dtype=np.float32)[:-1]
    f = jax.jit(jax.vmap(sampling.inverse_cdf, in_axes=(None, 0)))
    got = np.asarray(f(probs, np.stack([u, u], 1)))  # [1000, 2]
    np.testing.assert_array_equal(
        np.bincount(got[:, 0], minlength=V)[[3, 300, 599]], [200, 500, 300]
    )
    np.testing.assert_array_equal(np.bincount(got[:, 1], minlength=V)[[255, 256]], [500, 500])
    assert np.all(np.diff(got, axis=0) >= 0), "monotone in u"


def test_sampling_reproducible_and_shared_prefill(llama):
    _, cfg, params, _ = llama
    sp = sampling.SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=NEW)
    key = jax.random.key(7)
    shared = sampling.generate(cfg, params, PROMPTS[2:3], sp, rng=key, n=4)
    again = sampling.generate(cfg, params, PROMPTS[2:3], sp, rng=key, n=4)
    other = sampling.generate(cfg, params, PROMPTS[2:3], sp, rng=jax.random.key(8), n=4)
    assert shared.tokens == again.tokens and shared.logprobs == again.logprobs
    assert shared.tokens != other.tokens
    assert len({tuple(t) for t in shared.tokens}) == 4, "the n samples are different draws"
    assert shared.samples(0) == shared.tokens
    # One prompt row is prefilled for all four samples; four copies take four rows ...
    assert (shared.stats.prefill_rows, shared.stats.decode_rows) == (1, 4)
    copies = sampling.generate(cfg, params, PROMPTS[2:3] * 4, sp, rng=key, n=1)
    assert (copies.stats.prefill_rows, copies.stats.decode_rows) == (4, 4)
    # ... and sample j of a shared prefill is what an independent prefill gives row j.
    assert copies.tokens == shared.tokens
    for x, y in zip(copies.logprobs, shared.logprobs, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


# --- Compilation and memory ------------------------------------------------------------------


def test_compilations_are_bounded(llama):
    _, cfg, params, _ = llama
    jitted = (sampling.slots.extend, sampling.slots.decode)
    counted, cached = sampling.compile_count(), sum(f._cache_size() for f in jitted)
    sampling.generate(cfg, params, [[1, 2, 3, 4, 5]], greedy())  # programs for 1 slot x 24
    before = sampling.compile_count()
    for length in (9, 12):  # same cache length bucket (prompt + 12 new tokens <= 24)
        out = sampling.generate(cfg, params, [list(range(3, 3 + length))], greedy())
        assert out.stats.compiles == 0
    for t, p, k in [(0.5, 0.9, 0), (1.2, 1.0, 7), (0.9, 0.3, 2)]:
        sp = sampling.SamplingParams(temperature=t, top_p=p, top_k=k, max_new_tokens=NEW - 3)
        out = sampling.generate(cfg, params, [list(range(1, 13))], sp, rng=jax.random.key(0))
        assert out.stats.compiles == 0
    assert sampling.compile_count() == before
    # The counter agrees with jax's own caches of compiled programs (over this test: other
    # tests in the session may have compiled programs the counter saw differently).
    assert before - counted == sum(f._cache_size() for f in jitted) - cached
    assert sampling.length_bucket(17) == 24 and sampling.length_bucket(25) == 32
    assert sampling.batch_bucket(5, 64) == 8 and sampling.batch_bucket(100, 64) == 64


def test_cache_budget_error(llama):
    _, cfg, params, _ = llama
    before = sampling.compile_count()
    sp = sampling.SamplingParams(max_new_tokens=1000)
    need = sampling.sampler.engine_bytes(cfg, 128, 1024)
    with pytest.raises(sampling.CacheBudgetError) as e:
        sampling.generate(
            cfg, params, [[1, 2]] * 40, sp, n=4, max_batch=128, max_cache_bytes=3 * 10**6
        )
    msg = str(e.value)
    assert f"{need / 2**30:.3g} GiB" in msg and "128 slots x 1024 positions" in msg
    assert "lower max_batch (now 128; max_batch=4 fits)" in msg and "max_cache_bytes=3000000" in msg
    # 4 slots of 1024 positions: 2 layers x 2 x (2 kv heads x 16 dims x 4 bytes), logits and
    # token buffers, by hand.
    by_hand = 4 * (1024 * 2 * 2 * 2 * 16 * 4 + VOCAB * 4 + 1024 * 8)
    assert sampling.sampler.engine_bytes(cfg, 4, 1024) == by_hand <= 3 * 10**6
    assert sampling.sampler.engine_bytes(cfg, 8, 1024) > 3 * 10**6
    assert sampling.compile_count() == before


def test_bad_requests():
    cfg = models.ModelConfig(
        vocab_size=10, hidden_size=8, intermediate_size=8, num_layers=1,
        num_heads=1, num_kv_heads=1, head_dim=8,
    )  # fmt: skip
    with pytest.raises(ValueError, match="empty"):
        sampling.generate(cfg, {}, [[]], greedy())
    with pytest.raises(ValueError, match="outside"):
        sampling.generate(cfg, {}, [[10]], greedy())
    with pytest.raises(ValueError, match="rng"):
        sampling.generate(cfg, {}, [[1]], sampling.SamplingParams(temperature=0.5))
    with pytest.raises(ValueError, match="top_p"):
        sampling.SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="one per prompt"):
        sampling.generate(cfg, {}, [[1]], sampling.SamplingParams(top_k=[1, 2]))


# --- Command line ----------------------------------------------------------------------------


def test_cli(llama, tmp_path, capsys):
    from spar_jax.cli import sample as cli

    _, cfg, params, path = llama
    prompts = tmp_path / "in.jsonl"
    rows = [{"prompt": w, "prompt_id": f"p{i}"} for i, w in enumerate(["Hi", "Yes", "No", "Go"])]
    lines = [json.dumps(r) for r in rows[:2]] + ["{not json", json.dumps({"text": "x"})]
    prompts.write_text("\n".join([*lines, *map(json.dumps, rows[2:])]) + "\n")
    out = tmp_path / "out.jsonl"
    argv = [
        "--config", "configs/sample.py", f"--config.model={path}",
        f"--config.prompts={prompts}", f"--config.output={out}", "--config.dtype=float32",
        "--config.n=1", "--config.temperature=0.0", f"--config.max_new_tokens={NEW}",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert "skipped 2 malformed rows" in capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in written] == ["p0", "p1", "p2", "p3"]
    tok = Tokenizer.load(path)
    ids = [tok.encode_prompt([{"role": "user", "content": r["prompt"]}]) for r in rows]
    stop = (*tok.stop_token_ids, *cfg.eos_token_ids)
    sp = sampling.SamplingParams(max_new_tokens=NEW, stop_token_ids=stop)
    want = sampling.generate(cfg, params, ids, sp)
    for r, toks, reason in zip(written, want.tokens, want.finish_reason, strict=True):
        assert r["completions"] == [tok.decode(toks, skip_special_tokens=True)]
        assert r["finish_reasons"] == [reason] and r["num_tokens"] == [len(toks)]
    with pytest.raises(ValueError, match="line 3"):
        cli.main([*argv, "--config.strict=True"])
