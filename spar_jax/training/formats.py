"""Record formats: one record (a mapping) -> a `DPORecord`, `SFTRecord` or `PromptRecord`.

Formats read (a field set to None counts as absent, since Arrow fills the columns of other
formats with nulls when files are merged); LLaMA-Factory's sharegpt and alpaca layouts are
first rewritten into the `messages` layout by `layouts.to_messages`:

* DPO, SPaR / LLaMA-Factory: ``{"messages": [{"role": "user", "content": ...}, ...],
  "chosen": {"role": "assistant", "content": ...}, "rejected": {...}}`` (chosen/rejected may
  also be plain strings), and the same in sharegpt or alpaca layout.
* DPO, TRL standard: ``{"prompt": str, "chosen": str, "rejected": str}``.
* DPO, TRL conversational: ``{"prompt": [messages], "chosen": [{"role": "assistant", ...}],
  "rejected": [...]}``; also TRL's implicit prompt, ``{"chosen": [messages..., assistant],
  "rejected": [messages..., assistant]}`` with the same messages before the last one.
* SFT: ``{"messages": [...]}`` ending with an assistant turn (messages may carry "train": bool),
  sharegpt ``{"conversations": [...]}``, alpaca ``{"instruction", "input", "output"}``, or TRL's
  ``{"prompt", "completion"}`` (strings, or message lists).
* Prompts (the self-play stages): ``{"prompt": str, "prompt_id": optional}``; also alpaca's
  ``instruction`` (+ ``input``), and the first user turn of ``messages`` / ``conversations`` or
  of a TRL message-list ``prompt``.

A record that fits no format raises `RecordError` with a short reason key (`skips.REASONS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from spar_jax.tokenizer import FAMILIES
from spar_jax.training.layouts import alpaca_query, to_messages
from spar_jax.training.skips import RecordError


@dataclasses.dataclass(frozen=True)
class DPORecord:
    """A preference pair: the prompt conversation (ends with a user turn) and two responses."""

    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    """A conversation ending with an assistant turn; messages may carry "train": bool."""

    messages: list[dict[str, Any]]


def _get(record: Mapping[str, Any], key: str) -> Any:
    """The field, None if absent (Arrow writes null for the columns of other formats)."""
    return record.get(key)


def _messages(value: Any, roles: tuple[str, ...], field: str) -> list[dict[str, Any]]:
    """Validate a message list; keep role, content and a bool "train" (nulls dropped)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise RecordError(
            "wrong_type", f"{field!r} must be a list of messages, got {type(value).__name__}"
        )
    if not value:
        raise RecordError("missing_field", f"{field!r} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise RecordError("wrong_type", f"{field}[{i}] must be a dict, got {type(m).__name__}")
        role, content, train = m.get("role"), m.get("content"), m.get("train")
        if role is None or content is None:
            missing = "role" if role is None else "content"
            raise RecordError("missing_field", f"{field}[{i}] has no {missing!r}")
        if not isinstance(role, str) or not isinstance(content, str):
            bad = "role" if not isinstance(role, str) else "content"
            raise RecordError(
                "wrong_type",
                f"{field}[{i}].{bad} must be a string, got {type(m[bad]).__name__}",
            )
        if role not in roles:
            raise RecordError(
                "unknown_role", f"{field}[{i}] has role {role!r}; use one of {list(roles)}"
            )
        if train is not None and not isinstance(train, bool):
            raise RecordError("wrong_type", f"{field}[{i}].train must be a bool, got {train!r}")
        msg = {"role": role, "content": content}
        if train is not None:
            msg["train"] = train
        out.append(msg)
    return out


def _prompt(
    value: Any, roles: tuple[str, ...], prompt_roles: tuple[str, ...], field: str
) -> list[dict[str, Any]]:
    """A prompt (a string, or messages ending with a user turn) as a message list."""
    if isinstance(value, str):
        msgs = [{"role": "user", "content": value}]
    else:
        msgs = _messages(value, roles, field)
    if msgs[-1]["role"] not in prompt_roles:
        raise RecordError(
            "bad_turn_order",
            f"{field!r} must end with a {'/'.join(prompt_roles)} turn, not {msgs[-1]['role']!r}",
        )
    if not msgs[-1]["content"].strip():
        raise RecordError("empty_prompt", f"the last message of {field!r} is empty")
    return [{k: v for k, v in m.items() if k != "train"} for m in msgs]


def _response(value: Any, roles: tuple[str, ...], field: str) -> str:
    """A response: a string, an assistant message, or a list holding one assistant message."""
    if isinstance(value, str):
        text = value
    else:
        if isinstance(value, Mapping):
            value = [value]
        msgs = _messages(value, roles, field)
        if len(msgs) != 1 or msgs[0]["role"] != "assistant":
            raise RecordError(
                "bad_turn_order",
                f"{field!r} must be one assistant message, got roles {[m['role'] for m in msgs]}",
            )
        text = msgs[0]["content"]
    if not text.strip():
        raise RecordError("empty_response", f"{field!r} is empty")
    return text


def _family_roles(family: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fam = FAMILIES[family]
    return fam.roles, fam.prompt_roles


def _need(record: Any, *fields: str) -> None:
    if not isinstance(record, Mapping):
        raise RecordError("not_a_mapping", f"got {type(record).__name__}")
    missing = [f for f in fields if _get(record, f) is None]
    if missing:
        raise RecordError(
            "missing_field", f"no {' / '.join(map(repr, missing))} (fields: {sorted(record)})"
        )


def parse_dpo(record: Any, family: str) -> DPORecord:
    """Read one DPO record in any supported format, or raise `RecordError`."""
    roles, prompt_roles = _family_roles(family)
    record = to_messages(record)
    _need(record, "chosen", "rejected")
    has_messages, has_prompt = (
        _get(record, "messages") is not None,
        _get(record, "prompt") is not None,
    )
    if has_messages and has_prompt:
        raise RecordError("ambiguous_format", "both 'messages' and 'prompt' are set; keep one")
    chosen, rejected = record["chosen"], record["rejected"]
    if has_messages or has_prompt:
        field = "messages" if has_messages else "prompt"
        prompt = _prompt(record[field], roles, prompt_roles, field)
    else:  # TRL implicit prompt: two full conversations that differ in the last turn
        if not all(isinstance(x, list) for x in (chosen, rejected)):
            raise RecordError(
                "missing_field", f"no 'messages' / 'prompt' (fields: {sorted(record)})"
            )
        c = _messages(chosen, roles, "chosen")
        r = _messages(rejected, roles, "rejected")
        if len(c) < 2 or c[:-1] != r[:-1]:
            raise RecordError(
                "missing_field",
                "no 'messages' / 'prompt', and 'chosen' and 'rejected' are not two "
                "conversations sharing their prompt (TRL's implicit-prompt format)",
            )
        prompt = _prompt(c[:-1], roles, prompt_roles, "chosen[:-1]")
        chosen, rejected = c[-1:], r[-1:]
    return DPORecord(
        prompt=prompt,
        chosen=_response(chosen, roles, "chosen"),
        rejected=_response(rejected, roles, "rejected"),
    )


def parse_sft(record: Any, family: str) -> SFTRecord:
    """Read one SFT record (messages, sharegpt, alpaca, TRL prompt/completion), or raise."""
    roles, prompt_roles = _family_roles(family)
    if not isinstance(record, Mapping):
        raise RecordError("not_a_mapping", f"got {type(record).__name__}")
    record = to_messages(record)
    if _get(record, "messages") is not None:
        if _get(record, "completion") is not None:
            raise RecordError("ambiguous_format", "both 'messages' and 'completion' are set")
        msgs = _messages(record["messages"], roles, "messages")
        if msgs[-1]["role"] != "assistant":
            raise RecordError(
                "bad_turn_order",
                f"'messages' must end with an assistant turn, not {msgs[-1]['role']!r}",
            )
    else:
        _need(record, "prompt", "completion")
        prompt = _prompt(record["prompt"], roles, prompt_roles, "prompt")
        completion = _response(record["completion"], roles, "completion")
        msgs = [*prompt, {"role": "assistant", "content": completion}]
    return SFTRecord(messages=msgs)


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """A prompt for generation: its id (the record's `prompt_id`, else its record index)."""

    prompt_id: Any
    prompt: str


def _first_user(value: Any, field: str) -> str:
    """The content of the first user turn of a message list."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise RecordError(
            "wrong_type", f"{field!r} must be a list of messages, got {type(value).__name__}"
        )
    for i, m in enumerate(value):
        if isinstance(m, Mapping) and m.get("role") == "user":
            content = m.get("content")
            if not isinstance(content, str):
                raise RecordError("wrong_type", f"{field}[{i}].content must be a string")
            return content
    raise RecordError("missing_field", f"{field!r} has no user turn")


def parse_prompt(record: Any, index: int) -> PromptRecord:
    """Read one prompt record (see the module docstring), or raise `RecordError`.

    The first of `prompt`, `instruction`, `messages`, `conversations` that is set gives the
    prompt (a record of a DPO or SFT file is thus also a prompt: its first user turn).
    `index` is the record's position, its id when it has no `prompt_id`.
    """
    if not isinstance(record, Mapping):
        raise RecordError("not_a_mapping", f"got {type(record).__name__}")
    prompt = _get(record, "prompt")
    if isinstance(prompt, str):
        text = prompt
    elif prompt is not None:
        text = _first_user(prompt, "prompt")
    elif _get(record, "instruction") is not None:
        text = alpaca_query(record)
    elif _get(record, "conversations") is not None:
        text = _first_user(to_messages(record)["messages"], "conversations")
    elif _get(record, "messages") is not None:
        text = _first_user(record["messages"], "messages")
    else:
        raise RecordError(
            "missing_field",
            f"no 'prompt' / 'instruction' / 'messages' / 'conversations' (fields: {sorted(record)})",
        )
    if not text.strip():
        raise RecordError("empty_prompt", "the prompt is empty")
    prompt_id = _get(record, "prompt_id")
    return PromptRecord(prompt_id=index if prompt_id is None else prompt_id, prompt=text)
