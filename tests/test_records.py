"""Tests for spar_jax.training.records: reading files line by line, LLaMA-Factory layouts, prompts.

Files are crafted here in the layouts of JSON lines, JSON arrays (LLaMA-Factory, the official SPaR
code's `json.dump(..., indent=4)`), Parquet and saved datasets; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json

import pytest

from spar_jax.tokenizer import Tokenizer
from spar_jax.training import data, records
from spar_jax.training.records import DataError, RecordError
from tests.tokenizer_fixtures import GLM4_SPECIALS, LLAMA3_SPECIALS, build_hf_tokenizer

SYSTEM = "You are a helpful assistant."
Q1, A1 = "Name a colour.", "blue"
QUERY, INPUT = "Write a poem about the sea.", "in lowercase, four lines"
CHOSEN, REJECTED = "the sea is blue", "The Sea Is Blue"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    path = build_hf_tokenizer(
        root / "llama3", LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>"
    )
    return Tokenizer.load(path)


def pair(i: int) -> dict:
    return {
        "messages": [{"role": "user", "content": f"Write {i} words about spring."}],
        "chosen": {"role": "assistant", "content": f"spring is here {i}"},
        "rejected": {"role": "assistant", "content": f"Spring is here, {i} times"},
    }


def seqs(prepared: data.Prepared, i: int) -> dict[str, list]:
    return {k: v[i].tolist() for k, v in prepared.sequences.items()}


def write_jsonl(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


# --- Reading files -----------------------------------------------------------------------------


def test_bad_lines_are_skipped_with_their_line_numbers(tmp_path, tok):
    good = [json.dumps(pair(i)) for i in range(3)]
    path = tmp_path / "bad.jsonl"
    # line 2 not JSON, line 4 blank (ignored), line 5 not an object, last line cut short.
    path.write_text("\n".join([good[0], "not json", good[1], "", "[1, 2]", good[2], good[0][:30]]))
    rows, report = records.load_records(path)
    assert rows == [pair(0), pair(1), pair(2)]
    assert report.total == 3 and report.num_unreadable == 3
    assert report.indices == {
        "not_json": [f"{path} line 2"],
        "not_an_object": [f"{path} line 5"],
        "truncated_line": [f"{path} line 7"],
    }
    prepared = data.prepare_dpo(rows, tok, max_length=64, report=report)
    assert prepared.index.tolist() == [0, 1, 2] and prepared.report.total == 3
    summary = prepared.report.summary()
    assert summary.startswith("3/3 records used, 0 skipped; 3 unreadable lines skipped")
    assert f"{path} line 2" in summary and f"{path} line 7" in summary
    with pytest.raises(RecordError, match=r"bad\.jsonl line 2: not_json: .*strict=False") as e:
        records.load_records(path, strict=True)
    assert e.value.index == f"{path} line 2"


def test_bad_records_are_located_by_file_and_line(tmp_path, tok):
    write_jsonl(tmp_path / "a.jsonl", [json.dumps(pair(0))])
    write_jsonl(tmp_path / "b.jsonl", ["", json.dumps({"prompt": "p", "chosen": "x"}), "{"])
    (tmp_path / "c.json").write_text(json.dumps([pair(1), {"prompt": "q"}]))
    rows, report = records.load_records([str(tmp_path / "[ab].jsonl"), tmp_path / "c.json"])
    assert [report.locate(i) for i in range(4)] == [
        f"{tmp_path}/a.jsonl line 1",
        f"{tmp_path}/b.jsonl line 2",
        f"{tmp_path}/c.json row 1",
        f"{tmp_path}/c.json row 2",
    ]
    p = data.prepare_dpo(rows, tok, max_length=64, report=report)
    assert p.index.tolist() == [0, 2] and p.report.indices["missing_field"] == [1, 3]
    assert f"record 1 ({tmp_path}/b.jsonl line 2), record 3 ({tmp_path}/c.json row 2)" in (
        p.report.summary()
    )
    with pytest.raises(RecordError, match=r"^record 1 \(.*b\.jsonl line 2\): missing_field"):
        data.prepare_dpo(rows, tok, max_length=64, report=report, strict=True)


def test_a_cut_last_line_is_truncated_a_cut_middle_line_is_not_json(tmp_path):
    cut = json.dumps(pair(0))[:20]
    path = write_jsonl(tmp_path / "d.jsonl", [cut, json.dumps(pair(1))])  # ends with newline
    _, report = records.load_records(path)
    assert report.skipped == {"not_json": 1}
    (tmp_path / "e.jsonl").write_text(json.dumps(pair(1)) + "\n" + cut)
    with pytest.raises(RecordError, match=r"e\.jsonl line 2: truncated_line"):
        records.load_records(tmp_path / "e.jsonl", strict=True)


def test_json_arrays_compressed_files_and_json_lines_named_json(tmp_path):
    rows = [pair(0), pair(1)]
    (tmp_path / "a.json").write_text(json.dumps([rows[0], "a string", rows[1]], indent=4))
    got, report = records.load_records(tmp_path / "a.json")
    assert got == rows and report.indices == {"not_an_object": [f"{tmp_path}/a.json row 2"]}
    (tmp_path / "l.json").write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n")
    assert records.load_records(tmp_path / "l.json")[0] == rows
    (tmp_path / "one.json").write_text(json.dumps(rows[0], indent=2))
    assert records.load_records(tmp_path / "one.json")[0] == rows[:1]
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n{oops\n" + json.dumps(rows[1]) + "\n")
    got, report = records.load_records(tmp_path / "z.jsonl.gz")
    assert got == rows and report.indices == {"not_json": [f"{tmp_path}/z.jsonl.gz line 2"]}
    (tmp_path / "broken.json").write_text(json.dumps(rows)[:-5])
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON.*\.jsonl"):
        records.load_records(tmp_path / "broken.json")


def test_every_source_gives_the_same_records(tmp_path, tok):
    import datasets

    rows = [pair(0), {"prompt": "p", "chosen": "a", "rejected": "b"}, pair(2)]
    rows[2]["messages"] = [
        {"role": "system", "content": SYSTEM, "train": False},
        *rows[2]["messages"],
    ]
    jsonl = write_jsonl(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    (tmp_path / "d.json").write_text(json.dumps(rows))
    cache = str(tmp_path / "cache")
    # Arrow fills the other formats' columns with nulls.
    ds = datasets.load_dataset("json", data_files=jsonl, split="train", cache_dir=cache)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved_dict"))
    expected = data.prepare_dpo(rows, tok, max_length=128, strict=True)
    for source in [tmp_path / "d.json", tmp_path / "d.parquet", tmp_path / "saved", [jsonl]]:
        got, report = records.load_records(source, cache_dir=cache)
        assert report.total == 3 and report.num_skipped == 0
        got = data.prepare_dpo(got, tok, max_length=128, strict=True)
        assert all(seqs(got, i) == seqs(expected, i) for i in range(3))
    # A glob over JSON and Parquet files: d.json, d.jsonl, d.parquet in order.
    mixed, report = records.load_records([str(tmp_path / "d.*")], cache_dir=cache)
    assert len(mixed) == 9 and report.total == 9
    assert len(records.load_records(tmp_path / "saved_dict", split="test")[0]) == 3
    with pytest.raises(DataError, match="no split 'train'"):
        records.load_records(tmp_path / "saved_dict")


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        records.load_records(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match=r"nothing\*.parquet"):
        records.load_records(str(tmp_path / "nothing*.parquet"))
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"d.csv has an unknown extension"):
        records.load_records(tmp_path / "d.csv")
    with pytest.raises(DataError, match="list of sources is empty"):
        records.load_records([])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"someone/some_dataset is not a local.*offline"):
        records.load_records("someone/some_dataset")
    with pytest.raises(FileNotFoundError, match=r"hf://datasets/a/b/c\.json is on the .*offline"):
        records.load_records("hf://datasets/a/b/c.json")


# --- LLaMA-Factory layouts ---------------------------------------------------------------------


def sharegpt_turn(role: str, text: str) -> dict:
    return {"from": role, "value": text}


def test_sharegpt_and_alpaca_sft_equal_messages(tok):
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": f"{QUERY}\n{INPUT}"},
        {"role": "assistant", "content": CHOSEN},
    ]
    layouts = [
        {"messages": messages},
        {
            "conversations": [
                sharegpt_turn("human", Q1),
                sharegpt_turn("gpt", A1),
                sharegpt_turn("human", f"{QUERY}\n{INPUT}"),
                sharegpt_turn("gpt", CHOSEN),
            ],
            "system": SYSTEM,
        },
        {  # the system prompt as the first turn instead of a field
            "conversations": [
                sharegpt_turn("system", SYSTEM),
                sharegpt_turn("human", Q1),
                sharegpt_turn("gpt", A1),
                sharegpt_turn("human", f"{QUERY}\n{INPUT}"),
                sharegpt_turn("gpt", CHOSEN),
            ]
        },
        {
            "instruction": QUERY,
            "input": INPUT,
            "output": CHOSEN,
            "system": SYSTEM,
            "history": [[Q1, A1]],
        },
    ]
    p = data.prepare_sft(layouts, tok, max_length=256, strict=True)
    expected = tok.encode_conversation(messages, "all")
    assert p.num_examples == 4
    for i in range(4):
        assert seqs(p, i)["tokens"] == expected[0]
        assert seqs(p, i)["loss_mask"][1:] == expected[1][1:]  # both history and last turn


def test_alpaca_without_input_is_the_instruction_alone(tok):
    p = data.prepare_sft(
        [{"instruction": QUERY, "input": "", "output": CHOSEN}], tok, max_length=128
    )
    expected = [{"role": "user", "content": QUERY}, {"role": "assistant", "content": CHOSEN}]
    assert seqs(p, 0)["tokens"] == tok.encode_conversation(expected, "all")[0]


def test_sharegpt_and_alpaca_dpo_equal_messages(tok):
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUERY}]
    layouts = [
        {"messages": prompt, "chosen": CHOSEN, "rejected": REJECTED},
        {
            "conversations": [sharegpt_turn("human", QUERY)],
            "system": SYSTEM,
            "chosen": sharegpt_turn("gpt", CHOSEN),
            "rejected": sharegpt_turn("gpt", REJECTED),
        },
        {"instruction": QUERY, "system": SYSTEM, "chosen": CHOSEN, "rejected": REJECTED},
        {  # alpaca with sharegpt-style response turns
            "instruction": QUERY,
            "system": SYSTEM,
            "chosen": sharegpt_turn("gpt", CHOSEN),
            "rejected": sharegpt_turn("gpt", REJECTED),
        },
    ]
    p = data.prepare_dpo(layouts, tok, max_length=256, strict=True)
    assert p.num_examples == len(layouts)
    assert all(seqs(p, i) == seqs(p, 0) for i in range(len(layouts)))
    assert seqs(p, 0)["chosen_tokens"] == tok.encode_pair(prompt, CHOSEN)[0]


def test_sharegpt_observation_and_function_call_roles(tmp_path):
    glm = Tokenizer.load(build_hf_tokenizer(tmp_path / "glm4", GLM4_SPECIALS, eos="<|endoftext|>"))
    record = {
        "conversations": [
            sharegpt_turn("human", "What is 6 * 7?"),
            sharegpt_turn("function_call", '{"name": "mul", "arguments": [6, 7]}'),
            sharegpt_turn("observation", "42"),
            sharegpt_turn("gpt", "42"),
        ]
    }
    assert data.prepare_sft([record], glm, max_length=128, strict=True).num_examples == 1


BAD_LAYOUTS = [
    ("unknown_role", {"conversations": [sharegpt_turn("user", "x"), sharegpt_turn("gpt", "y")]}),
    ("missing_field", {"conversations": [{"from": "human"}, sharegpt_turn("gpt", "y")]}),
    ("wrong_type", {"conversations": "human: hi"}),
    ("missing_field", {"conversations": []}),
    ("ambiguous_format", {"conversations": [sharegpt_turn("human", "x")], "instruction": "y"}),
    ("ambiguous_format", {"instruction": "x", "output": "y", "messages": []}),
    ("wrong_type", {"instruction": "x", "output": "y", "history": [["only one"]]}),
    ("wrong_type", {"instruction": 3, "output": "y"}),
    ("bad_turn_order", {"conversations": [sharegpt_turn("human", "x")]}),  # SFT needs a response
]


def test_malformed_layouts_are_counted(tok):
    good = {"instruction": "x", "output": "y"}
    p = data.prepare_sft([good] + [r for _, r in BAD_LAYOUTS], tok, max_length=64)
    assert p.index.tolist() == [0]
    expected: dict[str, list[int]] = {}
    for i, (reason, _) in enumerate(BAD_LAYOUTS, start=1):
        expected.setdefault(reason, []).append(i)
    assert p.report.indices == expected


def test_spar_release_layouts_load_without_conversion(tmp_path, tok):
    """The official code's outputs (src/process_data.py), written as it writes them."""
    sft = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(3)
    ]
    dpo = [pair(i) for i in range(3)]
    prompts = [{"prompt": f"Write {i} words.", "prompt_id": i + 10} for i in range(3)]
    for name, rows in [("sft.json", sft), ("dpo.json", dpo), ("prompts.json", prompts)]:
        with open(tmp_path / name, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=4, ensure_ascii=False)
    got, _ = records.load_records(tmp_path / "sft.json", strict=True)
    assert data.prepare_sft(got, tok, max_length=64, strict=True).num_examples == 3
    got, _ = records.load_records(tmp_path / "dpo.json", strict=True)
    assert data.prepare_dpo(got, tok, max_length=64, strict=True).num_examples == 3
    ps, _ = records.load_prompts(tmp_path / "prompts.json", strict=True)
    assert [(p.prompt_id, p.prompt) for p in ps] == [
        (i + 10, f"Write {i} words.") for i in range(3)
    ]
    # The seed SFT and DPO files are prompt files too: their first user turn.
    ps, _ = records.load_prompts(tmp_path / "dpo.json", strict=True)
    assert [p.prompt for p in ps] == [f"Write {i} words about spring." for i in range(3)]


