"""The base class of the project's user-facing errors.

An error of this family means "the input is wrong", never "the code is wrong":
a config key that does not exist, a file that is missing, a malformed record,
a mesh that does not match the devices, a cache budget too small for one row,
a checkpoint that cannot be read. Its message is one line that names the input
and says what to change.

`python -m spar_jax` prints such an error as that one line and exits non-zero;
every other exception (a bug) keeps its full traceback. Each module keeps its
own error classes next to the code that raises them (`configs.ConfigError`,
`sharding.ShardingError`, `models.CheckpointError`, ...) and derives them from
`SparError` (and, where callers already catch one, from the builtin they
replaced, e.g. `ValueError`).
"""

from __future__ import annotations


class SparError(Exception):
    """A user-facing error: the message names the input and the fix, in one line."""


class MissingFileError(SparError, FileNotFoundError):
    """A file or directory the user named does not exist; the message names it."""


class DoesNotFitError(SparError, MemoryError):
    """A run that the memory planner says will not fit the device; the message shows the plan."""
