"""LLaMA-Factory's record layouts, rewritten into the project's `messages` layout.

LLaMA-Factory (and the official SPaR release, trained with it) stores data in two layouts
besides OpenAI-style `messages`:

* sharegpt: ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}],
  "system": optional str}``; for preference data the last turn is a human one and
  ``"chosen"`` / ``"rejected"`` are ``{"from": "gpt", "value": ...}`` objects. Roles (the
  `from` tags): human -> user, gpt -> assistant, system -> system, observation -> observation
  (a tool result; only chat families with that role accept it), function_call -> assistant
  (the model's tool call is its turn).
* alpaca: ``{"instruction": str, "input": optional str, "output": str, "system": optional str,
  "history": optional [[query, response], ...]}``; the user turn is ``instruction + "\\n" +
  input`` (just the instruction when input is empty); history turns come first, and are trained
  like the last one. Preference data has ``"chosen"`` / ``"rejected"`` strings instead of
  ``"output"``.

`to_messages(record)` rewrites either into ``{"messages": [...], ...}`` (keeping chosen /
rejected, as role/content dicts or strings) and returns any other record unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spar_jax.training.skips import RecordError

SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "observation": "observation",
    "function_call": "assistant",
}
_OTHER_LAYOUTS = ("messages", "prompt", "completion")  # fields of the project's / TRL's layouts


def layout(record: Mapping[str, Any]) -> str:
    """'sharegpt', 'alpaca' or 'messages' (every other layout, read by `formats`)."""
    has = [k for k in ("conversations", "instruction") if record.get(k) is not None]
    if len(has) == 2:
        raise RecordError("ambiguous_format", "both 'conversations' and 'instruction' are set")
    if has:
        others = [k for k in _OTHER_LAYOUTS if record.get(k) is not None]
        if others:
            raise RecordError(
                "ambiguous_format", f"both {has[0]!r} and {others[0]!r} are set; keep one layout"
            )
        return "sharegpt" if has[0] == "conversations" else "alpaca"
    return "messages"


def _string(value: Any, field: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if value is None:
        raise RecordError("missing_field", f"no {field!r}")
    if not isinstance(value, str):
        raise RecordError("wrong_type", f"{field!r} must be a string, got {type(value).__name__}")
    return value


def _turn(value: Any, field: str) -> dict[str, str]:
    """One sharegpt turn {from, value} as {role, content}."""
    if not isinstance(value, Mapping):
        raise RecordError("wrong_type", f"{field} must be a dict, got {type(value).__name__}")
    tag = _string(value.get("from"), f"{field}.from")
    if tag not in SHAREGPT_ROLES:
        raise RecordError(
            "unknown_role", f"{field} is from {tag!r}; use one of {list(SHAREGPT_ROLES)}"
        )
    return {"role": SHAREGPT_ROLES[tag], "content": _string(value.get("value"), f"{field}.value")}


def _with_system(system: Any, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The `system` field as a first system message, unless the turns already start with one."""
    text = _string(system, "system", optional=True)
    if text and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": text}, *messages]
    return messages


def _responses(record: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Copies chosen / rejected into `out`, a sharegpt {from, value} turn as {role, content}."""
    for key in ("chosen", "rejected"):
        value = record.get(key)
        if isinstance(value, Mapping) and "from" in value:
            value = _turn(value, key)
        if value is not None:
            out[key] = value


def _sharegpt(record: Mapping[str, Any]) -> dict[str, Any]:
    turns = record["conversations"]
    if isinstance(turns, (str, bytes, Mapping)) or not isinstance(turns, Sequence):
        raise RecordError(
            "wrong_type", f"'conversations' must be a list of turns, got {type(turns).__name__}"
        )
    if not turns:
        raise RecordError("missing_field", "'conversations' is an empty list of turns")
    out: dict[str, Any] = {
        "messages": _with_system(
            record.get("system"), [_turn(t, f"conversations[{i}]") for i, t in enumerate(turns)]
        )
    }
    _responses(record, out)
    return out


def alpaca_query(record: Mapping[str, Any]) -> str:
    """The user turn of an alpaca record: `instruction`, then a newline and `input` if set."""
    query = _string(record.get("instruction"), "instruction")
    extra = _string(record.get("input"), "input", optional=True)
    return f"{query}\n{extra}" if extra else query


def _alpaca(record: Mapping[str, Any]) -> dict[str, Any]:
    query = alpaca_query(record)
    messages = []
    history = record.get("history")
    if history is not None:
        if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
            raise RecordError("wrong_type", "'history' must be a list of [query, response] pairs")
        for i, pair in enumerate(history):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise RecordError("wrong_type", f"history[{i}] must be a [query, response] pair")
            messages.append({"role": "user", "content": _string(pair[0], f"history[{i}][0]")})
            messages.append({"role": "assistant", "content": _string(pair[1], f"history[{i}][1]")})
    messages.append({"role": "user", "content": query})
    out: dict[str, Any] = {}
    if record.get("output") is not None:
        if record.get("chosen") is not None or record.get("rejected") is not None:
            raise RecordError("ambiguous_format", "both 'output' and 'chosen'/'rejected' are set")
        output = _string(record["output"], "output")
        messages.append({"role": "assistant", "content": output})
    _responses(record, out)
    out["messages"] = _with_system(record.get("system"), messages)
    return out


def to_messages(record: Any) -> Any:
    """A sharegpt or alpaca record in the `messages` layout; any other value unchanged.

    Raises `RecordError` for a malformed sharegpt / alpaca record, or one with the fields of
    two layouts.
    """
    if not isinstance(record, Mapping):
        return record
    kind = layout(record)
    if kind == "sharegpt":
        return _sharegpt(record)
    if kind == "alpaca":
        return _alpaca(record)
    return record
