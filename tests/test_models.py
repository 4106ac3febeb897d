"""LLaMA and GLM models: parity with transformers, HF round trips, cache, errors, presets."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from spar_jax import models
from spar_jax.models import presets
from tests.hf_models import LLAMA3_ROPE, hf_logits, save_tiny

TOL = 1e-4

# (kind, overrides): GQA ratios 1, 2 and 4, tied and untied, llama3 rope, odd vocab (101).
CASES = {
    "llama_mha_untied": ("llama", dict(num_key_value_heads=4)),
    "llama_gqa2_tied": ("llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_gqa4_rope_llama3": ("llama", dict(num_key_value_heads=1, rope_parameters=LLAMA3_ROPE)),
    "glm_gqa2": ("glm", dict(num_key_value_heads=2)),
    "glm4_gqa4": ("glm4", dict(num_key_value_heads=1)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    kind, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    model, path = save_tiny(path, kind, **overrides)
    cfg, params = models.load_hf(path)
    return model, path, cfg, params


def _batch(seed=0, batch=3, length=11, vocab=101):
    rng = np.random.RandomState(seed)
    return rng.randint(3, vocab, (batch, length)).astype(np.int32)


def _mask(batch, length, pads, side):
    mask = np.ones((batch, length), bool)
    for row, n in enumerate(pads):
        if n:
            if side == "left":
                mask[row, :n] = False
            else:
                mask[row, -n:] = False
    return mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_match_transformers(checkpoint, side):
    model, _, cfg, params = checkpoint
    tokens = _batch()
    mask = _mask(3, 11, [0, 4, 7], side)
    want = hf_logits(model, tokens, mask)
    got, cache = models.apply(cfg, params, jnp.asarray(tokens), mask=jnp.asarray(mask))
    assert cache is None
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got)[mask], want[mask], atol=TOL, rtol=0)


def test_config_read_from_hf(checkpoint):
    model, _, cfg, _ = checkpoint
    hf = model.config
    assert cfg.family == hf.model_type
    assert (cfg.num_heads, cfg.num_kv_heads) == (hf.num_attention_heads, hf.num_key_value_heads)
    assert cfg.tie_embeddings == hf.tie_word_embeddings
    assert ("lm_head" in cfg_params_keys(checkpoint)) != cfg.tie_embeddings


def cfg_params_keys(checkpoint):
    return set(checkpoint[3])


def test_round_trip_through_transformers(checkpoint, tmp_path):
    model, _, cfg, params = checkpoint
    models.save_hf(cfg, params, str(tmp_path))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype="float32")
    assert type(reloaded) is type(model)
    tokens = _batch(seed=1)
    np.testing.assert_allclose(hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-6)


def test_round_trip_is_bit_identical(checkpoint, tmp_path):
    _, _, cfg, params = checkpoint
    models.save_hf(cfg, params, str(tmp_path))
    cfg2, params2 = models.load_hf(str(tmp_path))
    assert cfg2 == cfg
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2
    )


def test_sharded_save_writes_index_and_loads(checkpoint, tmp_path):
    _, _, cfg, params = checkpoint
    models.save_hf(cfg, params, str(tmp_path), max_shard_bytes=20_000)
    files = os.listdir(tmp_path)
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 2
    _, params2 = models.load_hf(str(tmp_path))
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2
    )


def test_cached_decoding_equals_full_forward(checkpoint):
    _, _, cfg, params = checkpoint
    tokens = jnp.asarray(_batch(seed=2, length=10))
    mask = jnp.asarray(_mask(3, 10, [0, 3, 5], "left"))
    full, _ = models.apply(cfg, params, tokens, mask=mask)

    prefill = 6
    cache = models.init_cache(cfg, batch=3, max_length=16)
    step = jax.jit(models.apply, static_argnums=0)
    logits, cache = step(cfg, params, tokens[:, :prefill], mask=mask[:, :prefill], cache=cache)
    pieces = [logits]
    for t in range(prefill, 10):
        logits, cache = step(
            cfg, params, tokens[:, t : t + 1], mask=mask[:, t : t + 1], cache=cache
        )
        pieces.append(logits)
    assert int(cache.index) == 10
    np.testing.assert_array_equal(np.asarray(cache.lengths()), [10, 7, 5])
    got = jnp.concatenate(pieces, axis=1)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(got)[m], np.asarray(full)[m], atol=TOL, rtol=0)


def test_bfloat16_runs_close_to_float32(checkpoint):
    _, path, cfg, params = checkpoint
    cfg16, params16 = models.load_hf(path, dtype=jnp.bfloat16)
    assert jax.tree.leaves(params16)[0].dtype == jnp.bfloat16 and cfg16.dtype == "bfloat16"
    tokens = jnp.asarray(_batch(seed=3))
    ref, _ = models.apply(cfg, params, tokens)
    got, _ = models.apply(cfg16, params16, tokens)
    assert got.dtype == jnp.float32
    assert float(jnp.abs(got - ref).max()) < 0.1 * float(jnp.abs(ref).max())


def test_remat_and_unroll_give_same_logits_and_grads():
    cfg = presets.tiny(vocab_size=97)
    params = models.init_params(cfg, jax.random.key(0))
    tokens = jnp.asarray(_batch(vocab=97, length=8))

    def loss(p, c):
        return jnp.mean(models.apply(c, p, tokens)[0] ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    base_loss, base_grad = value_and_grad(params, cfg)
    variants = [dict(remat_policy="full"), dict(remat_policy="dots"), dict(scan_unroll=2)]
    variants.append(dict(remat_policy="full", scan_unroll=8))  # more than the 2 layers
    for changes in variants:
        value, grad = value_and_grad(params, cfg.replace(**changes))
        np.testing.assert_allclose(value, base_loss, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grad, base_grad)


def test_causal_only_attention_matches_masked_attention_on_right_padding(checkpoint):
    """`xla_causal` (the contract of the cuDNN path) equals the masked einsum at real tokens,
    for logits and for the gradient of a loss that reads real positions only."""
    _, _, cfg, params = checkpoint
    tokens = jnp.asarray(_batch(seed=5))
    mask = jnp.asarray(_mask(3, 11, [0, 2, 5], "right"))
    fused = cfg.replace(attention="xla_causal")
    assert models.attention_impl(fused, cached=False) == "xla_causal"
    assert models.attention_impl(fused, cached=True) == "xla"

    def loss(p, c):
        logits, _ = models.apply(c, p, tokens, mask=mask)
        return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0)), logits

    (ref_loss, ref), ref_grad = jax.value_and_grad(loss, has_aux=True)(params, cfg)
    (got_loss, got), got_grad = jax.value_and_grad(loss, has_aux=True)(params, fused)
    np.testing.assert_allclose(np.asarray(got)[np.asarray(mask)], np.asarray(ref)[mask], atol=TOL)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got_grad, ref_grad
    )


def test_causal_only_attention_poisons_left_padded_batches():
    cfg = presets.tiny(vocab_size=97, attention="xla_causal")
    params = models.init_params(cfg, jax.random.key(0))
    tokens = jnp.asarray(_batch(vocab=97, length=8))
    left = jnp.asarray(_mask(3, 8, [0, 2, 0], "left"))
    logits, _ = models.apply(cfg, params, tokens, mask=left)
    assert bool(jnp.all(jnp.isnan(logits)))
    logits, _ = models.apply(cfg, params, tokens, mask=jnp.asarray(_mask(3, 8, [0, 2, 0], "right")))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_attention_choice_and_errors():
    cfg = presets.tiny(vocab_size=97)
    assert cfg.attention == "auto"
    assert models.attention_impl(cfg.replace(dtype="bfloat16"), cached=False) == (
        "cudnn" if jax.default_backend() == "gpu" else "xla"
    )
    assert models.attention_impl(cfg, cached=False) == "xla"  # float32: never cuDNN
    with pytest.raises(ValueError, match="attention='cudnn' needs dtype='bfloat16'"):
        cfg.replace(attention="cudnn")
    with pytest.raises(ValueError, match="attention='flash'; use one of"):
        cfg.replace(attention="flash")
    if jax.default_backend() != "gpu":
        cudnn = cfg.replace(dtype="bfloat16", attention="cudnn")
        params = models.init_params(cudnn, jax.random.key(0))
        with pytest.raises(ValueError, match="needs a GPU, but JAX's backend is 'cpu'"):
            models.apply(cudnn, params, jnp.zeros((1, 4), jnp.int32))


def test_every_parameter_has_logical_axes():
    cfg = presets.glm4_9b_0414(num_layers=2)
    axes = models.logical_axes(cfg)
    shapes = models.param_shapes(cfg)
    flat_axes = jax.tree_util.tree_leaves_with_path(
        axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    assert len(flat_axes) == len(flat_shapes)
    known = {"layers", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", "norm"}
    for (path, spec), (_, shape) in zip(flat_axes, flat_shapes, strict=True):
        assert len(spec) == len(shape.shape), path
        assert set(spec) <= known, path
    assert axes["layers"]["attn"]["q"] == jax.sharding.PartitionSpec(
        "layers", "embed", "heads", "head_dim"
    )


@pytest.mark.parametrize("name", sorted(presets.PUBLISHED_PARAMS))
def test_preset_parameter_counts(name):
    assert models.count_params(presets.get(name)) == presets.PUBLISHED_PARAMS[name]


def test_preset_round_trips_through_hf_config():
    for name in presets.PRESETS:
        cfg = presets.get(name)
        assert models.config_from_hf(models.config_to_hf(cfg)) == cfg, name


def test_old_style_hub_config_is_read():
    # LLaMA-3.1 config.json as published (transformers 4.x: top-level rope keys).
    hub = {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "max_position_embeddings": 131072,
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
        "torch_dtype": "bfloat16",
    }
    cfg = models.config_from_hf(hub)
    assert cfg.rope_scaling == presets.llama3_1_8b().rope_scaling
    assert cfg.rope_theta == 500000.0 and cfg.eos_token_ids == (128001, 128008, 128009)
    glm = {
        "model_type": "glm",
        "hidden_size": 4096,
        "intermediate_size": 13696,
        "num_hidden_layers": 40,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "vocab_size": 151552,
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0,
        "attention_bias": True,
    }
    cfg = models.config_from_hf(glm)
    assert cfg.partial_rotary_factor == 0.5 and cfg.rotary_dim == 64 and cfg.rope_interleaved


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("good")
    save_tiny(path, "llama")
    return str(path)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_error_missing_config(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    os.remove(os.path.join(path, "config.json"))
    with pytest.raises(models.CheckpointError, match=r"config.json: missing"):
        models.load_hf(path)


def test_error_not_a_directory(tmp_path):
    with pytest.raises(models.CheckpointError, match="no such checkpoint directory"):
        models.load_hf(str(tmp_path / "nope"))


def test_error_unsupported_model_type(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    _edit_config(path, model_type="mistral")
    with pytest.raises(
        models.CheckpointError, match=r"config.json: model_type 'mistral' is not supported"
    ):
        models.load_hf(path)


def _edit_config(path, **changes):
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.update(changes)
    with open(config_path, "w") as f:
        json.dump(config, f)


def _rewrite_tensor(path, name, fn):
    from spar_jax.models import safetensors_io as st

    file = os.path.join(path, "model.safetensors")
    f = st.SafetensorsFile(file)
    tensors = [(n, np.array(f.read(n))) for n in f.names()]
    tensors = [(n, fn(a)) if n == name else (n, a) for n, a in tensors]
    del f
    st.write(file, [(n, a) for n, a in tensors if a is not None])


def test_error_missing_tensor(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    _rewrite_tensor(path, "model.layers.1.mlp.up_proj.weight", lambda a: None)
    with pytest.raises(
        models.CheckpointError, match=r"'model.layers.1.mlp.up_proj.weight' is missing"
    ):
        models.load_hf(path)


def test_error_misshaped_tensor(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    _rewrite_tensor(path, "model.layers.0.self_attn.k_proj.weight", lambda a: a[:16])
    with pytest.raises(
        models.CheckpointError,
        match=r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape \[16, 64\], expected \[32, 64\]",
    ):
        models.load_hf(path)


def test_error_uncastable_dtype(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    _rewrite_tensor(path, "model.norm.weight", lambda a: a.astype(np.int8))
    with pytest.raises(
        models.CheckpointError, match=r"'model.norm.weight' has dtype I8, which cannot be cast"
    ):
        models.load_hf(path)


def test_error_pickle_only(good_checkpoint, tmp_path):
    path = _copy(good_checkpoint, tmp_path / "c")
    os.remove(os.path.join(path, "model.safetensors"))
    (tmp_path / "c" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(models.CheckpointError, match="safetensors only"):
        models.load_hf(path)
