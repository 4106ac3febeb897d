"""Chat families SPaR uses (LLaMA-3, GLM-4): special tokens, stop tokens, chat formats.

Every chat format string of the package lives in `FAMILIES` below, with where it
comes from. A tokenizer that ships its own `chat_template` is rendered with that
template instead (see `core.Tokenizer`); these built-in formats are the fallback
and reproduce the published templates token for token (tests check both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spar_jax.tokenizer.errors import ConversationError, FamilyError

Message = Mapping[str, Any]  # {"role": str, "content": str, optional "train": bool, ...}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """One chat family: its special tokens, stop tokens and built-in chat format.

    A conversation renders as `prefix + message.format(role=, content=)` per
    message, then `generation_prompt` when the model is to answer.
    """

    name: str
    special_tokens: tuple[str, ...]  # all in the vocab of a tokenizer of this family
    stop_tokens: tuple[str, ...]  # generation stops at any of these
    optional_stop_tokens: tuple[str, ...] = ()  # stop tokens too, where the vocab has them
    end_of_turn: str  # appended after a response when the template writes no stop token
    pad_token: str  # used as padding when the tokenizer defines no pad token
    roles: tuple[str, ...]
    prompt_roles: tuple[str, ...]  # roles the assistant answers (a prompt ends with one)
    prefix: str
    message: str
    generation_prompt: str
    strip_content: bool  # the template trims whitespace around each message's content

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        """The built-in chat format applied to `messages` (roles already checked)."""
        parts = [self.prefix]
        for m in messages:
            content = m["content"].strip() if self.strip_content else m["content"]
            # str.format parses only the format string, so braces in content stay as they are.
            parts.append(self.message.format(role=m["role"], content=content))
        if add_generation_prompt:
            parts.append(self.generation_prompt)
        return "".join(parts)


# --- The published chat formats ------------------------------------------------------------
#
# LLaMA-3 (Meta-Llama-3-8B-Instruct, the model of the SPaR paper):
#   * meta-llama/llama3, llama/tokenizer.py, `ChatFormat.encode_dialog_prompt`: <|begin_of_text|>,
#     then per message `<|start_header_id|>` + role + `<|end_header_id|>` + "\n\n" +
#     content.strip() + `<|eot_id|>`, then the assistant header `<|start_header_id|>assistant
#     <|end_header_id|>\n\n` for the model to complete.
#   * the same as the `chat_template` of meta-llama/Meta-Llama-3-8B-Instruct's tokenizer_config.json:
#     `'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim
#     + '<|eot_id|>'`, `bos_token` before the first message, and
#     `'<|start_header_id|>assistant<|end_header_id|>\n\n'` as the generation prompt.
#   * stop tokens: generation_config.json eos_token_id [128001 <|end_of_text|>, 128009 <|eot_id|>];
#     Llama-3.1 adds 128008 <|eom_id|>, used here when the vocab has it. (Llama-3.1's own template
#     adds a "Cutting Knowledge Date" system block; such a tokenizer's template is used as is.)
#
# GLM-4 (THUDM, now zai-org, glm-4-9b-chat):
#   * the `chat_template` of glm-4-9b-chat's tokenizer_config.json, without its tools branch:
#     `[gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>
#     {{ item['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}
#     {% if add_generation_prompt %}<|assistant|>{% endif %}` (no newline after the generation
#     prompt: the model writes the "\n" that starts its answer, so it belongs to the response).
#     The built-in format leaves out `metadata` (tool calls) and also renders messages whose content
#     is empty, which that template drops.
#   * LLaMA-Factory's `glm4` template (used to train SPaR) says the same: prefix `[gMASK]<sop>`,
#     user `<|user|>\n{content}<|assistant|>`, assistant `\n{content}`, system `<|system|>\n{content}`,
#     observation `<|observation|>\n{content}<|assistant|>`, stop words <|user|>, <|observation|>,
#     and `efficient_eos`: the eos token <|endoftext|> closes the final response. GLM-4's own
#     finetune_demo also appends <|endoftext|> (in the loss) after the last turn.
#   * stop tokens: generation_config.json eos_token_id
#     [151329 <|endoftext|>, 151336 <|user|>, 151338 <|observation|>].

LLAMA3 = Family(
    name="llama3",
    special_tokens=(
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ),
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
    optional_stop_tokens=("<|eom_id|>",),
    end_of_turn="<|eot_id|>",
    pad_token="<|end_of_text|>",
    roles=("system", "user", "assistant"),
    prompt_roles=("user",),
    prefix="<|begin_of_text|>",
    message="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
    generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
    strip_content=True,
)

GLM4 = Family(
    name="glm4",
    special_tokens=(
        "[gMASK]",
        "<sop>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
        "<|endoftext|>",
    ),
    stop_tokens=("<|endoftext|>", "<|user|>", "<|observation|>"),
    end_of_turn="<|endoftext|>",
    pad_token="<|endoftext|>",
    roles=("system", "user", "assistant", "observation"),
    prompt_roles=("user", "observation"),
    prefix="[gMASK]<sop>",
    message="<|{role}|>\n{content}",
    generation_prompt="<|assistant|>",
    strip_content=False,
)

FAMILIES: dict[str, Family] = {f.name: f for f in (LLAMA3, GLM4)}


def resolve_family(
    family: str | None, token_id: Callable[[str], int | None], source: str
) -> Family:
    """The family named `family`, or the one whose special tokens the vocab has.

    Args:
      family: 'llama3', 'glm4' or None (detect).
      token_id: maps a token string to its id, or None when it is not in the vocab.
      source: the tokenizer path, for error messages.
    """
    if family is not None:
        if family not in FAMILIES:
            raise FamilyError(
                f"unknown chat family {family!r} for tokenizer {source}; "
                f"use one of {sorted(FAMILIES)} or None to detect it"
            )
        fam = FAMILIES[family]
        missing = [t for t in fam.special_tokens if token_id(t) is None]
        if missing:
            raise FamilyError(
                f"tokenizer {source} lacks the {fam.name} special tokens {missing}; "
                f"it is not a {fam.name} tokenizer: pass the right family or a {fam.name} tokenizer"
            )
        return fam
    found = [f for f in FAMILIES.values() if all(token_id(t) is not None for t in f.special_tokens)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise FamilyError(
            f"cannot detect the chat family of tokenizer {source}: its vocab has neither the "
            f"LLaMA-3 special tokens {list(LLAMA3.special_tokens)} nor the GLM-4 ones "
            f"{list(GLM4.special_tokens)}; load a LLaMA-3 or GLM-4 tokenizer"
        )
    raise FamilyError(
        f"tokenizer {source} has the special tokens of several chat families "
        f"{[f.name for f in found]}; pass family= one of them"
    )


def check_messages(messages: Any, family: Family, what: str) -> list[dict[str, Any]]:
    """Validate a conversation and return it as a list of plain dicts.

    Args:
      messages: a sequence of {"role", "content"} mappings (an optional bool "train" too).
      family: gives the allowed roles.
      what: the calling function, for error messages.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ConversationError(
            f"{what}: messages must be a list of {{'role': ..., 'content': ...}} dicts, "
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise ConversationError(
            f"{what}: the conversation is empty; pass at least one "
            "{'role': 'user', 'content': ...} message"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ConversationError(
                f"{what}: message {i} must be a dict with 'role' and 'content', got {m!r:.80}"
            )
        if m["role"] not in family.roles:
            raise ConversationError(
                f"{what}: message {i} has unknown role {m['role']!r}; "
                f"{family.name} conversations use the roles {list(family.roles)}"
            )
        if not isinstance(m["content"], str):
            raise ConversationError(
                f"{what}: message {i} ({m['role']}) has content of type "
                f"{type(m['content']).__name__}; content must be a string"
            )
        if "train" in m and not isinstance(m["train"], bool):
            raise ConversationError(
                f"{what}: message {i} has train={m['train']!r}; use True or False"
            )
        out.append(dict(m))
    return out


def check_prompt_end(messages: Sequence[Message], family: Family, what: str) -> None:
    """Raise unless the conversation ends where the model answers (a user turn)."""
    last = messages[-1]["role"]
    if last not in family.prompt_roles:
        raise ConversationError(
            f"{what}: the conversation must end with a {' or '.join(family.prompt_roles)} "
            f"message for the model to answer, but the last message is from {last!r}; "
            "drop the trailing message, or use encode_conversation to train on a full chat"
        )
