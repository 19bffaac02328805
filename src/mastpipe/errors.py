"""Every error mastpipe raises on purpose derives from :class:`MastpipeError`.

The hierarchy::

    MastpipeError                  exit 1 unless a subclass says otherwise
    ├── RecipeError                exit 2: the recipe is invalid (carries every Problem found)
    ├── UsageError                 exit 2: a call (or command line) asks for something impossible
    │   ├── NotWritableError           a directory the run must write to cannot be created or written
    │   └── CABundleError              REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE names no usable PEM bundle
    ├── ArchiveError               exit 3: MAST unreachable, or answering errors after retries
    │   ├── TruncatedResultError       MAST cut a result short and it could not be split
    │   └── AuthError                  the token is missing, invalid or lacks exclusive access
    │       ├── TokenRefusedError          exit 2: MAST refuses the token, or no cookie can carry it
    │       └── TokenCheckError            MAST could not be asked whether the token is valid
    ├── LockError                  exit 4: another run holds the state directory's lock
    ├── NameNotFoundError          exit 2: MAST's name resolver does not know a position.object
    ├── ExpectationError           exit 5: the recipe's `expect` did not hold; stopped before retrieve
    ├── StateError                 exit 1: the state directory cannot be read or written
    │   └── LedgerError                exit 2: the download ledger cannot be opened or read
    └── TransferError              exit 1: a file could not be fetched or verified
        ├── IntegrityError             size or sha256 differ from what was expected
        └── UnsafePathError            a product would be written outside the destination

    Interrupted (a KeyboardInterrupt, not a MastpipeError)   exit 128 + signal: 130 SIGINT, 143 SIGTERM

Exit codes are part of the command line's contract (see README, "Exit codes"); the numbers live
here so the library and the CLI agree on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_INVALID = 2
EXIT_ARCHIVE = 3
EXIT_LOCKED = 4
#: The recipe's ``expect`` did not hold (an empty or oversized result): nothing was downloaded.
EXIT_EXPECTATION = 5
#: A run stopped by Ctrl-C (SIGINT), as shells report a process killed by that signal (128 + 2).
EXIT_INTERRUPTED = 130


__all__ = [
    "EXIT_ARCHIVE", "EXIT_EXPECTATION", "EXIT_FILES_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_LOCKED", "EXIT_OK",
    "ArchiveError", "AuthError", "CABundleError", "ExpectationError", "NameNotFoundError", "IntegrityError", "Interrupted", "LedgerError",
    "LockError", "MastpipeError", "NotWritableError", "Problem", "RecipeError", "StateError",
    "TokenCheckError", "TokenRefusedError", "TransferError", "TruncatedResultError", "UnsafePathError",
    "UsageError", "interrupt_exit_code", "literal"
]


class MastpipeError(Exception):
    """Root of every error mastpipe raises on purpose.

    Parameters
    ----------
    message : str
        What went wrong (expected vs got, naming the file or field concerned).
    hint : str, optional
        What to do about it.
    parameters : iterable of str, or mapping
        Names of the library parameters the message and hint speak of, written in them as
        ``{name}`` (other braces doubled, values quoted with :func:`literal`). The library shows
        each as its keyword name (``until 'x' is not a stage``), or as the mapping spells it
        (``{"force": "force=True"}``); the command line calls :meth:`name_parameters` with its
        flags (``--until 'x' is not a stage``), so the library never speaks in CLI flags.
    """

    exit_code = EXIT_FILES_FAILED

    def __init__(self, message: str, *, hint: str | None = None,
                 parameters: Iterable[str] | Mapping[str, str] = ()) -> None:
        self._spelling = dict(parameters) if isinstance(parameters, Mapping) else {p: p for p in parameters}
        self.parameters = tuple(self._spelling)
        self._templates = (message, hint)
        self.message, self.hint = message, hint
        self.name_parameters({})
        super().__init__(self.message)

    def name_parameters(self, names: Mapping[str, str]) -> None:
        """Say each parameter as ``names`` spells it (e.g. ``{"until": "--until"}``), its keyword
        name otherwise."""
        if not self.parameters:
            return
        spelled = {name: names.get(name, self._spelling[name]) for name in self.parameters}
        message, hint = self._templates
        self.message = message.format_map(spelled)
        self.hint = hint.format_map(spelled) if hint is not None else None
        self.args = (self.message,)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


def literal(value: object) -> str:
    """``str(value)`` safe inside a message that names parameters (braces doubled)."""
    return str(value).replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, located as precisely as the input allows.

    ``line`` and ``column`` are 1-based; they are ``None`` when the problem has no place in the
    file (a missing file, an empty document). ``field`` is the dotted path inside the recipe,
    ``"<recipe>"`` when the problem concerns the whole document.
    """

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    hint: str | None = None

    def one_line(self) -> str:
        """``FILE:LINE:COL: field.path: message``, the format editors and CI annotate from.

        Always one line: newlines and other control characters (a key or value quoted from the
        recipe may hold them) are shown escaped, as ``\\n``.
        """
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return _printable(f"{where}: {self.field}: {self.message}")

    def __str__(self) -> str:
        text = self.one_line()
        return text if not self.hint else f"{text}\n  hint: {_printable(self.hint)}"


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class RecipeError(MastpipeError):
    """The recipe is invalid; :attr:`problems` lists everything found, not just the first."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(MastpipeError):
    """The command line or API call asks for something that cannot be done (messages name the
    parameter concerned: see ``parameters``)."""

    exit_code = EXIT_INVALID


class NotWritableError(UsageError):
    """A directory the run must write to (state directory, destination) cannot be created or written.

    A usage problem (exit 2), found before MAST is asked anything: the fix is another directory
    or other permissions, not a retry.
    """


class CABundleError(UsageError):
    """``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) names a file that is missing, unreadable or
    holds no PEM certificate.

    A problem of this machine's configuration (exit 2), found before any request (see
    :func:`mastpipe.tls.check_ca_bundle`): MAST is not to blame, and retrying cannot help.
    """


class ArchiveError(MastpipeError):
    """MAST (or the server standing in for it) could not answer, even after retries."""

    exit_code = EXIT_ARCHIVE


class TruncatedResultError(ArchiveError):
    """MAST returned fewer rows than exist and the query could not be split further."""


class AuthError(ArchiveError):
    """The MAST token is missing, invalid, or does not grant exclusive access."""


class TokenRefusedError(AuthError):
    """MAST refuses the token (``/whoami`` answers anonymous), or it holds characters no cookie
    can carry: bad input, like a bad recipe (exit 2), fixed with a new token, not a retry."""

    exit_code = EXIT_INVALID


class TokenCheckError(AuthError):
    """MAST could not be asked whether the token is valid (unreachable, a certificate that fails
    the check, an answer that is not JSON): exit 3, as for any run MAST cannot serve."""


class LockError(MastpipeError):
    """Another run holds the lock on this state directory."""

    exit_code = EXIT_LOCKED


class NameNotFoundError(MastpipeError):
    """MAST's name look-up (``Mast.Name.Lookup``) answered, and does not know the name: the
    recipe's ``position.object`` needs another spelling or coordinates. Not the server's fault."""

    exit_code = EXIT_INVALID


class ExpectationError(MastpipeError):
    """What a run found broke the recipe's ``expect`` (by default: a search that matches nothing,
    or a filter that keeps nothing). Raised after the stage that showed it, before retrieve.

    Attributes
    ----------
    failures : list of dict
        One entry per failed check: ``where`` (``recipe`` or ``query <name>``), ``what``
        (observations, products, files, bytes), ``min``, ``max``, ``found``, ``stage``.
    result : RunResult or None
        The stages run so far (set by the pipeline), so a report can still be written.
    explanations : list of dict
        Why a result is empty, when that could be found out (see :mod:`mastpipe.explain`).
    """

    exit_code = EXIT_EXPECTATION

    def __init__(self, message: str, failures: list[dict[str, object]], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failures = failures
        self.result: object = None
        self.explanations: list[dict[str, object]] = []


class StateError(MastpipeError):
    """The state directory (checkpoints, ledger, lock) cannot be read or written."""


class LedgerError(StateError):
    """The download ledger (``<state>/ledger.sqlite``) cannot be opened or read, and could not be
    set aside (a corrupt one is, automatically).

    Exit 2, like a state directory that cannot be written: found before anything is
    downloaded, fixed on this machine (permissions, moving the file aside), not by a retry.
    """

    exit_code = EXIT_INVALID


class TransferError(MastpipeError):
    """A file could not be fetched."""


class IntegrityError(TransferError):
    """A fetched file's size or sha256 is not what was expected."""


class UnsafePathError(TransferError):
    """A product's name or ids would place a file outside the destination."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM) that the command line turns into an interrupt.

    A :class:`KeyboardInterrupt` so that everything Ctrl-C stops cleanly (downloads stop between
    blocks and keep their temporaries, locks are released) stops the same way for SIGTERM.

    Parameters
    ----------
    signum : int
        The signal received; the exit code is ``128 + signum``, as shells report it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


def interrupt_exit_code(interrupt: KeyboardInterrupt) -> int:
    """Exit code of a run stopped by ``interrupt``: 130 for Ctrl-C, 128 + signal otherwise."""
    return getattr(interrupt, "exit_code", EXIT_INTERRUPTED)
