"""Meshes, logical-axis rules and sharded forward passes on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from spar_jax import models, sharding

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (2, 1, 4)]


@pytest.fixture(scope="module")
def tiny():
    cfg = models.preset("tiny")
    return cfg, models.init_params(cfg, jax.random.key(0))


def test_eight_fake_devices():
    assert jax.device_count() == 8, (
        "tests/conftest.py sets --xla_force_host_platform_device_count=8"
    )


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_forward_matches_single_device(tiny, shape):
    cfg, params = tiny
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 16)).astype(np.int32)
    mask = np.ones_like(tokens, bool)
    mask[3, :5] = False
    want, _ = models.apply(cfg, params, jnp.asarray(tokens), mask=jnp.asarray(mask))

    mesh = sharding.make_mesh(shape)
    placed = jax.device_put(params, sharding.param_shardings(cfg, mesh))
    batch = sharding.shard_batch({"tokens": tokens, "mask": mask}, mesh)
    with sharding.context(mesh, sharding.TRAIN_RULES):
        got, _ = jax.jit(lambda p, b: models.apply(cfg, p, b["tokens"], mask=b["mask"]))(
            placed, batch
        )
    np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(want)[mask], atol=1e-5)


def test_large_parameters_really_are_sharded(tiny):
    cfg, params = tiny
    mesh = sharding.make_mesh((2, 2, 2))
    placed = jax.device_put(params, sharding.param_shardings(cfg, mesh))
    q = placed["layers"]["attn"]["q"]  # [L, D, N, H] = [2, 64, 4, 16]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)
    gate = placed["layers"]["mlp"]["gate"]  # [L, D, F] = [2, 64, 176]
    assert gate.addressable_shards[0].data.shape == (2, 32, 88)
    emb = placed["embedding"]  # [V, D] = [512, 64]: vocab on tensor, embed on fsdp
    assert emb.addressable_shards[0].data.shape == (256, 32)
    norm = placed["final_norm"]["scale"]
    assert norm.sharding.is_fully_replicated
    # Sampling rules keep weights whole across fsdp, split only on tensor.
    sample = sharding.param_shardings(cfg, mesh, sharding.SAMPLE_RULES)
    assert sample["layers"]["attn"]["q"].spec == P(None, None, "tensor", None)


def test_indivisible_dimension_is_replicated_not_wrong():
    cfg = models.preset("tiny", num_kv_heads=2)
    mesh = sharding.make_mesh((2, 1, 4))
    specs = sharding.param_shardings(cfg, mesh)
    assert specs["layers"]["attn"]["k"].spec == P(None, None, None, None)  # 2 kv heads, tensor=4
    assert specs["layers"]["attn"]["q"].spec == P(None, None, "tensor", None)


def test_parameter_without_a_rule_is_an_error(tiny):
    cfg, _ = tiny
    rules = tuple(r for r in sharding.TRAIN_RULES if r[0] != "mlp")
    with pytest.raises(sharding.ShardingError, match="logical axis 'mlp' has no sharding rule"):
        sharding.param_shardings(cfg, sharding.make_mesh((1, 8, 1)), rules)


def test_mesh_errors_name_both_numbers():
    with pytest.raises(sharding.ShardingError, match="needs 16 devices, but 8 are available"):
        sharding.make_mesh((2, 8, 1))
    with pytest.raises(sharding.ShardingError, match="8 devices are not divisible by 3"):
        sharding.make_mesh((3, -1, 1))
    assert sharding.mesh_shape((2, -1, 2), 8) == (2, 2, 2)


def test_batch_not_divisible_is_an_error_naming_both_numbers():
    mesh = sharding.make_mesh((2, 4, 1))
    with pytest.raises(
        sharding.ShardingError,
        match="global batch of 6 rows is not divisible by the data-parallel size 8",
    ):
        sharding.shard_batch({"tokens": np.zeros((6, 4), np.int32)}, mesh)


def test_rules_from_config():
    assert sharding.rules_from_config("sample") == sharding.SAMPLE_RULES
    assert sharding.rules_from_config([["embed", ["fsdp"]]]) == (("embed", ("fsdp",)),)
    assert sharding.rules_from_config({"embed": ["fsdp"], "mlp": None}) == (
        ("embed", ("fsdp",)),
        ("mlp", None),
    )
    with pytest.raises(sharding.ShardingError, match="'model' is not a mesh axis"):
        sharding.rules_from_config([("embed", "model")])
    with pytest.raises(sharding.ShardingError, match="unknown rule set"):
        sharding.rules_from_config("inference")


def test_load_hf_places_each_tensor_on_its_shards(tmp_path):
    from tests.hf_models import save_tiny

    _, path = save_tiny(tmp_path / "hf", "llama")
    mesh = sharding.make_mesh((1, 4, 2))
    _, params = models.load_hf(path, shardings=lambda c: sharding.param_shardings(c, mesh))
    _, plain = models.load_hf(path)
    gate = params["layers"]["mlp"]["gate"]  # [L, D, F] = [2, 64, 96]: embed on fsdp, mlp on tensor
    assert gate.sharding.spec == P(None, "fsdp", "tensor")
    assert gate.addressable_shards[0].data.shape == (2, 16, 48)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, plain
    )
