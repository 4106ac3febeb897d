"""The entry point (`python -m spar_jax`): errors, the command table, and the sample command
with its context policy (`sampling.context`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spar_jax import cli, sampling
from spar_jax.errors import SparError
from spar_jax.sampling import context

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess:
    """`python -m spar_jax ARGS` in a fresh process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAR_")}
    return subprocess.run(
        [sys.executable, "-m", "spar_jax", *args],
        cwd=ROOT,
        env=dict(env, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- Errors: a project error is one line, a bug keeps its traceback ---------------------------


def test_project_error_is_one_line_through_the_real_command():
    r = _run("train-dpo", "--config", "configs/dpo_demo.py", "--config.optimizer.lr=1e-3")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("train-dpo: error: unknown config key 'optimizer.lr'")
    assert "learning_rate" in r.stderr  # names the fix: the keys that exist there


def _fails_with(exc: BaseException):
    def command(argv):
        raise exc

    return command


@pytest.fixture
def command(monkeypatch):
    """Registers a `test-cmd` whose function the test sets."""

    def register(function, target="spar_jax.cli:usage"):
        monkeypatch.setitem(cli.COMMANDS, "test-cmd", cli.Command(target, "a test"))
        monkeypatch.setattr(cli.Command, "load", lambda self: function)

    return register


def test_project_errors_print_one_line_and_exit_1(command, capsys):
    from spar_jax.training.records import DataError

    command(_fails_with(DataError("pairs.jsonl line 3: not JSON; fix or drop the line")))
    assert cli.main(["test-cmd"]) == 1
    assert capsys.readouterr().err == (
        "test-cmd: error: pairs.jsonl line 3: not JSON; fix or drop the line\n"
    )


@pytest.mark.parametrize("bug", [ValueError("a bare ValueError"), KeyError("x"), AssertionError()])
def test_other_exceptions_keep_their_traceback(command, capsys, bug):
    command(_fails_with(bug))
    with pytest.raises(type(bug)):
        cli.main(["test-cmd"])
    assert capsys.readouterr().err == ""  # nothing swallowed it into a one-liner


def test_project_error_classes_share_the_base():
    from spar_jax import configs, models, sharding, tokenizer
    from spar_jax.training import loop, records, runner

    classes = [
        configs.ConfigError,
        sharding.ShardingError,
        models.CheckpointError,
        records.DataError,
        sampling.CacheBudgetError,
        tokenizer.TokenizerNotFoundError,
        tokenizer.TokenizerLoadError,
        tokenizer.ChatTemplateError,
        loop.NonFiniteLossError,
        context.ContextError,
        models.ModelConfigError,
        runner.ResumeMismatchError,
    ]
    assert all(issubclass(c, SparError) for c in classes)
    assert issubclass(configs.ConfigError, ValueError)  # callers that caught ValueError still do
    assert issubclass(models.ModelConfigError, ValueError)


def test_a_bad_model_setting_is_one_line_through_the_real_command():
    r = _run("plan", "--config", "configs/sft_demo.py", "--config.compute_dtype=fp8")
    assert r.returncode == 1
    assert r.stderr == "plan: error: dtype='fp8'; use one of ('float32', 'bfloat16', 'float16')\n"


def test_commands_in_one_table_and_missing_ones_are_not_available(monkeypatch, capsys, tmp_path):
    for name, c in cli.COMMANDS.items():
        module = c.target.split(":")[0]
        assert module.startswith("spar_jax.cli."), name
        if os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"):
            assert callable(c.load()), name
    monkeypatch.setitem(cli.COMMANDS, "later", cli.Command("spar_jax.cli.not_yet:main", "later"))
    assert cli.main(["later", "--config", "x.py"]) == 2
    assert "later: not available" in capsys.readouterr().err
    # A command that exists but imports something missing is a bug, not "not available".
    (tmp_path / "broken_command.py").write_text("import a_dependency_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("broken_command:main", "x"))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_not_installed"):
        cli.main(["broken"])


def test_the_runtime_starts_before_the_command(command, monkeypatch):
    from spar_jax import sharding

    calls = []
    monkeypatch.setattr(sharding, "initialize_distributed", lambda: calls.append("init"))
    command(lambda argv: calls.append(("run", argv)) or 0)
    assert cli.main(["test-cmd", "--config.x=1"]) == 0
    assert calls == ["init", ("run", ["--config.x=1"])]
    calls.clear()
    assert cli.main(["test-cmd", "--help"]) == 0  # help joins no runtime
    assert calls == [("run", ["--help"])]


# --- The context policy ---------------------------------------------------------------------


def test_fit_prompts_skips_and_counts():
    prompts = [[1] * 5, [2] * 11, [3] * 12, list(range(30))]
    kept, index, report = context.fit_prompts(prompts, max_new_tokens=4, max_positions=16)
    assert index == [0, 1, 2] and kept == prompts[:3]  # 12 + 4 fits 16 exactly
    assert report.skipped == [3] and report.truncated == [] and report.budget == 12
    assert "1 of 4 prompts" in report.summary() and "skipped 1" in report.summary()


def test_fit_prompts_truncates_from_the_left_and_counts():
    prompts = [[1] * 5, list(range(30)), list(range(100, 113))]
    kept, index, report = context.fit_prompts(
        prompts, max_new_tokens=4, max_positions=16, policy="truncate_left"
    )
    assert index == [0, 1, 2]
    assert kept == [[1] * 5, list(range(18, 30)), list(range(101, 113))]
    assert all(len(k) + 4 <= 16 for k in kept)
    assert report.truncated == [1, 2] and report.skipped == [] and report.longest == 30
    assert "truncated 2 from the left" in report.summary()


def test_fit_prompts_refuses_what_leaves_no_room():
    with pytest.raises(context.ContextError, match="lower max_new_tokens below 16"):
        context.fit_prompts([[1]], max_new_tokens=16, max_positions=16)
    with pytest.raises(context.ContextError, match="prompt_overflow='drop'"):
        context.fit_prompts([[1]], max_new_tokens=1, max_positions=16, policy="drop")


# --- The sample command ---------------------------------------------------------------------

NEW = 6
POSITIONS = 48


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from spar_jax import models
    from tests.hf_models import save_tiny
    from tests.tokenizer_fixtures import LLAMA3_SPECIALS, build_hf_tokenizer

    path = tmp_path_factory.mktemp("llama")
    save_tiny(str(path), "llama", vocab_size=1100, max_position_embeddings=POSITIONS)
    build_hf_tokenizer(path, LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>")
    cfg, params = models.load_hf(str(path))
    return cfg, params, str(path)


def _sample_argv(path, prompts, out, *extra):
    return [
        "sample", "--config", "configs/sample.py", f"--config.model={path}",
        f"--config.prompts={prompts}", f"--config.output={out}", "--config.dtype=float32",
        "--config.n=1", "--config.temperature=0.0", f"--config.max_new_tokens={NEW}", *extra,
    ]  # fmt: skip


def _greedy(cfg, params, tok, ids):
    stop = (*tok.stop_token_ids, *cfg.eos_token_ids)
    sp = sampling.SamplingParams(max_new_tokens=NEW, stop_token_ids=stop)
    return sampling.generate(cfg, params, ids, sp)


def test_sample_command_counts_malformed_and_overlong_prompts(llama, tmp_path, capsys):
    from spar_jax.tokenizer import Tokenizer

    cfg, params, path = llama
    tok = Tokenizer.load(path)
    long = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
    rows = [{"prompt": w, "prompt_id": f"p{i}"} for i, w in enumerate(["Hi", long, "No", "Go"])]
    lines = [json.dumps(r) for r in rows[:2]] + ["{not json", json.dumps({"text": "x"})]
    prompts = tmp_path / "in.jsonl"
    cut = '{"prompt": "a last line cut short by a killed wri'
    prompts.write_text("\n".join([*lines, *map(json.dumps, rows[2:]), cut]))
    ids = [tok.encode_prompt([{"role": "user", "content": r["prompt"]}]) for r in rows]
    budget = POSITIONS - NEW
    assert len(ids[1]) > budget >= max(len(ids[i]) for i in (0, 2, 3))

    out = tmp_path / "skip.jsonl"
    assert cli.main(_sample_argv(path, prompts, out)) == 0
    printed = capsys.readouterr().out
    assert "skipped 3 malformed rows" in printed
    assert f"{prompts} line 3" in printed and f"{prompts} line 7" in printed  # where they are
    assert f"1 of 4 prompts longer than the {budget} tokens" in printed and "skipped 1" in printed
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in written] == ["p0", "p2", "p3"]
    want = _greedy(cfg, params, tok, [ids[0], ids[2], ids[3]])
    for r, toks, reason in zip(written, want.tokens, want.finish_reason, strict=True):
        assert r["completions"] == [tok.decode(toks, skip_special_tokens=True)]
        assert r["finish_reasons"] == [reason] and r["num_tokens"] == [len(toks)]

    out = tmp_path / "truncate.jsonl"
    argv = _sample_argv(path, prompts, out, "--config.prompt_overflow=truncate_left")
    assert cli.main(argv) == 0
    assert "truncated 1 from the left" in capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in written] == ["p0", "p1", "p2", "p3"]
    end = ids[1][-budget:]  # the end of the prompt, where the template asks for the answer
    want = _greedy(cfg, params, tok, [end])
    assert written[1]["completions"] == [tok.decode(want.tokens[0], skip_special_tokens=True)]
    assert len(end) + written[1]["num_tokens"][0] <= POSITIONS  # never past the positions

    assert cli.main([*_sample_argv(path, prompts, out), "--config.strict=True"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{prompts} line 3: not_json" in err
