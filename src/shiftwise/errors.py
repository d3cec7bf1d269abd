"""The library's error types and the command line's exit codes.

Every error the ``shiftwise`` command reports as a one-line message is a
:class:`ShiftwiseError` raised where user input meets the library (an option, a file, a data
set); its ``exit_code`` is the process exit code. Anything else (``TypeError``,
``RuntimeError``, ...) is a bug and keeps its traceback.

An error about a value the user gave carries the name of that value as ``field`` (a config
field path such as ``optim.lr``, or a function argument such as ``num_classes``); its message
starts with it. ``also`` lists other fields the message names. A front end that spells fields
its own way (the command line's ``--lr``) rewrites them with :meth:`ShiftwiseError.renamed`.

=====  ==========================================================================
code   meaning
=====  ==========================================================================
0      success
2      usage or input error: a bad option, an unreadable / unsafe / mismatched file,
       unreadable data (:class:`UsageError` and its subclasses)
2      a file could not be written (disk full, permissions: :class:`WriteError`); nothing
       partial is left and the previous version of the file is unchanged
3      the training run diverged (:class:`DivergedError`); the last good checkpoint
       and weights files are untouched
130    interrupted (Ctrl-C, SIGINT)
143    terminated (SIGTERM); handled like an interruption
=====  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "CheckpointError",
    "DataError",
    "DivergedError",
    "MissingFileError",
    "ShiftwiseError",
    "UnknownArgumentError",
    "UnsafeFileError",
    "UsageError",
    "WriteError",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class ShiftwiseError(Exception):
    """Base of the errors the command line turns into one line and ``exit_code``.

    ``ShiftwiseError(reason, field="optim.lr")`` reads ``"optim.lr: <reason>"``; ``also``:
    other fields named in ``reason``. A message that starts with its field
    (``ShiftwiseError("optim.lr: <reason>")``: a first word without spaces or quotes, then
    ``": "``) gives the same error.
    """

    exit_code = EXIT_USAGE

    def __init__(
        self, reason: str = "", *args: object, field: str | None = None, also: Sequence[str] = ()
    ) -> None:
        if field is None:
            head, separator, rest = reason.partition(": ")
            if separator and head and not any(c.isspace() or c in "'\"" for c in head):
                field, reason = head, rest
        super().__init__(f"{field}: {reason}" if field else reason, *args)
        self.reason = reason
        self.field = field
        self.also = tuple(also)

    def renamed(self, spell: Callable[[str], str]) -> ShiftwiseError:
        """The same error (type, ``field``, ``also``) whose message spells every field it
        names as ``spell(field)`` (``spell`` returns fields it does not know unchanged)."""
        reason = self.reason
        for name in sorted(self.also, key=len, reverse=True):
            reason = reason.replace(name, spell(name))
        error = type(self)(reason, also=self.also)
        error.field = self.field
        if self.field:
            error.args = (f"{spell(self.field)}: {reason}",)
        return error


class UsageError(ShiftwiseError, ValueError):
    """A bad option or input value; the message starts with the option the user passed."""


class UnknownArgumentError(UsageError, TypeError):
    """An argument the function or model does not take: also a ``TypeError``, as Python's
    own unexpected-keyword error (timm's ``create_model`` clients expect it)."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or directory named by an option does not exist."""


class CheckpointError(UsageError):
    """A weights or checkpoint file is damaged, not ours, or does not fit the model."""


class UnsafeFileError(CheckpointError):
    """A pickle refers to a global outside the allow-list (loading it could run code)."""


class DataError(UsageError):
    """The data cannot be used (e.g. more unreadable images than allowed)."""


class DivergedError(ShiftwiseError):
    """Training produced non-finite losses, gradients or weights; nothing was written."""

    exit_code = EXIT_DIVERGED


class WriteError(ShiftwiseError, OSError):
    """A file could not be written (disk full, read-only, ...); the message names the file and
    what is still safe on disk. Nothing partial was left."""
