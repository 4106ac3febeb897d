"""`Tokenizer`: chat prompts and (prompt, response) training pairs with exact boundaries.

How a conversation becomes tokens. The chat template (the tokenizer's own, or the
built-in format of its family, see `formats.py`) renders the conversation to text.
Rendering growing prefixes of the conversation splits that text into pieces: the
context before each trained assistant turn, and the turn's response. Each response
is tokenised on its own, so its tokens are exactly those the model generates after
the prompt; the context up to a response is tokenised as one string, exactly as
`encode_prompt` tokenises a prompt. Tokenising the whole text at once would let BPE
merge tokens across a prompt/response boundary.

Text inside messages is data: a special-token string in a message's content (say a
response that contains "<|eot_id|>") is encoded as plain text, never as the special
token; only the template writes special tokens. (Sentencepiece models match their
user-defined symbols in any text, so this holds for Hugging Face tokenizers only. The
private-use characters U+E0F0 and U+E0F1 are reserved for this and dropped from messages.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from spar_jax.tokenizer import backends
from spar_jax.tokenizer.errors import ChatTemplateError, ConversationError
from spar_jax.tokenizer.formats import (
    FAMILIES,
    Family,
    Message,
    check_messages,
    check_prompt_end,
    resolve_family,
)

# Private-use characters that wrap special-token strings found in message content while
# the conversation is rendered, so that they can be encoded as text afterwards.
_MARK_START, _MARK_END = "\ue0f0", "\ue0f1"
_MARKED_RE = re.compile(f"{_MARK_START}(.*?){_MARK_END}", re.DOTALL)


class Tokenizer:
    """A chat tokenizer of the LLaMA-3 or GLM-4 family.

    Attributes:
      family: 'llama3' or 'glm4'.
      pad_id: the padding id (the tokenizer's pad token, else the family's, see `formats`).
      stop_token_ids: ids that end generation, e.g. (<|eot_id|>, <|end_of_text|>) for LLaMA-3.
      eot_id: the id closing a response in training data when the template writes no stop
        token after it (<|eot_id|> for LLaMA-3, <|endoftext|> for GLM-4).
      vocab_size: number of ids the tokenizer can produce (a model's embedding may be larger).
      template_source: 'tokenizer' (its own chat_template), 'custom' (passed to `load`) or
        'builtin' (the family's published format, `formats.FAMILIES`).
      chat_template: the Jinja template in use; None with the built-in format.
    """

    def __init__(
        self,
        backend: backends.HFBackend | backends.SentencePieceBackend,
        family: Family,
        chat_template: str | None = None,
    ):
        """Prefer `Tokenizer.load`. `chat_template` as there, after the tokenizer's own is read."""
        self._backend = backend
        self._fam = family
        self.family: str = family.name
        self.vocab_size: int = backend.vocab_size
        if chat_template == "builtin":
            self.chat_template, self.template_source = None, "builtin"
        elif chat_template is not None:
            self.chat_template, self.template_source = chat_template, "custom"
        elif backend.chat_template is not None:
            self.chat_template, self.template_source = backend.chat_template, "tokenizer"
        else:
            self.chat_template, self.template_source = None, "builtin"

        def required_id(token: str) -> int:
            i = backend.token_id(token)
            assert i is not None, f"{token} checked by resolve_family"
            return i

        stops = [*family.stop_tokens, *family.optional_stop_tokens]
        present = [t for t in stops if backend.token_id(t) is not None]
        self.stop_token_ids: tuple[int, ...] = tuple(required_id(t) for t in present)
        self.eot_id: int = required_id(family.end_of_turn)
        self.pad_id: int = (
            backend.pad_id if backend.pad_id is not None else required_id(family.pad_token)
        )
        longest_first = sorted(backend.control_strings, key=len, reverse=True)
        self._control_re = (
            re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        )
        # A stop token written by the template: not wrapped in marks like data is.
        self._template_stop_re = re.compile(
            f"(?<!{_MARK_START})(?:" + "|".join(map(re.escape, present)) + ")"
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        family: str | None = None,
        *,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
    ) -> Tokenizer:
        """Load a local tokenizer.

        Args:
          path: a Hugging Face tokenizer directory (tokenizer.json / tokenizer_config.json,
            read with `AutoTokenizer.from_pretrained(path, local_files_only=True)`), a
            sentencepiece `.model` file (or a directory holding only tokenizer.model), or a
            hub id already in the local Hugging Face cache. Nothing is downloaded.
          family: 'llama3' or 'glm4'; None detects it from the special tokens in the vocab.
          chat_template: None uses the tokenizer's own chat_template when it has one and the
            family's built-in format otherwise; 'builtin' forces the built-in format; any other
            string is a Jinja chat template to use instead (Hugging Face tokenizers only).
          trust_remote_code: let transformers run the tokenizer code shipped with the files.
        """
        specials = [t for f in FAMILIES.values() for t in (*f.special_tokens, f.pad_token)]
        backend = backends.load_backend(
            path, trust_remote_code=trust_remote_code, special_strings=specials
        )
        fam = resolve_family(family, backend.token_id, str(path))
        if chat_template not in (None, "builtin"):
            backend.check_can_render(chat_template)
        return cls(backend, fam, chat_template)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(family={self.family!r}, vocab_size={self.vocab_size}, "
            f"template={self.template_source!r}, source={self._backend.source!r})"
        )

    # --- Plain text ---------------------------------------------------------------------------

    def encode(self, text: str, *, parse_special: bool = False) -> list[int]:
        """Token ids [L] of `text`, with no BOS/EOS added.

        Special-token strings in `text` are encoded as plain text unless `parse_special`.
        """
        return self._backend.encode(text, parse_special)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of token ids [L]; `decode(encode(x)) == x`."""
        return self._backend.decode(ids, skip_special_tokens)

    # --- Chat ---------------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The chat template applied to `messages`, as text (for inspection)."""
        msgs = check_messages(messages, self._fam, "render")
        text = self._render(self._mark(msgs), add_generation_prompt)
        return text.replace(_MARK_START, "").replace(_MARK_END, "")

    def encode_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids [L] of a conversation that ends with a user turn, plus the generation prompt.

        This is what the sampler feeds the model; e.g. for LLaMA-3 it ends with
        `<|start_header_id|>assistant<|end_header_id|>\\n\\n`, for GLM-4 with `<|assistant|>`.
        """
        msgs = check_messages(messages, self._fam, "encode_prompt")
        check_prompt_end(msgs, self._fam, "encode_prompt")
        return self._encode_text(self._render(self._mark(msgs), True))

    def encode_pair(
        self, messages: Sequence[Message], response: str | Sequence[int]
    ) -> tuple[list[int], list[bool]]:
        """Tokens [L] and loss mask [L] of a prompt and the model's response to it.

        `tokens[:n] == encode_prompt(messages)` for the prompt length n, and the rest are the
        response's tokens, tokenised on their own, then the family's end-of-turn token;
        the loss mask is True exactly on those (end-of-turn included).

        Args:
          messages: the prompt conversation; it must end with a user turn.
          response: the response text (rendered as the template renders an assistant turn:
            LLaMA-3 strips it, GLM-4 starts it with "\\n"), or the generated token ids, used
            as they are (a GLM-4 model generates the leading "\\n" itself).
        """
        msgs = check_messages(messages, self._fam, "encode_pair")
        check_prompt_end(msgs, self._fam, "encode_pair")
        if isinstance(response, str):
            conv = [*msgs, {"role": "assistant", "content": response}]
            return self._encode_turns(self._mark(conv), [False] * len(msgs) + [True], "encode_pair")
        ids = [int(i) for i in response]
        if not ids or ids[-1] not in self.stop_token_ids:
            ids.append(self.eot_id)
        prompt = self._encode_text(self._render(self._mark(msgs), True))
        return prompt + ids, [False] * len(prompt) + [True] * len(ids)

    def encode_conversation(
        self, messages: Sequence[Message], train_on: Literal["last", "all"] = "last"
    ) -> tuple[list[int], list[bool]]:
        """Tokens [L] and loss mask [L] of a multi-turn chat that ends with an assistant turn.

        The loss mask is True on the trained assistant turns only: each turn's response
        tokens and the stop token that ends it. `train_on='last'` trains the final assistant
        turn, 'all' every assistant turn; a message's own `"train": True/False` overrides that.
        With `train_on='last'`, `encode_conversation(m) == encode_pair(m[:-1], m[-1]['content'])`.
        """
        if train_on not in ("last", "all"):
            raise ValueError(f"encode_conversation: train_on={train_on!r}; use 'last' or 'all'")
        what = "encode_conversation"
        msgs = check_messages(messages, self._fam, what)
        if msgs[-1]["role"] != "assistant":
            raise ConversationError(
                f"{what}: the conversation must end with an assistant message (a turn to "
                f"train on), but the last message is from {msgs[-1]['role']!r}; "
                "use encode_prompt for a prompt"
            )
        trained = []
        for i, m in enumerate(msgs):
            default = m["role"] == "assistant" and (train_on == "all" or i == len(msgs) - 1)
            train = m.get("train", default)
            if train and m["role"] != "assistant":
                raise ConversationError(
                    f"{what}: message {i} ({m['role']}) has train=True; "
                    "only assistant turns can be trained on"
                )
            trained.append(train)
        if not any(trained):
            raise ConversationError(
                f"{what}: no assistant turn is selected for training "
                "(every assistant message has train=False)"
            )
        return self._encode_turns(self._mark(msgs), trained, what)

    # --- Internals ----------------------------------------------------------------------------

    def _mark(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of the messages, "train" dropped, special-token strings in text values marked."""

        def mark(s: str) -> str:
            s = s.replace(_MARK_START, "").replace(_MARK_END, "")
            if self._control_re is None:
                return s
            return self._control_re.sub(lambda m: _MARK_START + m.group(0) + _MARK_END, s)

        return [
            {k: mark(v) if isinstance(v, str) and k != "role" else v for k, v in m.items()}
            for m in ({k: v for k, v in m.items() if k != "train"} for m in messages)
        ]

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        if self.chat_template is None:
            return self._fam.render(messages, add_generation_prompt)
        return self._backend.render(messages, add_generation_prompt, self.chat_template)

    def _encode_text(self, text: str) -> list[int]:
        """Encode rendered text: marked special-token strings as text, the rest parsing specials."""
        ids: list[int] = []
        for k, piece in enumerate(_MARKED_RE.split(text)):
            # String operations in a template can orphan a mark; drop those.
            piece = piece.replace(_MARK_START, "").replace(_MARK_END, "")
            if piece:
                ids.extend(self._backend.encode(piece, parse_special=k % 2 == 0))
        return ids

    def _extends(self, prefix: str, text: str, i: int) -> None:
        if not text.startswith(prefix):
            raise ChatTemplateError(
                f"the chat template ({self.template_source}) does not render message {i} as a "
                "continuation of the messages before it, so turn boundaries cannot be found; "
                "load the tokenizer with chat_template='builtin'"
            )

    def _encode_turns(
        self, msgs: list[dict[str, Any]], trained: list[bool], what: str
    ) -> tuple[list[int], list[bool]]:
        """Tokens [L] and loss mask [L]; `msgs` are marked, `trained[i]` picks assistant turns."""
        pieces: list[tuple[str, bool]] = []  # (text, is a trained response), in order
        open_ended: list[bool] = []  # per trained response: the template wrote no stop after it

        def add(text: str, response: bool) -> None:
            if pieces and not response and not pieces[-1][1]:
                pieces[-1] = (pieces[-1][0] + text, False)  # one string per context run
            elif text or response:
                pieces.append((text, response))

        prev, last_open, tail = "", False, 0
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                full = self._render(msgs[: i + 1], False)
                self._extends(prev, full, i)
                add(full[len(prev) :], False)
                prev, last_open = full, False
                continue
            if i == 0 or msgs[i - 1]["role"] not in self._fam.prompt_roles:
                raise ConversationError(
                    f"{what}: message {i} (assistant) must follow a "
                    f"{' or '.join(self._fam.prompt_roles)} message, not "
                    f"{msgs[i - 1]['role'] if i else 'the start of the conversation'}"
                )
            head = self._render(msgs[:i], True)
            self._extends(prev, head, i)
            add(head[len(prev) :], False)
            full = self._render(msgs[: i + 1], False)
            self._extends(head, full, i)
            response = full[len(head) :]
            # The response ends at the last stop token the template writes after it; anything
            # after that (e.g. a newline) is context for the next turn.
            ends = [s.end() for s in self._template_stop_re.finditer(response)]
            cut = ends[-1] if ends else len(response)
            add(response[:cut], trained[i])
            add(response[cut:], False)
            if trained[i]:
                open_ended.append(not ends)
            prev, last_open, tail = full, not ends, len(response) - cut
        if msgs[-1]["role"] == "assistant" and tail:
            # Text the template writes after the final stop token is never generated: drop it.
            text = pieces[-1][0][:-tail]
            pieces[-1:] = [(text, False)] if text else []

        tokens: list[int] = []
        mask: list[bool] = []
        needs_end = False  # the response just before has no stop token
        for text, response in pieces:
            ids = self._encode_text(text)
            if response:
                needs_end = open_ended.pop(0)
                tokens += ids
                mask += [True] * len(ids)
                continue
            # GLM-4 writes no end token after a response: the next turn's role token (<|user|>,
            # a stop token) is what the model generates there, so it is trained on. (After a
            # response followed by a non-stop token, e.g. a GLM-4 system turn, no end token is.)
            first_is_end = needs_end and bool(ids) and ids[0] in self.stop_token_ids
            tokens += ids
            if ids:
                mask += [first_is_end] + [False] * (len(ids) - 1)
            needs_end = False
        if last_open:  # the conversation ends with a response: close it with end-of-turn
            tokens.append(self.eot_id)
            mask.append(trained[-1])
        return tokens, mask
