"""One frozen settings object for a download, built once and handed down.

Everything that shapes how files are fetched (downloads in flight, timeouts, retries, token
hosts, ``--verify``, ``retrieve.overwrite``, ``--insecure``, the executor) travels as one
:class:`DownloadSettings`, as httpx hands ``Limits``/``Timeout`` objects around instead of a dozen
keyword arguments. It is built once, by :meth:`DownloadSettings.build`, from the recipe and what
the caller (the command line, or :func:`mastpipe.run`) adds; the engines read it and never
change it.

Two things stay out of it on purpose, and are passed beside it: the MAST token (a secret: a
frozen dataclass's ``repr`` would show it, and Dask pickles settings into task arguments) and the
``on_event`` callback (a live object, not a setting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mastpipe.errors import UsageError
from mastpipe.retry import RetryPolicy
from mastpipe.stages.retrieve.segments import Segmenting
from mastpipe.typing import Overwrite

if TYPE_CHECKING:
    from mastpipe.recipe.models import Executor, Recipe

__all__ = ["CHUNK", "DownloadSettings", "Overwrite", "settings_from"]

# 1 MiB blocks. Each is received into a reused buffer (no allocation per block), so a larger
# block costs no page faults; it wakes the check thread (sha256, FITS sum) and the writer a
# quarter as often as 256 KiB: on the 1 GB file ~8% less CPU and a third of the check
# thread's context switches, side by side under load (benchmarks/README.md). In 2026-11,
# when each block was a freshly allocated ``bytes``, 256 KiB beat 1 MiB: every 1 MiB block
# was a new mmap, faulted in page by page.
CHUNK = 1 << 20


#: A transfer's timeout is capped: MAST's query timeout may be long (a slow search), but a
#: download that sends no byte for five minutes is stuck, not slow.
TIMEOUT_CAP = 300.0


@dataclass(frozen=True)
class DownloadSettings:
    """How files are downloaded: one immutable value for a whole run.

    Attributes
    ----------
    in_flight : int
        Downloads running at once (``retrieve.in_flight``; with Dask, across the cluster).
    timeout : float
        Seconds to wait to connect and between bytes before an attempt counts as failed.
    policy : RetryPolicy
        Attempts per file and backoff.
    run_retry_budget : int or None
        Retries allowed across the whole run (None: ``10 + 2 * number of files``); once spent,
        files fail on their next transient error instead of hammering a failing server.
    token_hosts : tuple of str
        ``host`` or ``host:port`` entries the MAST token may be sent to.
    verify : bool
        Re-hash files recorded as done and refetch those whose hash changed (``--verify`` or
        ``retrieve.verify: sha256``).
    check_space : bool
        Refuse to start when the destination lacks room for the bytes still to fetch.
    overwrite : {"changed", "never", "always"}
        Files found under their final name without a ledger record
        (see :class:`~mastpipe.stages.retrieve.decide.LocalState`).
    chunk_size : int
        Largest read/write/hash step (default 1 MiB, see ``CHUNK``).
    insecure : bool
        Do not check servers' TLS certificates (``--insecure``; the caller warns, see
        :mod:`mastpipe.tls`).
    executor : Executor or None
        Where downloads run (the recipe's ``retrieve.executor`` with ``--executor`` /
        ``--scheduler`` applied); None means threads of this process.
    segments : Segmenting
        When a large file is fetched in ranged segments over several connections
        (``retrieve.segments``; default: from 256 MB). Its extra connections count in
        ``in_flight`` and only take slots no other file is waiting for.
    s3_in_flight : int
        Downloads of cloud copies running at once, apart from ``in_flight``
        (``retrieve.s3_in_flight``; with Dask, across the cluster).
    s3 : S3Client or None
        Fetches tasks whose URL is ``s3://...`` (MAST's cloud copies; settings only, picklable:
        each process makes its own boto3 client); without it such tasks fail.
    s3_parts, s3_part_size : int
        A cloud copy larger than two parts is fetched as parts of ``s3_part_size`` bytes,
        ``s3_parts`` at a time, resumable part by part (:mod:`~mastpipe.stages.retrieve.parts`);
        ``s3_parts=1``: one stream, resumable with Range.
    """

    in_flight: int = 4
    timeout: float = 60.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    run_retry_budget: int | None = None
    token_hosts: tuple[str, ...] = ("mast.stsci.edu",)
    verify: bool = False
    check_space: bool = True
    overwrite: Overwrite = "changed"
    chunk_size: int = CHUNK
    insecure: bool = False
    #: Ask the server (HEAD, ``in_flight`` at a time) whether files whose product-list version
    #: did not change were reprocessed anyway: a changed ETag or Last-Modified refetches them.
    revalidate: bool = False
    executor: Executor | None = None
    segments: Segmenting = field(default_factory=Segmenting)
    s3_in_flight: int = 16
    s3: Any = None
    s3_parts: int = 8
    s3_part_size: int = 16 << 20

    def __post_init__(self) -> None:
        if self.in_flight < 1 or self.s3_in_flight < 1:
            raise UsageError("in_flight must be at least 1")
        if self.overwrite not in ("changed", "never", "always"):
            raise UsageError(f"overwrite must be changed, never or always, not {self.overwrite!r}")
        if isinstance(self.token_hosts, str):
            raise UsageError("token_hosts must be a collection of hosts, not one string")
        if not isinstance(self.token_hosts, tuple):  # a set or list given by a caller
            object.__setattr__(self, "token_hosts", tuple(self.token_hosts))

    def replace(self, **changes: Any) -> DownloadSettings:
        """A copy with ``changes`` applied (``dataclasses.replace``; checked again)."""
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def build(cls, recipe: Recipe, mast_url: str, *, verify: bool = False, executor: str | None = None,
              scheduler: str | None = None, insecure: bool = False, revalidate: bool = False) -> DownloadSettings:
        """The settings of a run: the recipe's ``mast`` and ``retrieve`` sections, with what the
        caller adds.

        Parameters
        ----------
        recipe : Recipe
        mast_url : str
            The server the run talks to: the MAST token may only be sent to its host.
        verify : bool
            Re-hash files already done, whatever ``retrieve.verify`` says.
        executor : {"threads", "dask"}, optional
            Where downloads run, instead of the recipe's ``retrieve.executor``.
        scheduler : str, optional
            Dask scheduler address or ``local``; implies ``executor="dask"``.
        insecure : bool
            Do not check TLS certificates.
        revalidate : bool
            ``--revalidate``: ask the server whether files already done changed (HEAD).

        Raises
        ------
        UsageError
            When ``executor`` and ``scheduler`` do not go together.
        """
        mast, retrieve = recipe.mast, recipe.retrieve
        return cls(
            in_flight=retrieve.in_flight,
            timeout=min(mast.timeout, TIMEOUT_CAP),
            policy=RetryPolicy(max_attempts=mast.retries + 1, retry_after_cap=mast.retry_after_cap),
            token_hosts=(urlsplit(mast_url).netloc,),
            verify=verify or retrieve.verify == "sha256",
            overwrite=retrieve.overwrite,
            insecure=insecure,
            revalidate=revalidate,
            executor=retrieve.executor.override(executor, scheduler),
            segments=Segmenting(retrieve.segments.min_size, retrieve.segments.size),
            s3_in_flight=retrieve.s3_in_flight,
            s3_parts=retrieve.s3_parts,
        )


#: Names :func:`settings_from` accepts besides the fields: ``workers`` is the engines' old word
#: for ``in_flight`` (downloads at once), kept so existing callers keep working.
_ALIASES = {"workers": "in_flight", "s3_workers": "s3_in_flight"}


def settings_from(settings: DownloadSettings | None, options: dict[str, Any]) -> DownloadSettings:
    """``settings`` (default: :class:`DownloadSettings()`) with keyword ``options`` applied.

    What lets ``Transfer(policy=FAST)`` stand for ``Transfer(DownloadSettings(policy=FAST))``,
    as ``httpx.Client(timeout=5)`` stands for a ``Timeout`` object.

    Raises
    ------
    TypeError
        For a name that is no setting (as a misspelt keyword argument would).
    """
    changes = {_ALIASES.get(name, name): value for name, value in options.items()}
    names = {f.name for f in dataclasses.fields(DownloadSettings)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    if "workers" in options and options["workers"] < 1:
        raise UsageError("workers must be at least 1")
    return (settings or DownloadSettings()).replace(**changes)
