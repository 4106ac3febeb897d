"""DPO trainer: invariants of the step, reference modes, accumulation, learning, schedules, CLI.

Token-level toy batches (``training.toy``) keep these fast: a 1-layer model, 16-token rows.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spar_jax import models
from spar_jax.training import model_io, optim, steps, toy
from spar_jax.training.state import TrainState

V, T, B = 64, 16, 8  # every unit test uses [8, 16] batches: one shape, fewer compilations
SGD = optax.sgd(0.5)  # update = -0.5 x gradient: comparing params compares gradients


@functools.cache
def small_model(seed: int = 0):
    """A 1-layer LLaMA (about 20k parameters), built once per process."""
    cfg = models.preset(
        "tiny",
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
    )
    return cfg, model_io.random_params(cfg, seed)


def compiled(kind: str, accum_steps: int = 1):
    return _compiled(kind, accum_steps)  # one cache key whether accum_steps is given or not


@functools.cache
def _compiled(kind: str, accum_steps: int):
    """Jitted DPO steps (SGD, ftx 0.1) and the reference function, shared between tests."""
    cfg, _ = small_model()
    if kind == "reference":
        fn = steps.make_reference_fn(cfg, chunk_size=24)
        return jax.jit(fn)
    return steps.compile_step(
        steps.make_dpo_step(cfg, SGD, ftx_weight=0.1, reference=kind, accum_steps=accum_steps)
    )


def copy(tree):
    return jax.tree.map(jnp.copy, tree)


def device_batch(batch):
    return {k: v for k, v in batch.items() if k != "index"}


def with_ref(batch, ref):
    out = device_batch(batch)
    out["reference_chosen_logps"], out["reference_rejected_logps"] = (np.asarray(r) for r in ref)
    return out


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def full_logits_nll(cfg, params, tokens, mask, loss_mask):
    """-log p of the loss_mask tokens per row and their counts, from the full [B, T, V] logits."""
    logits = jax.jit(lambda p, t, m: models.apply(cfg, p, t, mask=m)[0])(params, tokens, mask)
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    target = loss_mask[:, 1:]
    return -(picked * target).sum(1), target.sum(1)


def test_loss_is_log2_plus_ftx_when_policy_is_reference():
    cfg, params = small_model()
    batch = toy.dpo_token_batch(np.random.default_rng(0), B, T, V, padding_rows=2)
    ref = compiled("reference")(params, device_batch(batch))
    nll, n = full_logits_nll(
        cfg, params, batch["chosen_tokens"], batch["chosen_mask"], batch["chosen_loss_mask"]
    )
    real = batch["weight"] > 0
    # The vocabulary-chunked log-probs (chunk 24 of 64: a partial last chunk) are the
    # full-logit ones.
    np.testing.assert_allclose(-np.asarray(ref[0])[real], nll[real], rtol=1e-5)
    expected_nll = float(np.mean(nll[real] / n[real]))

    _, m = compiled("precompute")(TrainState.create(copy(params), SGD), with_ref(batch, ref))
    assert float(m["loss/preference"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(m["loss/nll"]) == pytest.approx(expected_nll, rel=1e-5)
    assert float(m["loss"]) == pytest.approx(math.log(2) + 0.1 * expected_nll, rel=1e-5)
    assert float(m["rewards/margins"]) == pytest.approx(0.0, abs=1e-6)


def test_precomputed_reference_equals_online():
    _, params = small_model()
    rng = np.random.default_rng(1)
    batches = [toy.dpo_token_batch(rng, B, T, V, padding_rows=i) for i in (0, 3)]
    refs = [compiled("reference")(params, device_batch(b)) for b in batches]
    s_on = TrainState.create(copy(params), SGD, ref_params=copy(params))
    s_pre = TrainState.create(copy(params), SGD)
    for batch, ref in zip(batches, refs, strict=True):
        s_on, m_on = compiled("online")(s_on, device_batch(batch))
        s_pre, m_pre = compiled("precompute")(s_pre, with_ref(batch, ref))
    # After one update policy != reference: the second step's rewards are not trivial.
    assert abs(float(m_on["rewards/margins"])) > 1e-5
    for key in m_on:  # rewards are beta x differences of ~-50 log-probs: float32 rounding ~1e-7
        np.testing.assert_allclose(m_pre[key], m_on[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert_trees_close(s_pre.params, s_on.params)


def test_causal_only_attention_step_equals_masked_attention():
    """The step under `attention="xla_causal"` (the cuDNN path's right-padding contract) gives
    the masked-attention step's metrics and update on the trainers' right-padded batches."""
    cfg, params = small_model()
    batch = toy.dpo_token_batch(np.random.default_rng(3), B, T, V, padding_rows=2)
    ref = compiled("reference")(params, device_batch(batch))
    ref = (ref[0] + 0.3 * (jnp.arange(B) - 3.5), ref[1])  # a non-trivial gradient
    fused = steps.compile_step(
        steps.make_dpo_step(cfg.replace(attention="xla_causal"), SGD, ftx_weight=0.1)
    )
    want, m_want = compiled("precompute")(
        TrainState.create(copy(params), SGD), with_ref(batch, ref)
    )
    got, m_got = fused(TrainState.create(copy(params), SGD), with_ref(batch, ref))
    for key in m_want:
        np.testing.assert_allclose(m_got[key], m_want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert_trees_close(got.params, want.params)


def _padded_rows(rng, side: str) -> tuple[np.ndarray, np.ndarray]:
    """``[B, T]`` tokens and mask of rows of 5..16 real tokens, padded on ``side``."""
    lengths = rng.integers(5, T + 1, B)
    lengths[0] = T  # one full row
    tokens = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), bool)
    for i, n in enumerate(lengths):
        cols = slice(T - n, T) if side == "left" else slice(0, n)
        tokens[i, cols] = rng.integers(5, V, n)
        mask[i, cols] = True
    return tokens, mask


def test_auto_attention_fuses_only_declared_right_padding(monkeypatch):
    """On a GPU in bfloat16, ``attention="auto"`` may take cuDNN's causal-only kernel, which is
    wrong for left padding. Here the backend reads as a GPU and the kernel is its CPU stand-in
    (``xla_causal``'s contract: causal, no padding mask). A left-padded scoring pass stays on
    the masked path; the trainers' right-padded batches, declared so, take the kernel."""
    from spar_jax.models import layers

    cfg, params = small_model()
    cfg = cfg.replace(dtype="bfloat16")
    kernel_calls = []
    causal = layers.causal_attention

    def stand_in(q, k, v, *, implementation=None):
        kernel_calls.append(implementation)
        return causal(q, k, v, implementation="xla")

    def logits(cfg, tokens, mask, padding=None):
        fn = jax.jit(lambda p, t, m: models.apply(cfg, p, t, mask=m, padding=padding)[0])
        return np.asarray(fn(params, tokens, mask), np.float32)

    rng = np.random.default_rng(7)
    left, left_mask = _padded_rows(rng, "left")
    right, right_mask = _padded_rows(rng, "right")
    want_left = logits(cfg.replace(attention="xla"), left, left_mask)
    want_right = logits(cfg.replace(attention="xla"), right, right_mask)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(layers, "causal_attention", stand_in)

    for padding in (None, "left"):
        got = logits(cfg, left, left_mask, padding)
        assert not kernel_calls
        np.testing.assert_array_equal(got[left_mask], want_left[left_mask])
    got = logits(cfg, right, right_mask, "right")
    assert set(kernel_calls) == {"cudnn"}  # the fused kernel, as it would run on a GPU
    np.testing.assert_allclose(got[right_mask], want_right[right_mask], atol=0.05)
    assert np.isfinite(got).all()
    # The stand-in really is wrong for left padding (so the first check could fail).
    assert np.isnan(logits(cfg.replace(attention="xla_causal"), left, left_mask)).all()

    # The train step declares its right padding: it takes the kernel.
    kernel_calls.clear()
    batch = device_batch(toy.dpo_token_batch(np.random.default_rng(8), B, T, V))
    jax.jit(steps.make_reference_fn(cfg)).lower(params, batch)
    assert set(kernel_calls) == {"cudnn"}


def test_gradient_accumulation_equals_one_big_batch():
    _, params = small_model()
    batch = toy.dpo_token_batch(np.random.default_rng(2), B, T, V, padding_rows=3)
    ref = compiled("reference")(params, device_batch(batch))
    # Policy != reference (margins -0.03 (i - 3.5), none 0), so that the loss has a gradient and
    # the accuracy is not decided by rounding.
    ref = (ref[0] + 0.3 * (jnp.arange(B) - 3.5), ref[1])
    one, m1 = compiled("precompute", 1)(TrainState.create(copy(params), SGD), with_ref(batch, ref))
    four, m4 = compiled("precompute", 4)(TrainState.create(copy(params), SGD), with_ref(batch, ref))
    assert float(m1["grad_norm"]) > 0
    for key in m1:  # atol: rewards are differences of ~-50 log-probs
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert_trees_close(four.params, one.params)


def test_dpo_learns_the_toy_preference_on_held_out_pairs():
    _, params = small_model()
    held_out = device_batch(toy.dpo_token_batch(np.random.default_rng(99), B, T, V))
    ref_c, ref_r = compiled("reference")(params, held_out)

    def margins(p):
        c, r = compiled("reference")(p, held_out)
        return np.asarray(0.1 * ((c - ref_c) - (r - ref_r)))

    assert np.all(margins(params) == 0)
    state = TrainState.create(copy(params), SGD)
    rng = np.random.default_rng(3)
    for _ in range(20):  # fresh pairs every step: only "good last token" generalises
        batch = toy.dpo_token_batch(rng, B, T, V)
        ref = compiled("reference")(params, device_batch(batch))
        state, metrics = compiled("precompute")(state, with_ref(batch, ref))
    after = margins(state.params)
    assert after.mean() > 0.5, after
    assert (after > 0).mean() == 1.0, after
    assert float(metrics["rewards/accuracies"]) == 1.0


def _registered_loss_step(loss: str, tmp_path) -> tuple[dict, np.ndarray]:
    """One DPO step with the registered ``loss`` through the trainer's own step builder
    (``compiled.train_step_for``, one device); its metrics and the batch's DPO margins."""
    from spar_jax import configs, sharding
    from spar_jax.training.compiled import train_step_for
    from spar_jax.training.placement import Placement
    from spar_jax.training.run_config import RunConfig

    config = configs.load(os.path.join(os.path.dirname(__file__), "..", "configs", "dpo_demo.py"))
    config.data, config.out_dir, config.batch_size = "unused.jsonl", str(tmp_path), B
    run = RunConfig.from_config(config)
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    placement = Placement(mesh, sharding.TRAIN_RULES)
    cfg, params = small_model()
    tx, _, step, state_sharding = train_step_for(
        "dpo", cfg, run, 10, placement, loss=loss, beta=None, reference="precompute"
    )
    batch = toy.dpo_token_batch(np.random.default_rng(5), B, T, V, padding_rows=2)
    pc, pr = (np.asarray(x) for x in compiled("reference")(params, device_batch(batch)))
    shift = 0.3 * (np.arange(B) - 3.5)  # reference != policy: margins -shift
    state = placement.place_state(TrainState.create(copy(params), tx), state_sharding)
    _, metrics = step(state, placement.shard_batch(with_ref(batch, (pc + shift, pr))))
    real = batch["weight"] > 0
    return jax.device_get(metrics), -shift[real]


def _readme_loss_code() -> str:
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    section = readme[readme.index("### Losses, and how to add one") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_how_to_add_a_loss_trains(tmp_path, monkeypatch):
    from spar_jax.training import preference

    monkeypatch.setattr(preference, "PREFERENCE_LOSSES", dict(preference.PREFERENCE_LOSSES))
    exec(compile(_readme_loss_code(), "README.md", "exec"), {})
    assert "my_loss" in preference.PREFERENCE_LOSSES
    metrics, margins = _registered_loss_step("my_loss", tmp_path)
    expected = np.mean(np.logaddexp(0.0, -0.1 * margins))  # softplus(-beta h), beta 0.1
    assert float(metrics["loss/preference"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["rewards/margins"]) == pytest.approx(0.1 * margins.mean(), rel=1e-4)


def test_registering_a_loss_again_compiles_the_new_one(tmp_path, monkeypatch):
    """A notebook re-registers a loss under the same name: the next step runs the new one."""
    from spar_jax.training import preference

    monkeypatch.setattr(preference, "PREFERENCE_LOSSES", dict(preference.PREFERENCE_LOSSES))

    def hinge(pc, pr, rc, rr, *, beta):
        return jax.nn.relu(1.0 - beta * ((pc - rc) - (pr - rr)))

    preference.register("trial", hinge, hyperparameters={"beta": 0.1})
    first, margins = _registered_loss_step("trial", tmp_path)
    np.testing.assert_allclose(first["loss/preference"], np.mean(1 - 0.1 * margins), rtol=1e-5)
    preference.register(
        "trial", lambda *a, beta: 3.0 * hinge(*a, beta=beta), hyperparameters={"beta": 0.1}
    )
    second, _ = _registered_loss_step("trial", tmp_path)
    np.testing.assert_allclose(second["loss/preference"], 3 * first["loss/preference"], rtol=1e-5)


@pytest.mark.parametrize(
    "kind, expected",
    [  # lr x the factor transformers.get_*_schedule_with_warmup(50 steps, 5 warmup) gives
        ("linear", [0.0, 0.2, 1.0, 23 / 45, 1 / 45]),
        ("constant", [0.0, 0.2, 1.0, 1.0, 1.0]),
        (
            "cosine",
            [
                0.0,
                0.2,
                1.0,
                0.5 * (1 + math.cos(math.pi * 22 / 45)),
                0.5 * (1 + math.cos(math.pi * 44 / 45)),
            ],
        ),
    ],
)
def test_schedules_are_the_hf_trainers(kind, expected):
    cfg = optim.OptimizerConfig(learning_rate=2e-7, schedule=kind, warmup_ratio=0.1)
    assert cfg.num_warmup_steps(50) == 5  # ceil(0.1 x 50)
    schedule = optim.make_schedule(cfg, 50)
    got = [float(schedule(i)) for i in (0, 1, 5, 27, 49)]
    np.testing.assert_allclose(got, [2e-7 * e for e in expected], rtol=1e-5, atol=1e-15)


def test_weight_decay_skips_norms():
    _, params = small_model()
    mask = optim.decay_mask(params)
    assert mask["layers"]["attn"]["q"] and mask["embedding"] and mask["lm_head"]
    assert not mask["final_norm"]["scale"] and not mask["layers"]["pre_mlp_norm"]["scale"]


def test_train_dpo_command(tmp_path, capsys):
    from spar_jax.__main__ import main

    out = tmp_path / "run"
    argv = [
        "train-dpo",
        "--config",
        os.path.join(os.path.dirname(__file__), "..", "configs", "dpo_demo.py"),
        f"--config.out_dir={out}",
        f"--config.toy_dir={tmp_path / 'toy'}",
        "--config.max_steps=3",
        "--config.pad_to_multiple=64",  # one batch shape: one compilation
        "--config.progress=False",
        "--config.export=('native',)",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "64/64 records used, 0 skipped" in printed  # the data's skip report is shown
    assert "3 steps" in printed
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "lr", "grad_norm", "tokens_per_s"):
        assert key in records[0]
    assert (out / "loss.png").stat().st_size > 0
    assert json.load(open(out / "eval.json"))["eval/pairs"] == 16
    from spar_jax.models import native

    cfg, params = native.load_native(str(out / "final_native"))
    assert cfg.vocab_size % 64 == 0 and jax.tree.leaves(params)


def test_reference_table_is_recomputed_for_another_model(tmp_path):
    """The same out_dir trained again from another model (the next round's actor, say) does
    not reuse the reference log-probs of the first: their fingerprint names the model."""
    from spar_jax import configs
    from spar_jax.training import reference
    from spar_jax.training.dpo import train_dpo

    def run(**overrides):
        config = configs.load(
            os.path.join(os.path.dirname(__file__), "..", "configs", "dpo_demo.py")
        )
        config.update(
            out_dir=str(tmp_path / "run"),
            toy_dir=str(tmp_path / "toy"),
            progress=False,
            pad_to_multiple=64,
            resume=False,
            **{"max_steps": 1, **overrides},
        )
        logs = []
        train_dpo(config, log=logs.append)
        with np.load(tmp_path / "run" / reference.REFERENCE_FILE) as f:
            return [line for line in logs if line.startswith(reference.REFERENCE_FILE)], f["logps"]

    first_logs, first = run(export=("native",), max_steps=2)  # step 1 has lr 0 (warmup)
    assert not first_logs  # nothing stored yet: computed without a word
    other_model = str(tmp_path / "actor_1")
    os.rename(tmp_path / "run" / "final_native", other_model)  # the trained model, elsewhere
    logs, second = run(model=other_model, export=())
    assert logs == [
        "reference_logps.npz: recomputing the reference log-probs; changed since: model "
        f"(preset tiny (seed 0) -> {other_model})"
    ]
    assert np.isfinite(second).all() and not np.allclose(second, first)
    logs, third = run(model=other_model, export=())
    assert logs == [
        "reference_logps.npz: reference log-probs reused (same model, tokenizer, data and limits)"
    ]
    np.testing.assert_array_equal(third, second)


def test_non_finite_reference_log_probs_name_the_records(tmp_path):
    from spar_jax.training import data, reference

    prepared = data.Prepared(
        kind="dpo",
        sequences={},
        index=np.array([0, 2, 3, 5]),  # records 1 and 4 were skipped: nan rows are expected
        lengths=np.ones(4, np.int64),
        pad_id=0,
        max_length=8,
        report=data.SkipReport(total=6),
    )
    table = np.full((6, 2), -3.0, np.float32)
    table[[1, 4]] = np.nan
    table[3, 1] = np.inf
    table[5, 0] = np.nan
    path = str(tmp_path / reference.REFERENCE_FILE)
    fp = {"data": {"source": "pairs.jsonl"}}
    with pytest.raises(
        reference.NonFiniteReferenceError, match=r"2 records of pairs.jsonl \(record indices 3, 5\)"
    ):
        reference.reference_table(path, lambda: table, fp, prepared, log=lambda _: None)
    assert not os.path.exists(path)  # never stored
    table[3, 1] = table[5, 0] = -1.0
    np.testing.assert_array_equal(
        reference.reference_table(path, lambda: table, fp, prepared, log=lambda _: None), table
    )
    assert os.path.exists(path)


def test_loss_settings_are_config_errors():
    """A loss name or hyper-parameter the registry does not have is the user's input: one line
    through the command, not a traceback."""
    from spar_jax.configs import ConfigError
    from spar_jax.training.dpo import DPOConfig

    with pytest.raises(ConfigError, match="unknown preference loss 'dpo'; choose one of"):
        DPOConfig(loss="dpo")
    with pytest.raises(ConfigError, match=r"gamma=0\.5 is not used by preference loss 'sigmoid'"):
        DPOConfig(gamma=0.5)
    with pytest.raises(ConfigError, match="reference='later'"):
        DPOConfig(reference="later")
    assert DPOConfig(loss="simpo", beta=None).reward_scale() == 2.0  # simpo's declared default
