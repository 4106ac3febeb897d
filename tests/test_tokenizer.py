"""Tests for spar_jax.tokenizer, on tiny tokenizers built here (see tokenizer_fixtures.py).

The expected chat strings are written out by hand from the published formats:
* LLaMA-3: meta-llama/llama3 `llama/tokenizer.py` ChatFormat and the chat_template of
  meta-llama/Meta-Llama-3-8B-Instruct (`LLAMA3_PUBLISHED_TEMPLATE` below);
* GLM-4: the chat_template of THUDM/glm-4-9b-chat (`GLM4_PUBLISHED_TEMPLATE`, its tools branch
  left out) and LLaMA-Factory's `glm4` template.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import transformers

from spar_jax.tokenizer import (
    ChatTemplateError,
    ConversationError,
    FamilyError,
    Tokenizer,
    TokenizerLoadError,
    TokenizerNotFoundError,
    pad_batch,
    pad_loss_masks,
)
from tests.tokenizer_fixtures import (
    GLM4_SPECIALS,
    LLAMA3_SPECIALS,
    build_hf_tokenizer,
    build_sentencepiece,
)

# meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json "chat_template".
LLAMA3_PUBLISHED_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# THUDM/glm-4-9b-chat, tokenizer_config.json "chat_template" without the tools branch.
GLM4_PUBLISHED_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['content'] %}"
    "<|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# A template whose generation prompt ends in a space: tokenising prompt + response as one
# string would merge that space into the response's first word (" the").
SPACE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)

SYSTEM = {"role": "system", "content": "You are a careful assistant."}
USER = {"role": "user", "content": "  Write two sentences about 春天, in lowercase.  "}
# SPaR's refine prompt: judge prompt / critique / refine request, then the model answers.
REFINE = [
    {"role": "user", "content": "Does the output follow the prompt? 请逐步验证。"},
    {"role": "assistant", "content": "Step-by-step verification: no.\nFinal Judgement: No"},
    {"role": "user", "content": "Please refine the output."},
]
REFINED = "Reflection: lowercase it.\nFinal Refined Output: [[start]] 春天来了 [[end]]"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Paths of every tiny tokenizer, built once for the module."""
    root = tmp_path_factory.mktemp("tokenizers")
    l3 = dict(bos="<|begin_of_text|>", eos="<|eot_id|>")
    g4 = dict(eos="<|endoftext|>", pad="<|endoftext|>")
    return {
        "llama3": build_hf_tokenizer(root / "llama3", LLAMA3_SPECIALS, **l3),
        "glm4": build_hf_tokenizer(root / "glm4", GLM4_SPECIALS, **g4),
        "llama3_published": build_hf_tokenizer(
            root / "llama3_pub", LLAMA3_SPECIALS, chat_template=LLAMA3_PUBLISHED_TEMPLATE, **l3
        ),
        "glm4_published": build_hf_tokenizer(
            root / "glm4_pub", GLM4_SPECIALS, chat_template=GLM4_PUBLISHED_TEMPLATE, **g4
        ),
        "llama3_space": build_hf_tokenizer(
            root / "llama3_space", LLAMA3_SPECIALS, chat_template=SPACE_TEMPLATE, **l3
        ),
        "plain": build_hf_tokenizer(root / "plain", ["<s>", "</s>"], bos="<s>", eos="</s>"),
        "sp_llama3": build_sentencepiece(root / "sp_llama3", LLAMA3_SPECIALS),
        "sp_glm4": build_sentencepiece(root / "sp_glm4", GLM4_SPECIALS),
    }


@pytest.fixture(scope="module")
def toks(dirs):
    return {name: Tokenizer.load(path) for name, path in dirs.items() if name != "plain"}


@pytest.fixture(scope="module")
def raw(dirs):
    """The transformers tokenizers themselves, to compute expected ids independently."""
    names = ("llama3", "glm4", "llama3_space")
    return {n: transformers.AutoTokenizer.from_pretrained(str(dirs[n])) for n in names}


def ids(raw_tok, text: str) -> list[int]:
    """Ids of `text` by the transformers tokenizer, special-token strings parsed."""
    return raw_tok.encode(text, add_special_tokens=False)


def masked(tokens, mask):
    return [t for t, m in zip(tokens, mask, strict=True) if m]


