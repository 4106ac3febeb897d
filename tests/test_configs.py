"""Config files and `--config.key=value` overrides."""

import glob
import os

import pytest

from spar_jax import configs

ROOT = os.path.dirname(os.path.dirname(__file__))
CONFIG = """
import ml_collections

def get_config():
    c = ml_collections.ConfigDict()
    c.model = "tiny"
    c.train = ml_collections.ConfigDict(dict(lr=2e-7, steps=10, bf16=False, mesh=(1, 1, 1)))
    c.seed = None
    return c
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(CONFIG)
    return str(path)


def test_overrides_are_typed(config_file):
    c = configs.load(
        config_file,
        [
            "--config.train.lr=1e-6",
            "--config.train.steps=3",
            "--config.train.bf16=True",
            "--config.train.mesh=(2,2,2)",
            "--config.model=llama3_8b",
            "--config.seed=7",
        ],
    )
    assert c.train.lr == 1e-6 and c.train.steps == 3 and c.train.bf16 is True
    assert c.train.mesh == (2, 2, 2) and c.model == "llama3_8b" and c.seed == 7


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.lrr=1", "unknown config key 'train.lrr'"),
        ("--config.optim.lr=1", "unknown config key 'optim'"),
        ("--config.train.steps=abc", "not a int"),
        ("--config.train.steps=1.5", "expected int"),
        ("--config.train.bf16=1", "expected True or False"),
        ("--config.train.lr", "must look like --config.key=value"),
    ],
)
def test_bad_overrides_name_the_key(config_file, override, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.load(config_file, [override])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(configs.ConfigError, match="config file not found"):
        configs.load(str(tmp_path / "nope.py"))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))))
def test_every_shipped_config_builds(path):
    assert configs.load(path) is not None


def test_from_argv_reads_path_and_overrides(config_file):
    c = configs.from_argv(["--config", config_file, "--config.train.steps=4"], "configs/x.py")
    assert c.train.steps == 4
    assert configs.from_argv([f"--config={config_file}"], "configs/x.py").model == "tiny"
    with pytest.raises(configs.ConfigError, match=r"pass --config configs/x\.py"):
        configs.from_argv(["--config.train.steps=4"], "configs/x.py")
