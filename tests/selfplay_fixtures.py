"""A tiny chat model whose samples a rule verifier can judge, for self-play tests.

A random tiny model almost never writes `[[start]]`, so no refinement would ever parse and
no pair would be built. This model's weights are set by hand so that every step samples,
whatever the context, one of six tokens with equal probability: `[[start]]`, `[[end]]`,
" a", "a", "b" and the stop token `<|eot_id|>` (mean length 5). Refinements then parse often
enough, and the verifier below passes a response with an "a" and no "b": so some answers fail,
some refinements fix them, and pairs are built. Training moves the weights off this
distribution a little, which the tests do not rely on.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import numpy as np

MARKERS = ("[[start]]", "[[end]]")


def check(row: dict, response: str) -> tuple[bool, str]:
    """The test world's rule verifier: an "a" and no "b" (rows must carry their prompt)."""
    from spar_jax.spar import prompts

    if "Write an a" not in row.get("prompt", ""):
        raise ValueError(f"the verifier got a row without its prompt: {row}")

    has_a, has_b = "a" in response, "b" in response
    passed = has_a and not has_b
    text = f"needs an a ({'ok' if has_a else 'missing'}), no b ({'ok' if not has_b else 'found'})"
    return passed, prompts.format_judgement(text, passed)


def build_tokenizer(out_dir: Path) -> str:
    """The synthetic world's BPE (its corpus holds the judge and refine texts, so those prompts
    are a few hundred tokens, not a thousand), plus the two refinement markers."""
    import transformers

    from spar_jax.tasks import model as world_model

    world_model.build_tokenizer(str(out_dir))
    tok = transformers.AutoTokenizer.from_pretrained(str(out_dir))
    tok.add_tokens(list(MARKERS))
    tok.save_pretrained(str(out_dir))
    return str(out_dir)


def build_model(out_dir: Path, tokenizer_dir: str) -> str:
    """A native checkpoint sampling the six tokens above uniformly (see module doc)."""
    import transformers

    from spar_jax import models
    from spar_jax.models import native

    hf_tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    favoured = [hf_tok.convert_tokens_to_ids(t) for t in (*MARKERS, "<|eot_id|>")]
    favoured += [hf_tok.encode(t, add_special_tokens=False)[0] for t in (" a", "a", "b")]
    cfg = models.preset("tiny").replace(vocab_size=len(hf_tok) + 62, max_position_embeddings=1024)
    params = jax.tree.map(np.array, models.init_params(cfg, jax.random.key(0)))  # writable
    # Blocks write nothing to the residual stream, whose dimension 0 is 10 for every token:
    # the final norm then gives h = sqrt(D) e_0 at every position, and logits = h @ lm_head.
    params["layers"]["attn"]["o"][:] = 0
    params["layers"]["mlp"]["down"][:] = 0
    params["embedding"][:, 0] = 10.0
    params["final_norm"]["scale"][:] = 0
    params["final_norm"]["scale"][0] = 1.0
    params["lm_head"][0, :] = -10.0
    params["lm_head"][0, favoured] = 0.0
    native.save_native(cfg, jax.tree.map(jax.numpy.asarray, params), str(out_dir))
    return str(out_dir)


def write_prompts(path: Path, n: int = 6) -> str:
    lines = [f'{{"prompt_id": "q{i}", "prompt": "Write an a, and no b. ({i})"}}' for i in range(n)]
    lines.insert(2, "not json")  # a malformed row: counted, not fatal
    lines.insert(4, '{"prompt_id": "empty", "prompt": "  "}')  # an empty prompt: counted
    long = "Write an a. " * 400  # longer than the context: skipped by the sampler, counted
    lines.append(f'{{"prompt_id": "long", "prompt": "{long}"}}')
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_config(path: Path, model: str, tokenizer: str, prompts: str) -> str:
    """A two-round config at test size, on top of the LLaMA-3 recipe file."""
    repo = Path(__file__).resolve().parent.parent
    path.write_text(
        textwrap.dedent(
            f'''
            from spar_jax import configs


            def get_config():
                c = configs.load("{repo}/configs/spar_llama3_8b.py")
                c.actor, c.tokenizer, c.prompts = "{model}", "{tokenizer}", "{prompts}"
                c.rounds = 2
                c.dtype = "float32"
                c.max_batch = 4  # few slot counts: few programs to compile
                c.chunk_prompts = 3
                c.actor_sampling.n = 2
                c.actor_sampling.max_new_tokens = 12
                c.judge.kind = "rule"
                c.judge.verifier = "tests.selfplay_fixtures:check"
                c.refine.max_new_tokens = 12
                c.tree.branch = 2
                c.tree.select_branch = 1
                c.tree.max_depth = 2
                for t in (c.train_actor, c.train_refiner):
                    t.batch_size, t.grad_accum_steps, t.epochs = 2, 1, 1
                    t.max_length, t.pad_to_multiple = 1024, 64
                    t.compute_dtype, t.remat, t.mesh = "float32", "none", (1, -1, 1)
                    t.checkpoint_every, t.export = 0, ("native",)
                    t.async_checkpoint = False
                c.train_actor.max_prompt_length = 0
                c.train_actor.optimizer.learning_rate = 1e-3
                c.train_refiner.optimizer.learning_rate = 1e-3
                c.progress = False
                return c
            '''
        )
    )
    return str(path)
