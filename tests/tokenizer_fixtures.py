"""Tiny tokenizers built locally for tests (nothing is downloaded).

* `build_hf_tokenizer`: a byte-level BPE trained with the `tokenizers` library on a
  few hundred lines of mixed English and Chinese, the chat family's special tokens
  added, wrapped as `transformers.PreTrainedTokenizerFast` and saved to a directory.
* `build_sentencepiece`: a small sentencepiece BPE model with the special tokens as
  user-defined symbols (byte fallback on, so any unicode text round-trips).

Each takes well under a second to build.
"""

from __future__ import annotations

import random
from pathlib import Path

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
GLM4_SPECIALS = [
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|endoftext|>",
]

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea, in exactly four lines.",
    "Answer in lowercase letters only, and do not use any commas.",
    "The assistant should list every constraint the user gave.",
    "Hello world, this is a small test of the tokenizer.",
    "Please refine the output so that it follows the instruction.",
    "Step-by-step verification: the response has three paragraphs.",
    "Final Judgement (if the Output accurately follows the Prompt): Yes",
    "Final Judgement (if the Output accurately follows the Prompt): No",
    "Reflection on how to refine the Output: remove the second sentence.",
    "The user asked for a title wrapped in double angular brackets.",
    "Spring is the season when the flowers bloom and the rivers run fast.",
    "Use at least 100 words and end your response with the phrase Is there anything else?",
    "system user assistant observation",
    "You are a helpful assistant that follows instructions carefully.",
    "Count the number of words in the response and report it.",
    "The model generates a response token by token until a stop token.",
]
_CHINESE = [
    "你好，世界。我们正在测试分词器。",
    "请用中文回答，并且不要使用任何标点符号。",
    "春天来了，花儿都开了，河水也流得很快。",
    "写一首关于大海的短诗，正好四行。",
    "助手应该列出用户给出的每一个约束。",
    "请改进输出，使它遵循指令。",
    "逐步验证：回答有三个段落。",
    "模型逐个生成词元，直到遇到停止词元。",
    "今天天气很好，我们去公园散步吧。",
    "这个回答没有满足字数要求，需要修改。",
]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """`n` lines of English, Chinese and mixed text (deterministic)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            line = rng.choice(_ENGLISH)
        elif kind == 1:
            line = rng.choice(_CHINESE)
        else:
            line = f"{rng.choice(_ENGLISH)} {rng.choice(_CHINESE)} {i}"
        lines.append(line)
    return lines


def build_hf_tokenizer(
    out_dir: Path,
    specials: list[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    chat_template: str | None = None,
    vocab_size: int = 1000,
) -> Path:
    """Train a byte-level BPE, add `specials`, save it as a transformers tokenizer dir."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Some documents end in "\n\n" so that the BPE learns that token (chat headers end with it).
    docs = [line + ("\n\n" if i % 4 == 0 else "\n") for i, line in enumerate(corpus())]
    tok.train_from_iterator(docs, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir


def build_sentencepiece(out_dir: Path, specials: list[str], *, vocab_size: int = 600) -> Path:
    """Train a small sentencepiece BPE with `specials` as user-defined symbols; the .model path.

    Identity normalisation, no dummy prefix and no whitespace folding keep text as it
    is, and byte fallback covers characters the vocab lacks, so text round-trips.
    """
    import sentencepiece

    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = out_dir / "corpus.txt"
    text_file.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    prefix = out_dir / "sp"
    sentencepiece.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        user_defined_symbols=specials,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")
