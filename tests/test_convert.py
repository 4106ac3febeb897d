"""`python -m spar_jax convert` and native (orbax) checkpoints."""

import jax
import numpy as np
import pytest

from spar_jax import models
from spar_jax.__main__ import main
from spar_jax.models import native
from tests.hf_models import save_tiny


@pytest.mark.parametrize("kind", ["llama", "glm4"])
def test_convert_hf_to_native_and_back_is_bit_identical(kind, tmp_path, capsys):
    _, hf_dir = save_tiny(tmp_path / "hf", kind)
    assert main(["convert", "hf-to-native", hf_dir, str(tmp_path / "native")]) == 0
    assert "converted" in capsys.readouterr().out
    assert main(["convert", "native-to-hf", str(tmp_path / "native"), str(tmp_path / "hf2")]) == 0
    cfg, params = models.load_hf(hf_dir)
    cfg2, params2 = models.load_hf(str(tmp_path / "hf2"))
    cfg3, params3 = native.load_native(str(tmp_path / "native"))
    assert cfg == cfg2 == cfg3
    for other in (params2, params3):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, other)


def test_convert_reports_bad_input(tmp_path, capsys):
    assert main(["convert", "hf-to-native", str(tmp_path / "missing"), str(tmp_path / "o")]) == 1
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert main(["convert", "native-to-hf", str(tmp_path), str(tmp_path / "o")]) == 1
    assert "model_config.json: missing" in capsys.readouterr().err


def test_smoke_command_passes(capsys):
    assert main(["smoke", "--batch", "2", "--length", "16"]) == 0
    assert "smoke test passed" in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