# --- Loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, family, stops, pad",
    [
        ("llama3", "llama3", ["<|eot_id|>", "<|end_of_text|>"], "<|end_of_text|>"),
        ("glm4", "glm4", ["<|endoftext|>", "<|user|>", "<|observation|>"], "<|endoftext|>"),
        ("sp_llama3", "llama3", ["<|eot_id|>", "<|end_of_text|>"], "<|end_of_text|>"),
        ("sp_glm4", "glm4", ["<|endoftext|>", "<|user|>", "<|observation|>"], "<|endoftext|>"),
    ],
)
def test_load_detects_family_and_stop_tokens(toks, name, family, stops, pad):
    tok = toks[name]
    assert tok.family == family
    assert tok.template_source == "builtin"
    assert tok.stop_token_ids == tuple(tok.encode(s, parse_special=True)[0] for s in stops)
    assert all(len(tok.encode(s, parse_special=True)) == 1 for s in stops)
    assert tok.eot_id == tok.stop_token_ids[0]
    assert tok.pad_id == tok.encode(pad, parse_special=True)[0]
    assert max(tok.encode("春天 spring 😀")) < tok.vocab_size


def test_load_with_family_given_and_sentencepiece_directory(dirs, toks, tmp_path):
    assert Tokenizer.load(dirs["glm4"], family="glm4").family == "glm4"
    # A directory holding only tokenizer.model is read with sentencepiece.
    shutil.copy(dirs["sp_llama3"], tmp_path / "tokenizer.model")
    tok = Tokenizer.load(tmp_path, family="llama3")
    assert tok.encode_prompt([USER]) == toks["sp_llama3"].encode_prompt([USER])


def test_import_is_light():
    code = "import sys, spar_jax.tokenizer; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- Published chat formats, token for token ------------------------------------------------------


def test_llama3_format_token_for_token(toks, raw):
    messages = [
        SYSTEM,
        USER,
        {"role": "assistant", "content": "春天来了。\nflowers bloom. "},
        REFINE[2],
    ]
    # Meta's ChatFormat: <|begin_of_text|>, then <|start_header_id|>{role}<|end_header_id|>\n\n
    # {content.strip()}<|eot_id|> per message, then the assistant header for the model.
    expected = (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a careful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Write two sentences about 春天, in lowercase.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n春天来了。\nflowers bloom.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nPlease refine the output.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    tok = toks["llama3"]
    assert tok.render(messages) == expected
    prompt = tok.encode_prompt(messages)
    assert prompt == ids(raw["llama3"], expected)
    special = {s: ids(raw["llama3"], s)[0] for s in LLAMA3_SPECIALS}
    assert prompt[:2] == [special["<|begin_of_text|>"], special["<|start_header_id|>"]]
    header = [special["<|start_header_id|>"], *ids(raw["llama3"], "assistant")]
    header += [special["<|end_header_id|>"], *ids(raw["llama3"], "\n\n")]
    assert prompt[-len(header) :] == header
    assert prompt.count(special["<|eot_id|>"]) == 4


def test_glm4_format_token_for_token(toks, raw):
    messages = [SYSTEM, USER, {"role": "assistant", "content": "春天来了。"}, REFINE[2]]
    # glm-4-9b-chat: [gMASK]<sop>, then <|{role}|>\n{content} per message (content as is),
    # then <|assistant|> with no newline: the model writes the "\n".
    expected = (
        "[gMASK]<sop>"
        "<|system|>\nYou are a careful assistant."
        "<|user|>\n  Write two sentences about 春天, in lowercase.  "
        "<|assistant|>\n春天来了。"
        "<|user|>\nPlease refine the output."
        "<|assistant|>"
    )
    tok = toks["glm4"]
    assert tok.render(messages) == expected
    assert tok.encode_prompt(messages) == ids(raw["glm4"], expected)
    assert tok.encode_prompt(messages)[-1] == ids(raw["glm4"], "<|assistant|>")[0]


@pytest.mark.parametrize("family", ["llama3", "glm4"])
def test_builtin_format_matches_published_template(toks, raw, family):
    builtin, published = toks[family], toks[f"{family}_published"]
    assert published.template_source == "tokenizer"
    conv = [SYSTEM, *REFINE, {"role": "assistant", "content": REFINED}]
    for prompt in ([USER], [SYSTEM, USER], REFINE):
        assert published.render(prompt) == builtin.render(prompt)
        assert published.encode_prompt(prompt) == builtin.encode_prompt(prompt)
        # ... and our prompt tokens are transformers' own apply_chat_template tokens.
        expected = raw[family].apply_chat_template(
            prompt,
            chat_template=published.chat_template,
            add_generation_prompt=True,
            return_dict=False,
        )
        assert published.encode_prompt(prompt) == expected
        assert published.encode_pair(prompt, REFINED) == builtin.encode_pair(prompt, REFINED)
    for train_on in ("last", "all"):
        assert published.encode_conversation(conv, train_on) == builtin.encode_conversation(
            conv, train_on
        )


def test_tokenizer_chat_template_is_used(dirs, toks, raw):
    tok = toks["llama3_space"]
    assert tok.template_source == "tokenizer"
    assert tok.render([USER]) == (
        "<|begin_of_text|>user:   Write two sentences about 春天, in lowercase.  <|eot_id|>assistant: "
    )
    expected = raw["llama3_space"].apply_chat_template(
        [USER], add_generation_prompt=True, return_dict=False
    )
    assert tok.encode_prompt([USER]) == expected
    forced = Tokenizer.load(dirs["llama3_space"], chat_template="builtin")
    assert forced.template_source == "builtin"
    assert forced.render([USER]) == toks["llama3"].render([USER])
    custom = Tokenizer.load(dirs["llama3"], chat_template=SPACE_TEMPLATE)
    assert custom.template_source == "custom"
    assert custom.encode_prompt([USER]) == tok.encode_prompt([USER])


# ChatML-like: a newline after each end-of-turn token, which is context, not response.
NEWLINE_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n"
    "{{ m['content'] }}<|eot_id|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n{% endif %}"
)


