"""Errors raised by `spar_jax.tokenizer`; each message names the input and the fix."""

from spar_jax.errors import SparError


class TokenizerNotFoundError(SparError, FileNotFoundError):
    """The tokenizer path does not exist, or a directory lacks the tokenizer files."""


class TokenizerLoadError(SparError, ValueError):
    """The tokenizer files exist but cannot be read as a tokenizer."""


class FamilyError(SparError, ValueError):
    """The chat family ('llama3' or 'glm4') is unknown, undetectable or contradicts the vocab."""


class ConversationError(SparError, ValueError):
    """A conversation is empty, malformed, has an unknown role or ends in the wrong place."""


class ChatTemplateError(SparError, ValueError):
    """A chat template fails on a conversation or cannot give exact turn boundaries."""
