"""Errors raised by `spar_jax.tokenizer`; each message names the input and the fix."""


class TokenizerNotFoundError(FileNotFoundError):
    """The tokenizer path does not exist, or a directory lacks the tokenizer files."""


class TokenizerLoadError(ValueError):
    """The tokenizer files exist but cannot be read as a tokenizer."""


class FamilyError(ValueError):
    """The chat family ('llama3' or 'glm4') is unknown, undetectable or contradicts the vocab."""


class ConversationError(ValueError):
    """A conversation is empty, malformed, has an unknown role or ends in the wrong place."""


class ChatTemplateError(ValueError):
    """A chat template fails on a conversation or cannot give exact turn boundaries."""
