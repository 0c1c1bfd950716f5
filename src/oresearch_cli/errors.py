"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2.

The exit codes of `ores`: 0 done; 2 a user error (an `OresError`: nothing or only part was done,
and the line says what to fix); `EXIT_PARTIAL` (3) done, but not everything passed; 130
interrupted (Ctrl-C), finished items kept.
"""

from __future__ import annotations

EXIT_PARTIAL = 3
"""The run finished, but some of its items did not: `ores synth` and `ores eval run` with failed
questions (rerun with `--retry-failed`), `ores spotcheck` with the gate held. Makefiles and
pipelines stop on it as on any nonzero code; a script that can use a partial result tests for 3."""


class OresError(Exception):
    """A problem with the user's input or environment, worded as `where: what; how to fix`.

    Raised anywhere in the library; only the CLI turns it into output. Bugs are not OresErrors:
    they keep their traceback.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line: the CLI contract is one clear line per failure.
        super().__init__(" ".join(message.split()))


class InputError(OresError):
    """A bad input file or stream (malformed line, missing field, wrong encoding, empty)."""


class WorkspaceError(OresError):
    """A workspace that cannot be used (path is a file, newer schema, locked too long, corrupt)."""


class ConfigError(InputError):
    """A recipe, flag or environment variable that cannot be used as given (unknown key, wrong type)."""