# --- Prompts -----------------------------------------------------------------------------------


def test_load_prompts_reads_every_layout_and_counts_the_rest(tmp_path):
    rows = [
        {"prompt": "plain", "prompt_id": "a"},
        {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "trl"}]},
        {"instruction": QUERY, "input": INPUT, "output": "ignored"},
        {"instruction": QUERY, "history": [[Q1, A1]]},
        {"messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "2nd"}]},
        {"conversations": [sharegpt_turn("system", SYSTEM), sharegpt_turn("human", "sg")]},
        {"prompt": "  "},
        {"text": "no prompt field"},
        {"messages": [{"role": "assistant", "content": "no user turn"}]},
    ]
    lines = [json.dumps(r) for r in rows]
    path = write_jsonl(tmp_path / "p.jsonl", [*lines[:3], "{cut", *lines[3:]])
    prompts, report = records.load_prompts(path)
    assert [(p.prompt_id, p.prompt) for p in prompts] == [
        ("a", "plain"),
        (1, "trl"),
        (2, f"{QUERY}\n{INPUT}"),
        (3, QUERY),
        (4, "first"),
        (5, "sg"),
    ]
    assert report.total == len(rows) and report.num_used == 6
    assert report.indices == {
        "not_json": [f"{path} line 4"],
        "empty_prompt": [6],
        "missing_field": [7, 8],
    }
    with pytest.raises(RecordError, match=r"line 4: not_json"):
        records.load_prompts(path, strict=True)
    with pytest.raises(RecordError, match=r"record 6 \(.*q\.jsonl line 7\): empty_prompt"):
        records.load_prompts(write_jsonl(tmp_path / "q.jsonl", lines), strict=True)