# --- Prompt/response boundary and loss masks -----------------------------------------------------


def test_encode_pair_does_not_merge_across_the_boundary(toks, raw):
    tok, hf = toks["llama3_space"], raw["llama3_space"]
    response = "the quick brown fox"
    prompt = tok.encode_prompt([USER])
    tokens, mask = tok.encode_pair([USER], response)
    # The vocab has " the" as one token, so one-string tokenisation merges the prompt's trailing
    # space into the response: its tokens differ from the prompt the model was given.
    assert len(ids(hf, " the")) == 1
    joint = ids(hf, tok.render([USER]) + response + "<|eot_id|>")
    assert joint[: len(prompt) - 1] == prompt[:-1]
    assert joint[len(prompt) - 1] == ids(hf, " the")[0] != prompt[-1]
    assert joint != tokens
    # encode_pair: the prompt exactly as encode_prompt gives it, then the response on its own.
    assert tokens[: len(prompt)] == prompt
    assert tokens[len(prompt) :] == [*ids(hf, response), tok.eot_id]
    assert mask == [False] * len(prompt) + [True] * (len(tokens) - len(prompt))
    assert tok.decode(tokens) == tok.render([USER]) + response + "<|eot_id|>"


def test_encode_pair_llama3(toks, raw):
    tok, hf = toks["llama3"], raw["llama3"]
    prompt = tok.encode_prompt([SYSTEM, USER])
    # The LLaMA-3 prompt ends in "\n\n", one token when it ends the string; tokenising prompt and
    # response as one string splits it ("\n", "\n", "the"), so the prompt would change.
    assert prompt[-1] == ids(hf, "\n\n")[0]
    assert ids(hf, "\n\nthe")[:2] == ids(hf, "\n") * 2
    tokens, mask = tok.encode_pair([SYSTEM, USER], "  the quick 春天.\n")
    assert tokens[: len(prompt)] == prompt
    # The template strips the response, and <|eot_id|> ends it; both are in the loss.
    assert tokens[len(prompt) :] == [*ids(hf, "the quick 春天."), tok.eot_id]
    assert masked(tokens, mask) == tokens[len(prompt) :]
    assert not any(mask[: len(prompt)])
    # The same from the generated ids, with or without the stop token the sampler dropped.
    response_ids = tokens[len(prompt) : -1]
    assert tok.encode_pair([SYSTEM, USER], response_ids) == (tokens, mask)
    assert tok.encode_pair([SYSTEM, USER], [*response_ids, tok.eot_id]) == (tokens, mask)


