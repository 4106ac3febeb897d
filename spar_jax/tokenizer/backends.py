"""Tokenizer backends: a local Hugging Face tokenizer directory, or a sentencepiece model.

Both expose the same small surface (`encode`, `decode`, `token_id`, `render`) so that
`core.Tokenizer` does not care which one it holds. `transformers` and `sentencepiece`
are imported only when a tokenizer is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spar_jax.tokenizer.errors import (
    ChatTemplateError,
    TokenizerLoadError,
    TokenizerNotFoundError,
)

_HF_FILES = ("tokenizer.json", "tokenizer_config.json")
_SP_FILE = "tokenizer.model"


class HFBackend:
    """A `transformers` tokenizer (fast or slow) loaded from a local directory."""

    def __init__(self, tok: Any, source: str):
        self.tok = tok
        self.source = source
        self.vocab_size: int = len(tok)
        self.pad_id: int | None = tok.pad_token_id
        template = getattr(tok, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one is for chat
            template = template.get("default")
        self.chat_template: str | None = template or None
        # Strings the tokenizer turns into single special tokens when they appear in text.
        self.control_strings: tuple[str, ...] = tuple(
            t.content for t in tok.added_tokens_decoder.values() if t.special
        )

    def token_id(self, token: str) -> int | None:
        i = self.tok.convert_tokens_to_ids(token)
        if i is None or self.tok.convert_ids_to_tokens(i) != token:
            return None
        return int(i)

    def encode(self, text: str, parse_special: bool) -> list[int]:
        return list(
            self.tok.encode(text, add_special_tokens=False, split_special_tokens=not parse_special)
        )

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(
            [int(i) for i in ids],
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def check_can_render(self, template: str) -> None:
        """Jinja templates work with Hugging Face tokenizers."""

    def render(self, messages: list[dict], add_generation_prompt: bool, template: str) -> str:
        import jinja2

        try:
            return self.tok.apply_chat_template(
                messages,
                chat_template=template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
            )
        except jinja2.TemplateError as e:
            raise ChatTemplateError(
                f"the chat template of tokenizer {self.source} rejected the conversation: {e}; "
                "fix the conversation, or load with chat_template='builtin'"
            ) from None


class SentencePieceBackend:
    """A sentencepiece `.model` file, wrapped directly.

    Text is split on the special-token strings first (control pieces and the chat
    families' special tokens), which become their ids; the text between them goes
    through sentencepiece. Note that a model trained with `add_dummy_prefix` puts a
    "▁" before every separately encoded piece of text, as sentencepiece always does.
    """

    def __init__(self, sp: Any, source: str, special_strings: Sequence[str]):
        self.sp = sp
        self.source = source
        self.vocab_size: int = sp.get_piece_size()
        self.pad_id: int | None = sp.pad_id() if sp.pad_id() >= 0 else None
        self.chat_template: str | None = None
        control = [sp.id_to_piece(i) for i in range(self.vocab_size) if sp.is_control(i)]
        named = [t for t in special_strings if self.token_id(t) is not None]
        self.control_strings: tuple[str, ...] = tuple(dict.fromkeys(control + named))
        self._special_ids = {self.token_id(t): t for t in self.control_strings}
        longest_first = sorted(self.control_strings, key=len, reverse=True)
        self._split_re = (
            re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")
            if longest_first
            else None
        )

    def token_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        return int(i) if self.sp.id_to_piece(i) == token else None

    def encode(self, text: str, parse_special: bool) -> list[int]:
        if not parse_special or self._split_re is None:
            return list(self.sp.encode(text))
        ids: list[int] = []
        for k, piece in enumerate(self._split_re.split(text)):
            if k % 2:  # a captured special-token string
                ids.append(self.token_id(piece))
            elif piece:
                ids.extend(self.sp.encode(piece))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        # sentencepiece drops control ids when decoding, so they are spliced back in by hand.
        out: list[str] = []
        run: list[int] = []
        for i in map(int, ids):
            if i in self._special_ids:
                out.append(self.sp.decode(run))
                run = []
                if not skip_special_tokens:
                    out.append(self._special_ids[i])
            else:
                run.append(i)
        out.append(self.sp.decode(run))
        return "".join(out)

    def check_can_render(self, template: str) -> None:
        """Raise: a sentencepiece tokenizer has no Jinja chat template support."""
        self.render([], True, template)

    def render(self, messages: list[dict], add_generation_prompt: bool, template: str) -> str:
        raise ChatTemplateError(
            f"sentencepiece tokenizer {self.source} cannot render Jinja chat templates; "
            "load it with chat_template=None to use the built-in chat format"
        )


def load_backend(
    path: str | os.PathLike, *, trust_remote_code: bool, special_strings: Sequence[str]
) -> HFBackend | SentencePieceBackend:
    """Open the tokenizer at `path`: a Hugging Face directory or a sentencepiece `.model` file.

    Args:
      path: a directory with tokenizer.json / tokenizer_config.json (or only tokenizer.model),
        a `.model` file, or a hub id already in the local Hugging Face cache.
      trust_remote_code: passed to `AutoTokenizer.from_pretrained`; off unless asked for.
      special_strings: token strings a sentencepiece model should treat as special.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix == ".model":
            return _load_sentencepiece(p, special_strings)
        raise TokenizerNotFoundError(
            f"tokenizer path {p} is a file but not a sentencepiece .model file; pass the "
            "directory that holds tokenizer.json / tokenizer_config.json, or a .model file"
        )
    if p.is_dir():
        names = set(os.listdir(p))
        if names.intersection(_HF_FILES):
            return _load_hf(str(p), trust_remote_code)
        if _SP_FILE in names:
            return _load_sentencepiece(p / _SP_FILE, special_strings)
        raise TokenizerNotFoundError(
            f"tokenizer directory {p} has no tokenizer files (it holds {sorted(names)[:8]}); "
            f"it needs {' or '.join(_HF_FILES)} (Hugging Face) or {_SP_FILE} (sentencepiece): "
            "copy them from the model's checkpoint"
        )
    if _looks_like_hub_id(str(path)):
        try:
            return _load_hf(str(path), trust_remote_code)
        except TokenizerLoadError:
            pass
    raise TokenizerNotFoundError(
        f"tokenizer path {p} does not exist (nor is it a hub id in the local Hugging Face "
        "cache); pass a local tokenizer directory or a sentencepiece .model file"
    )


def _looks_like_hub_id(s: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s) is not None


def _load_hf(path: str, trust_remote_code: bool) -> HFBackend:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ... here
        hint = (
            "it ships its own tokenizer code: pass trust_remote_code=True if you trust it, or "
            "use the checkpoint's transformers-native (-hf) version"
            if "trust_remote_code" in str(e)
            else "check that tokenizer.json or the vocab files named in tokenizer_config.json "
            "are there"
        )
        raise TokenizerLoadError(
            f"cannot load the Hugging Face tokenizer in {path} ({type(e).__name__}: "
            f"{str(e)[:300]}); {hint}"
        ) from None
    return HFBackend(tok, path)


def _load_sentencepiece(path: Path, special_strings: Sequence[str]) -> SentencePieceBackend:
    import sentencepiece

    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # sentencepiece raises OSError or RuntimeError on a bad file
        raise TokenizerLoadError(
            f"{path} is not a sentencepiece model ({type(e).__name__}: {str(e)[:200]}); "
            "GLM-4's tokenizer.model is a tiktoken file: load its directory with "
            "trust_remote_code=True, or use the glm-4-9b-chat-hf tokenizer"
        ) from None
    return SentencePieceBackend(sp, str(path), special_strings)
