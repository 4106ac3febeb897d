"""The synthetic world's tokenizer, tiny model files and the actor/judge/refiner probe."""

import json
import random

import jax
import numpy as np

from spar_jax import models, tasks
from spar_jax.spar import prompts
from spar_jax.spar.generator import ScriptedChat
from spar_jax.tasks import model, probe, teacher, world
from spar_jax.tokenizer import Tokenizer


def test_tokenizer_is_llama3_and_keeps_letters_apart(tmp_path):
    model.build_tokenizer(str(tmp_path))
    tok = Tokenizer.load(str(tmp_path))
    assert tok.family == "llama3" and tok.vocab_size <= 1024
    # One token per written letter, so counting letters is counting tokens.
    ids = tok.encode("a a a B B")
    assert len(ids) == 5 and tok.decode(ids) == "a a a B B"
    # The judge template's words are whole tokens: a judgment prompt stays short.
    assert len(tok.encode(prompts.JUDGE_TEMPLATE)) < 160


def test_write_seed_files(tmp_path):
    paths = model.write_seed(str(tmp_path), num_prompts=20, num_eval=9, size="xs", batch_size=4)
    cfg, params = models.load_hf(paths["init"])
    tok = Tokenizer.load(paths["init"])
    assert cfg.vocab_size % 64 == 0 and cfg.vocab_size >= tok.vocab_size
    assert set(cfg.eos_token_ids) == set(tok.stop_token_ids)
    assert 2e5 < models.count_params(cfg) < 1e6
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == models.count_params(cfg)
    rows = [json.loads(line) for line in open(paths["sft"])]
    assert len(rows) == 60
    # Runs of 4 rows of one role (same number of turns) while full runs last.
    turns = [len(r["messages"]) for r in rows[:56]]
    assert all(len(set(turns[i : i + 4])) == 1 for i in range(0, 56, 4))
    evals = [json.loads(line) for line in open(paths["eval_prompts"])]
    assert evals == tasks.make_prompts(9, seed=tasks.HELD_OUT_SEED)  # held out: another seed


def _scripted(rows, *, perfect):
    by_prompt = {r["prompt"]: r for r in rows}
    head = prompts.JUDGE_TEMPLATE.split("{instruction}")[0]

    def split_judge(text):
        instr, rest = text[len(head) :].split("\u201d\n\nOutput: \u201c", 1)
        return by_prompt[instr], rest.rsplit("\u201d", 1)[0]

    def reply(conv, rng):
        rnd = random.Random(int(rng.integers(1 << 30)))
        if len(conv) == 1 and conv[0]["content"] in by_prompt:  # actor
            return teacher.correct_answer(by_prompt[conv[0]["content"]], rnd) if perfect else ""
        row, answer = split_judge(conv[0]["content"])
        if len(conv) == 1:  # judge
            return world.check(row, answer)[1] if perfect else "Final Judgement: Yes"
        fixed = teacher.correct_answer(row, rnd)  # refine
        return prompts.format_refinement("fix", fixed) if perfect else "I cannot."

    return ScriptedChat(reply)


def test_probe_scores_a_perfect_and_a_useless_model():
    rows = tasks.make_prompts(12, seed=7)
    good = probe.probe(_scripted(rows, perfect=True), rows, log=lambda s: None)
    assert good["actor_greedy"] == good["actor_sampled"] == 1.0
    assert good["judge_acc_teacher"] == good["judge_acc_actor"] == 1.0
    assert good["judge_invalid"] == 0.0
    assert good["refine_success_teacher"] == 1.0 and good["refine_actor_failed"] == 0
    bad = probe.probe(_scripted(rows, perfect=False), rows, log=lambda s: None)
    assert bad["actor_greedy"] == 0.0
    assert bad["judge_acc_teacher"] == 0.5 and bad["judge_acc_actor"] == 0.0
    assert bad["refine_unparsed"] == 1.0 and bad["refine_success_teacher"] == 0.0
    assert bad["refine_actor_failed"] == 12 and np.isclose(bad["judge_yes_rate"], 1.0)