def test_encode_pair_glm4(toks, raw):
    tok, hf = toks["glm4"], raw["glm4"]
    prompt = tok.encode_prompt([USER])
    tokens, mask = tok.encode_pair([USER], "the quick 春天 ")
    assert tokens[: len(prompt)] == prompt
    # The model's answer starts with the "\n" after <|assistant|>; <|endoftext|> closes it
    # (LLaMA-Factory's efficient_eos, GLM-4's finetune_demo).
    assert tokens[len(prompt) :] == [*ids(hf, "\nthe quick 春天 "), ids(hf, "<|endoftext|>")[0]]
    assert masked(tokens, mask) == tokens[len(prompt) :]
    user_id = ids(hf, "<|user|>")[0]
    ended_by_user = tok.encode_pair([USER], [*tokens[len(prompt) : -1], user_id])
    assert ended_by_user[0][-1] == user_id and sum(ended_by_user[1]) == sum(mask)


def test_text_after_the_end_of_turn_is_context(dirs):
    tok = Tokenizer.load(dirs["llama3"], chat_template=NEWLINE_TEMPLATE)
    conv = [*REFINE, {"role": "assistant", "content": REFINED}]
    tokens, mask = tok.encode_conversation(conv, train_on="all")
    critique = REFINE[1]["content"]
    assert tok.decode(masked(tokens, mask)) == f"{critique}<|eot_id|>{REFINED}<|eot_id|>"
    # The final "\n" the template writes after <|eot_id|> is not generated, so it is left out.
    assert tokens[-1] == tok.eot_id
    assert tok.decode(tokens) == tok.render(conv, add_generation_prompt=False)[:-1]
    assert tok.encode_conversation(conv) == tok.encode_pair(REFINE, REFINED)


@pytest.mark.parametrize("name", ["llama3", "glm4", "sp_llama3", "sp_glm4"])
def test_refine_conversation_loss_masks(toks, name):
    tok = toks[name]
    conv = [*REFINE, {"role": "assistant", "content": REFINED}]
    critique = REFINE[1]["content"]
    # train_on="last": the same tokens as the (refine prompt, refinement) pair.
    tokens, mask = tok.encode_conversation(conv)
    assert (tokens, mask) == tok.encode_pair(REFINE, REFINED)
    n = len(tok.encode_prompt(REFINE))
    assert not any(mask[:n]) and all(mask[n:])
    # train_on="all": the critique turn is trained too, with the token that ends it.
    tokens_all, mask_all = tok.encode_conversation(conv, train_on="all")
    # Same text; the ids may differ where a context string now ends before the critique (this
    # byte-level BPE has a "\n\n" token only at the end of a string, unlike Llama-3's regex).
    assert tok.decode(tokens_all) == tok.decode(tokens)
    if tok.family == "llama3":
        first_turn, last_turn = f"{critique}<|eot_id|>", f"{REFINED}<|eot_id|>"
    else:  # GLM-4: the next turn's <|user|> ends the critique, <|endoftext|> the last turn
        first_turn, last_turn = f"\n{critique}<|user|>", f"\n{REFINED}<|endoftext|>"
    assert tok.decode(masked(tokens_all, mask_all)) == first_turn + last_turn
    first = mask_all.index(True)
    assert tokens_all[:first] == tok.encode_prompt(REFINE[:1])
    # A message's own "train" flag picks turns explicitly.
    flagged = [*REFINE[:1], {**REFINE[1], "train": True}, REFINE[2], {**conv[-1], "train": False}]
    tokens_f, mask_f = tok.encode_conversation(flagged)
    k = first + len(masked(tokens_f, mask_f))  # the first prompt and the critique turn
    assert tokens_f[:k] == tokens_all[:k] and mask_f[:k] == mask_all[:k] and not any(mask_f[k:])
    assert tok.decode(tokens_f) == tok.decode(tokens)
    assert tok.decode(masked(tokens_f, mask_f)) == first_turn


