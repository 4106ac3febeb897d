"""Tests for spar_jax.training.data: formats, masks, skips, truncation, batches.

Reading files and the LLaMA-Factory layouts are tested in tests/test_records.py.

All on a tiny LLaMA-3-style tokenizer built locally (tests/tokenizer_fixtures.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from spar_jax.models.layers import is_right_padded
from spar_jax.tokenizer import Tokenizer
from spar_jax.training import data
from spar_jax.training.records import REASONS, DataError, RecordError
from tests.tokenizer_fixtures import GLM4_SPECIALS, LLAMA3_SPECIALS, build_hf_tokenizer

EOT = "<|eot_id|>"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "Write a short poem about the sea, in lowercase."}
CHOSEN = "the sea is blue and the rivers run fast."
REJECTED = "The Sea is blue, and the rivers run fast."
LONG = "Hello world, this is a small test of the tokenizer. " * 6


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    path = build_hf_tokenizer(
        root / "llama3", LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>"
    )
    return Tokenizer.load(path)


def pair(i: int) -> dict:
    """A distinct DPO record in the SPaR / LLaMA-Factory format."""
    return {
        "messages": [{"role": "user", "content": f"Write {i} words about spring."}],
        "chosen": {"role": "assistant", "content": f"spring is here {i}"},
        "rejected": {"role": "assistant", "content": f"Spring is here, {i} times"},
    }


def masked(tokens: np.ndarray, mask: np.ndarray) -> list[int]:
    return [int(t) for t, m in zip(tokens, mask, strict=True) if m]


def seqs(prepared: data.Prepared, i: int = 0) -> dict[str, list]:
    return {k: v[i].tolist() for k, v in prepared.sequences.items()}


# --- Formats and loss masks ---------------------------------------------------------------------


def test_dpo_formats_give_the_same_tokens(tok):
    prompt = [SYSTEM, USER]
    records = [
        {  # SPaR / LLaMA-Factory
            "messages": prompt,
            "chosen": {"role": "assistant", "content": CHOSEN},
            "rejected": {"role": "assistant", "content": REJECTED},
        },
        {"messages": prompt, "chosen": CHOSEN, "rejected": REJECTED},
        {  # TRL conversational
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": CHOSEN}],
            "rejected": [{"role": "assistant", "content": REJECTED}],
        },
        {  # TRL implicit prompt
            "chosen": [*prompt, {"role": "assistant", "content": CHOSEN}],
            "rejected": [*prompt, {"role": "assistant", "content": REJECTED}],
        },
    ]
    p = data.prepare_dpo(records, tok, max_length=256, strict=True)
    assert p.num_examples == 4 and p.report.num_skipped == 0
    expected = {
        "chosen_tokens": tok.encode_pair(prompt, CHOSEN)[0],
        "chosen_loss_mask": tok.encode_pair(prompt, CHOSEN)[1],
        "rejected_tokens": tok.encode_pair(prompt, REJECTED)[0],
        "rejected_loss_mask": tok.encode_pair(prompt, REJECTED)[1],
    }
    for i in range(4):
        assert seqs(p, i) == expected, i
    # TRL standard (a plain-string prompt is one user message).
    plain = data.prepare_dpo(
        [{"prompt": USER["content"], "chosen": CHOSEN, "rejected": REJECTED}], tok, max_length=256
    )
    assert seqs(plain)["chosen_tokens"] == tok.encode_pair([USER], CHOSEN)[0]


def test_dpo_loss_mask_is_on_the_response_only(tok):
    prompt = [
        SYSTEM,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello world"},
        USER,
    ]
    rec = {"messages": prompt, "chosen": CHOSEN, "rejected": REJECTED}
    p = data.prepare_dpo([rec], tok, max_length=256)
    b = next(data.batches(p, 1, seed=0))
    n = len(tok.encode_prompt(prompt))
    for side, text in (("chosen", CHOSEN), ("rejected", REJECTED)):
        tokens, loss = b[f"{side}_tokens"][0], b[f"{side}_loss_mask"][0]
        assert tok.decode(masked(tokens, loss)) == text + EOT
        assert not loss[:n].any() and loss[n : b[f"{side}_mask"][0].sum()].all()
        assert tok.decode(tokens[:n].tolist()) == tok.render(prompt)
    assert not b["chosen_loss_mask"][:, 0].any()


def test_sft_formats_train_on_and_train_flags(tok):
    conv = [
        SYSTEM,
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello world"},
        USER,
        {"role": "assistant", "content": CHOSEN},
    ]
    p_all = data.prepare_sft([{"messages": conv}], tok, max_length=256, train_on="all")
    p_last = data.prepare_sft([{"messages": conv}], tok, max_length=256, train_on="last")
    t, m = seqs(p_all)["tokens"], seqs(p_all)["loss_mask"]
    assert tok.decode(masked(t, m)) == "Hello world" + EOT + CHOSEN + EOT
    t, m = seqs(p_last)["tokens"], seqs(p_last)["loss_mask"]
    assert tok.decode(masked(t, m)) == CHOSEN + EOT
    assert (t, m) == tuple(map(list, tok.encode_pair(conv[:-1], CHOSEN)))
    # A message's own "train" flag overrides train_on.
    flagged = [*conv[:2], {**conv[2], "train": True}, *conv[3:]]
    p = data.prepare_sft([{"messages": flagged}], tok, max_length=256, train_on="last")
    assert seqs(p) == seqs(p_all)
    # TRL prompt/completion, as strings and as messages, equals the messages form.
    trl = [
        {"prompt": USER["content"], "completion": CHOSEN},
        {"prompt": [USER], "completion": [{"role": "assistant", "content": CHOSEN}]},
    ]
    p_trl = data.prepare_sft(trl, tok, max_length=256, strict=True)
    p_msg = data.prepare_sft(
        [{"messages": [USER, {"role": "assistant", "content": CHOSEN}]}], tok, max_length=256
    )
    assert seqs(p_trl, 0) == seqs(p_trl, 1) == seqs(p_msg)


def test_glm4_observation_role_is_known(tmp_path):
    path = build_hf_tokenizer(tmp_path / "glm4", GLM4_SPECIALS, eos="<|endoftext|>")
    glm = Tokenizer.load(path)
    rec = {"messages": [{"role": "observation", "content": "42"}], "chosen": "a", "rejected": "b"}
    assert data.prepare_dpo([rec], glm, max_length=64).num_examples == 1


# --- Malformed records -------------------------------------------------------------------------

BAD_DPO = [
    ("not_a_mapping", ["a list"]),
    ("missing_field", {"messages": [USER], "chosen": "a"}),
    ("missing_field", {"prompt": None, "chosen": "a", "rejected": "b"}),
    ("ambiguous_format", {"messages": [USER], "prompt": "p", "chosen": "a", "rejected": "b"}),
    ("wrong_type", {"messages": USER, "chosen": "a", "rejected": "b"}),
    ("wrong_type", {"messages": [{"role": "user", "content": 3}], "chosen": "a", "rejected": "b"}),
    (
        "unknown_role",
        {"messages": [{"role": "human", "content": "x"}], "chosen": "a", "rejected": "b"},
    ),
    (
        "bad_turn_order",
        {"messages": [USER, {"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"},
    ),
    (
        "bad_turn_order",
        {"prompt": "p", "chosen": {"role": "user", "content": "a"}, "rejected": "b"},
    ),
    ("empty_prompt", {"prompt": "  ", "chosen": "a", "rejected": "b"}),
    ("empty_response", {"prompt": "p", "chosen": " \n", "rejected": "b"}),
    ("chosen_equals_rejected", {"prompt": "p", "chosen": "same", "rejected": "same "}),
]


def test_malformed_dpo_records_are_counted(tok):
    records = [pair(0)] + [r for _, r in BAD_DPO] + [pair(1)]
    p = data.prepare_dpo(records, tok, max_length=64)
    assert p.index.tolist() == [0, len(records) - 1]
    expected: dict[str, list[int]] = {}
    for i, (reason, _) in enumerate(BAD_DPO, start=1):
        expected.setdefault(reason, []).append(i)
    assert p.report.indices == expected
    assert p.report.skipped == {r: len(ix) for r, ix in expected.items()}
    assert p.report.total == len(records)
    summary = p.report.summary()
    assert summary.startswith(f"2/{len(records)} records used")
    assert all(r in summary for r in expected)


def test_malformed_sft_records_are_counted(tok):
    a = {"role": "assistant", "content": "ok"}
    bad = [
        ("bad_turn_order", {"messages": [USER]}),
        ("missing_field", {"prompt": "p"}),
        ("empty_response", {"messages": [USER, {"role": "assistant", "content": ""}]}),
        ("no_trained_turn", {"messages": [USER, {**a, "train": False}]}),
        ("bad_train_flag", {"messages": [{**USER, "train": True}, a]}),
        ("wrong_type", {"messages": [USER, {**a, "train": "yes"}]}),
        ("tokenizer_error", {"messages": [a]}),  # an assistant turn must follow a user turn
    ]
    p = data.prepare_sft([{"messages": [USER, a]}] + [r for _, r in bad], tok, max_length=64)
    assert p.num_examples == 1
    assert {r: ix[0] for r, ix in p.report.indices.items()} == {
        r: i for i, (r, _) in enumerate(bad, start=1)
    }


def test_strict_raises_naming_the_record_index(tok):
    records = [pair(0), pair(1), {"prompt": "p", "chosen": "a"}]
    with pytest.raises(RecordError, match=r"record 2: missing_field: no 'rejected'") as e:
        data.prepare_dpo(records, tok, max_length=64, strict=True)
    assert e.value.index == 2 and e.value.reason == "missing_field"
    with pytest.raises(RecordError, match="record 0: bad_turn_order"):
        data.prepare_sft([{"messages": [USER]}], tok, max_length=64, strict=True)


def test_zero_usable_records_is_an_error_naming_the_reasons(tok):
    records = [{"prompt": "p", "chosen": "a", "rejected": "a"}, {"chosen": "x"}]
    with pytest.raises(
        DataError, match=r"none of the 2 records.*chosen_equals_rejected: 1 \(e\.g\. record 0"
    ) as e:
        data.prepare_dpo(records, tok, max_length=64)
    assert "missing_field" in str(e.value)
    with pytest.raises(DataError, match="none of the 0 records"):
        data.prepare_sft([], tok, max_length=64)


def test_every_reason_is_documented():
    assert all(isinstance(v, str) and v for v in REASONS.values())
    with pytest.raises(AssertionError):
        RecordError("no_such_reason", "x")


# --- Truncation --------------------------------------------------------------------------------


def test_dpo_truncation_cuts_the_prompt_left_then_the_responses_right(tok):
    prompt = [SYSTEM, {"role": "user", "content": LONG}]
    long_chosen, short_rejected = LONG + " the end", "no"
    prompt_ids = tok.encode_prompt(prompt)
    c_ids = tok.encode_pair(prompt, long_chosen)[0][len(prompt_ids) :]
    r_ids = tok.encode_pair(prompt, short_rejected)[0][len(prompt_ids) :]
    assert len(prompt_ids) > 30 and len(c_ids) > 30 and len(r_ids) < 5
    rec = {"messages": prompt, "chosen": long_chosen, "rejected": short_rejected}
    p = data.prepare_dpo([rec], tok, max_length=20, max_prompt_length=12)
    s = seqs(p)
    assert s["chosen_tokens"] == prompt_ids[-12:] + c_ids[:8]  # the generation prompt is kept
    assert s["rejected_tokens"] == prompt_ids[-12:] + r_ids  # short enough: not cut
    assert s["chosen_loss_mask"] == [False] * 12 + [True] * 8
    assert p.report.truncated == {"prompt": 1, "response": 1}
    assert p.lengths.max() <= 20
    # A long pair whose prompt fits: only the responses are cut; a short pair: nothing.
    short = {"prompt": "hi", "chosen": long_chosen, "rejected": "no"}
    p = data.prepare_dpo([short, pair(0)], tok, max_length=40, max_prompt_length=20)
    assert p.report.truncated == {"response": 1} and p.lengths.max() == 40
    assert seqs(p)["chosen_tokens"][:17] == tok.encode_prompt([{"role": "user", "content": "hi"}])
    assert seqs(p, 1) == seqs(data.prepare_dpo([pair(0)], tok, max_length=256))


def test_truncation_skips(tok):
    long_prompt = {"prompt": LONG, "chosen": "yes", "rejected": "no"}
    p = data.prepare_dpo([long_prompt, pair(0)], tok, max_length=30)  # prompt never cut
    assert p.report.skipped == {"too_long": 1}
    same_start = {"prompt": "hi", "chosen": LONG + "A", "rejected": LONG + "B"}
    p = data.prepare_dpo([same_start, pair(0)], tok, max_length=30)
    assert p.report.skipped == {"identical_after_truncation": 1}
    with pytest.raises(ValueError, match="max_prompt_length"):
        data.prepare_dpo([pair(0)], tok, max_length=30, max_prompt_length=30)


def test_sft_truncation(tok):
    conv = [{"role": "user", "content": LONG}, {"role": "assistant", "content": LONG}]
    tokens, mask = tok.encode_conversation(conv)
    n = mask.index(True)
    p = data.prepare_sft([{"messages": conv}], tok, max_length=24, max_prompt_length=10)
    s = seqs(p)
    assert s["tokens"] == tokens[n - 10 : n + 14]
    assert s["loss_mask"] == [False] * 10 + [True] * 14
    assert p.report.truncated == {"prompt": 1, "response": 1}
    # Without max_prompt_length a context longer than max_length leaves no target.
    short = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    }
    p = data.prepare_sft([{"messages": conv}, short], tok, max_length=24)
    assert p.report.skipped == {"too_long": 1} and p.index.tolist() == [1]


# --- Batching ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tok):
    return data.prepare_dpo([pair(i) for i in range(13)], tok, max_length=64)


def as_lists(it):
    return [{k: v.tolist() for k, v in b.items()} for b in it]


def test_batches_are_deterministic_per_seed_and_epoch(prepared):
    a = as_lists(data.batches(prepared, 4, seed=3, epoch=1))
    assert a == as_lists(data.batches(prepared, 4, seed=3, epoch=1))
    assert a != as_lists(data.batches(prepared, 4, seed=3, epoch=2))
    assert a != as_lists(data.batches(prepared, 4, seed=4, epoch=1))
    ordered = as_lists(data.batches(prepared, 4, seed=3, shuffle=False))
    assert [i for b in ordered for i in b["index"]] == list(range(13)) + [-1] * 3


def test_batches_resume_from_start(prepared):
    full = as_lists(data.batches(prepared, 4, seed=0, epoch=5))
    assert len(full) == data.num_batches(prepared, 4) == 4
    for k in range(5):
        assert as_lists(data.batches(prepared, 4, seed=0, epoch=5, start=k)) == full[k:]
    with pytest.raises(ValueError, match="start=5"):
        data.batches(prepared, 4, seed=0, start=5)


def test_each_record_once_per_epoch_and_padding_rows(prepared, tok):
    for epoch in range(3):
        bs = list(data.batches(prepared, 5, seed=0, epoch=epoch))
        index = np.concatenate([b["index"] for b in bs])
        assert sorted(index[index >= 0].tolist()) == list(range(13))
        assert (index == -1).sum() == 2
    last = bs[-1]
    pad = last["index"] == -1
    assert pad.tolist() == [False] * 3 + [True] * 2
    assert last["weight"].tolist() == [1.0] * 3 + [0.0] * 2
    for side in ("chosen", "rejected"):
        assert not last[f"{side}_mask"][pad].any() and not last[f"{side}_loss_mask"][pad].any()
        assert (last[f"{side}_tokens"][pad] == tok.pad_id).all()
    for b in bs:
        assert b["chosen_tokens"].shape == b["rejected_tokens"].shape
        assert b["chosen_tokens"].shape[1] % 8 == 0
        assert b["chosen_tokens"].dtype == np.int32 and b["weight"].dtype == np.float32
        assert b["index"].dtype == np.int64 and b["chosen_loss_mask"].dtype == np.bool_
        for side in ("chosen", "rejected"):  # rows are the prepared examples, right-padded
            assert bool(is_right_padded(b[f"{side}_mask"]))  # what fused attention relies on
            for row, i in enumerate(b["index"]):
                if i >= 0:
                    seq = prepared.sequences[f"{side}_tokens"][i]
                    assert b[f"{side}_tokens"][row, : len(seq)].tolist() == seq.tolist()
                    assert b[f"{side}_mask"][row].sum() == len(seq)
    fixed = next(data.batches(prepared, 5, seed=0, length=64))
    assert fixed["chosen_tokens"].shape == (5, 64)
    with pytest.raises(ValueError, match="length=4"):
        data.batches(prepared, 5, seed=0, length=4)


def test_process_sharding_partitions_the_global_batch(prepared):
    whole = list(data.batches(prepared, 8, seed=1, epoch=0, data_parallel=4))
    shards = [
        list(data.batches(prepared, 8, seed=1, process_index=i, process_count=2, data_parallel=4))
        for i in range(2)
    ]
    for k, b in enumerate(whole):
        for key, value in b.items():  # contiguous rows: process i holds rows [4i, 4i + 4)
            got = np.concatenate([shards[0][k][key], shards[1][k][key]])
            np.testing.assert_array_equal(got, value)
            assert shards[0][k][key].shape[0] == 4
    with pytest.raises(ValueError, match="divide by"):
        data.batches(prepared, 6, seed=0, process_count=4)
    with pytest.raises(ValueError, match="divide by"):
        data.batches(prepared, 6, seed=0, data_parallel=4)


def test_sft_batch_contract(tok):
    records = [{"prompt": f"Say {i}", "completion": "ok " * i} for i in range(1, 4)]
    p = data.prepare_sft(records, tok, max_length=64)
    b = next(data.batches(p, 4, seed=0, pad_to_multiple=None))
    assert set(b) == {"tokens", "mask", "loss_mask", "weight", "index"}
    assert b["tokens"].shape[1] == p.lengths.max()
    assert not b["loss_mask"][:, 0].any() and not (b["loss_mask"] & ~b["mask"]).any()
    assert bool(is_right_padded(b["mask"]))