# --- Through the real command ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_the_trainers_skip_bad_lines_and_report_them(tmp_path, capsys, kind):
    from spar_jax.__main__ import main
    from spar_jax.training import toy

    paths = toy.write_demo(str(tmp_path / "toy"))
    lines = open(paths[kind]).read().splitlines()
    bad = tmp_path / "bad.jsonl"  # a line that is not JSON, and a last line a killed writer cut
    bad.write_text("\n".join([*lines[:5], "not json", *lines[5:], lines[0][:25]]))
    argv = [
        f"train-{kind}",
        f"--config=configs/{kind}_demo.py",
        f"--config.data={bad}",
        f"--config.tokenizer={paths['tokenizer']}",
        f"--config.out_dir={tmp_path / 'run'}",
        "--config.progress=False",
        "--config.max_steps=1",
        "--config.export=()",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        f"{len(lines)}/{len(lines)} records used, 0 skipped; 2 unreadable lines skipped" in printed
    )
    assert f"{bad} line 6: is not JSON" in printed
    assert f"{bad} line {len(lines) + 2}: ends without a newline" in printed
    assert main([*argv, "--config.strict=True", f"--config.out_dir={tmp_path / 'strict'}"]) != 0
    assert f"{bad} line 6: not_json" in capsys.readouterr().err