def test_special_token_strings_in_content_are_text(toks):
    for name in ("llama3", "glm4"):
        tok = toks[name]
        response = "End with <|eot_id|> or <|user|> or <|endoftext|>."
        tokens, mask = tok.encode_pair([USER], response)
        response_ids = masked(tokens, mask)
        assert response_ids[:-1] == tok.encode(
            response.strip() if name == "llama3" else "\n" + response
        )
        assert not set(response_ids[:-1]) & set(tok.stop_token_ids)
        n = len(tok.encode_prompt([USER]))
        assert tok.decode(tokens[n:]) == tok.decode(response_ids)


# --- Plain text -----------------------------------------------------------------------------------

TEXTS = [
    "Hello world",
    "你好，世界！春天来了。",
    "mixed 中文 and English\n\nwith\ttabs  and  spaces ",
    "emoji 😀🎉 and accents: café naïve",
    "a literal <|eot_id|> and <|user|> in text",
    "",
]


@pytest.mark.parametrize("name", ["llama3", "glm4", "sp_llama3", "sp_glm4"])
def test_round_trip(toks, name):
    tok = toks[name]
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_parse_special(toks):
    tok = toks["llama3"]
    assert tok.encode("<|eot_id|>", parse_special=True) == [tok.eot_id]
    assert tok.eot_id not in tok.encode("<|eot_id|>")
    assert tok.decode([tok.eot_id, *tok.encode("hi")], skip_special_tokens=True) == "hi"
    sp = toks["sp_llama3"]
    assert sp.decode([sp.eot_id, *sp.encode("hi")]) == "<|eot_id|>hi"
    assert sp.decode([sp.eot_id, *sp.encode("hi")], skip_special_tokens=True) == "hi"


def test_sentencepiece_chat_format(dirs, toks):
    import sentencepiece

    for name, family in (("sp_llama3", "llama3"), ("sp_glm4", "glm4")):
        sp = sentencepiece.SentencePieceProcessor(model_file=str(dirs[name]))
        tok = toks[name]
        expected = toks[family].render(REFINE)  # the format string, checked above
        # sentencepiece itself matches the user-defined special symbols in the string.
        assert tok.encode_prompt(REFINE) == list(sp.encode(expected))
        tokens, _ = tok.encode_pair(REFINE, REFINED)
        n = len(tok.encode_prompt(REFINE))
        lead = "\n" if family == "glm4" else ""
        assert tokens[n:] == [*sp.encode(lead + REFINED), tok.eot_id]


# --- Padding --------------------------------------------------------------------------------------


