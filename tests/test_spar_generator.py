"""ChatModel on a tiny random LLaMA: parity with the sampler, batching, prompts too long."""

import jax
import pytest

from spar_jax import models, sampling
from spar_jax.spar.generator import ChatModel, derive_seed
from spar_jax.spar.judge import ModelJudge
from spar_jax.tokenizer import Tokenizer
from tests.hf_models import save_tiny
from tests.tokenizer_fixtures import LLAMA3_SPECIALS, build_hf_tokenizer

CONTEXT = 1024
PARAMS = sampling.SamplingParams(temperature=0.8, max_new_tokens=8)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_tiny(str(path), "llama", vocab_size=1100, max_position_embeddings=CONTEXT)
    build_hf_tokenizer(path, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>")
    cfg, params = models.load_hf(str(path))
    return cfg, params, Tokenizer.load(str(path))


CONVS = [
    [{"role": "user", "content": "Write a haiku."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
     {"role": "user", "content": "Again, shorter."}],
    [{"role": "user", "content": "List three colours."}],
]  # fmt: skip


def test_matches_the_sampler_and_ignores_batching(chat):
    cfg, params, tok = chat
    out = ChatModel(cfg, params, tok, max_batch=8).generate(CONVS, PARAMS, n=2, seed=3)
    ids = [tok.encode_prompt(c) for c in CONVS]
    stops = tok.stop_token_ids
    ref = sampling.generate(
        cfg, params, ids, sampling.SamplingParams(temperature=0.8, max_new_tokens=8, stop_token_ids=stops),
        rng=jax.random.key(3), n=2,
    )  # fmt: skip
    want = [[tok.decode(t, skip_special_tokens=True) for t in ref.samples(i)] for i in range(3)]
    assert out == want
    assert ChatModel(cfg, params, tok, max_batch=2).generate(CONVS, PARAMS, n=2, seed=3) == out
    assert ChatModel(cfg, params, tok).generate(CONVS, PARAMS, n=2, seed=4) != out


def test_prompts_longer_than_the_context(chat):
    cfg, params, tok = chat
    long = [{"role": "user", "content": "word " * CONTEXT}]
    model = ChatModel(cfg, params, tok)
    out = model.generate([CONVS[0], long], PARAMS, n=2, seed=0)
    assert out[1] == ["", ""] and all(isinstance(t, str) for t in out[0])
    assert model.stats["skipped_too_long"] == 1 and model.stats["samples"] == 2
    trunc = ChatModel(cfg, params, tok, prompt_overflow="truncate_left")
    assert len(trunc.generate([long], PARAMS, n=1, seed=0)[0]) == 1
    assert trunc.stats["truncated"] == 1
    with pytest.raises(ValueError, match="prompt_overflow='drop'; use one of"):
        ChatModel(cfg, params, tok, prompt_overflow="drop")


def test_model_judge_one_sampler_call(chat):
    cfg, params, tok = chat
    model = ChatModel(cfg, params, tok)
    judge = ModelJudge(model, n_votes=3, max_new_tokens=4)
    out = judge.judge([("Be brief.", "Ok."), ("Be brief.", "Fine.")], seed=derive_seed(1, "judge"))
    assert model.stats["calls"] == 1 and model.stats["samples"] == 6
    assert all(len(j.votes) == 3 and len(j.texts) == 3 for j in out)