def test_pad_batch_left_and_right():
    seqs = [[1, 2, 3], [4], []]
    tokens, mask = pad_batch(seqs, 0, side="left")
    np.testing.assert_array_equal(tokens, [[1, 2, 3], [0, 0, 4], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_
    tokens, mask = pad_batch(seqs, -1, side="right", length=4, multiple_of=3)
    assert tokens.shape == (3, 6)
    np.testing.assert_array_equal(tokens[1], [4, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(mask.sum(1), [3, 1, 0])
    assert pad_batch(seqs, 0, multiple_of=8)[0].shape == (3, 8)
    assert pad_batch([], 0)[0].shape == (0, 0)


def test_pad_loss_masks_follow_tokens(toks):
    tok = toks["llama3"]
    pairs = [tok.encode_pair([USER], "short"), tok.encode_pair([SYSTEM, USER], "a longer 回答")]
    for side in ("left", "right"):
        tokens, mask = pad_batch([t for t, _ in pairs], tok.pad_id, side, multiple_of=16)
        loss = pad_loss_masks([m for _, m in pairs], side, multiple_of=16)
        assert loss.shape == tokens.shape and loss.dtype == np.bool_
        assert not (loss & ~mask).any()
        for b, (t, m) in enumerate(pairs):
            assert tokens[b][loss[b]].tolist() == masked(t, m)


def test_pad_batch_errors():
    with pytest.raises(ValueError, match="sequence 1 has 3 tokens but length=2"):
        pad_batch([[1], [1, 2, 3]], 0, length=2)
    with pytest.raises(ValueError, match="side='middle'"):
        pad_batch([[1]], 0, side="middle")
    with pytest.raises(ValueError, match="multiple_of=0"):
        pad_batch([[1]], 0, multiple_of=0)


# --- Bad input: one clear error each --------------------------------------------------------------


def one_error(excinfo, *words):
    """The error names what it is about, and was not raised while handling another error."""
    e = excinfo.value
    assert e.__context__ is None or e.__suppress_context__
    for w in words:
        assert w in str(e), (w, str(e))


def test_error_missing_path(tmp_path):
    with pytest.raises(TokenizerNotFoundError) as excinfo:
        Tokenizer.load(tmp_path / "no_such_dir")
    one_error(excinfo, "no_such_dir", "does not exist")
    assert isinstance(excinfo.value, FileNotFoundError)


def test_error_directory_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TokenizerNotFoundError) as excinfo:
        Tokenizer.load(tmp_path)
    one_error(excinfo, str(tmp_path), "config.json", "tokenizer.json")


def test_error_not_a_sentencepiece_model(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_text("IHRlc3Q= 0\n")  # a tiktoken-style ranks file, like GLM-4's
    with pytest.raises(TokenizerLoadError) as excinfo:
        Tokenizer.load(bad)
    one_error(excinfo, str(bad), "not a sentencepiece model", "trust_remote_code")


def test_error_family(dirs):
    with pytest.raises(FamilyError) as excinfo:
        Tokenizer.load(dirs["plain"])
    one_error(excinfo, str(dirs["plain"]), "cannot detect", "<|eot_id|>", "[gMASK]")
    with pytest.raises(FamilyError) as excinfo:
        Tokenizer.load(dirs["llama3"], family="glm4")
    one_error(excinfo, "lacks the glm4 special tokens", "[gMASK]")
    with pytest.raises(FamilyError) as excinfo:
        Tokenizer.load(dirs["llama3"], family="llama2")
    one_error(excinfo, "'llama2'", "llama3", "glm4")


def test_error_sentencepiece_with_jinja_template(dirs):
    with pytest.raises(ChatTemplateError) as excinfo:
        Tokenizer.load(dirs["sp_llama3"], chat_template=SPACE_TEMPLATE)
    one_error(excinfo, "sentencepiece", "chat_template=None")


def test_error_chat_templates(dirs):
    counting = "{{ messages | length }}" + SPACE_TEMPLATE  # not a prefix of its continuation
    tok = Tokenizer.load(dirs["llama3"], chat_template=counting)
    with pytest.raises(ChatTemplateError) as excinfo:
        tok.encode_pair([USER], "response")
    one_error(excinfo, "does not render message 1", "chat_template='builtin'")
    strict = "{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
    tok = Tokenizer.load(dirs["llama3"], chat_template=strict + SPACE_TEMPLATE)
    with pytest.raises(ChatTemplateError) as excinfo:
        tok.encode_prompt([SYSTEM, USER])
    one_error(excinfo, "rejected the conversation", "one message only")


def test_error_bad_conversations(toks):
    tok = toks["llama3"]
    bad = {"role": "bot", "content": "hi"}
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_prompt([SYSTEM, bad])
    one_error(excinfo, "message 1", "'bot'", "system", "user", "assistant")
    for fn in (tok.encode_prompt, tok.encode_conversation, lambda m: tok.encode_pair(m, "x")):
        with pytest.raises(ConversationError) as excinfo:
            fn([])
        one_error(excinfo, "empty")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_prompt([USER, {"role": "assistant", "content": "hi"}])
    one_error(excinfo, "encode_prompt", "end with a user message", "'assistant'")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_pair([SYSTEM], "response")
    one_error(excinfo, "encode_pair", "end with a user message", "'system'")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_conversation(REFINE)
    one_error(excinfo, "encode_conversation", "end with an assistant message", "'user'")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_conversation([SYSTEM, {"role": "assistant", "content": "hi"}])
    one_error(excinfo, "message 1 (assistant) must follow a user message")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_conversation([{**USER, "train": True}, {"role": "assistant", "content": "a"}])
    one_error(excinfo, "message 0 (user) has train=True")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_conversation([USER, {"role": "assistant", "content": "a", "train": False}])
    one_error(excinfo, "no assistant turn is selected")
    with pytest.raises(ConversationError) as excinfo:
        tok.encode_prompt([{"role": "user", "content": None}])
    one_error(excinfo, "content must be a string")
    with pytest.raises(ValueError, match="train_on='first'"):
        tok.encode_conversation([USER, {"role": "assistant", "content": "a"}], train_on="first")
