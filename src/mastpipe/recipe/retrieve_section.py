"""The recipe's ``retrieve`` section: what becomes of the products kept (download, curl script or
manifest), where files go, and how downloads run (:class:`Executor`, :class:`Segments`).

Its field descriptions are reference text, as in :mod:`mastpipe.recipe.sections`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mastpipe.recipe.base import _Model
from mastpipe.recipe.checks import check_url, layout_problem

__all__ = ["Executor", "Retrieve", "Segments"]


class Executor(_Model):
    """Where downloads run: local threads of the mastpipe process, or a Dask cluster.

    With Dask the mastpipe process keeps the ledger, the lock and the checkpoints and decides what
    each file needs; workers fetch one file per task into a destination that every worker mounts
    at the same path, and ``in_flight`` bounds the downloads of the whole cluster. Needs the
    optional extra ``mastpipe[dask]``.
    """

    kind: Literal["threads", "dask"] = Field("threads", description=(
        "threads: download from this process (default); dask: hand each file to a Dask cluster's workers."))
    scheduler: str | None = Field(None, pattern=r"^(local|(tcp|tls|ws|wss|ucx)://\S+)$", description=(
        "dask only: the scheduler's address, e.g. tcp://scheduler:8786, or local to start a cluster of "
        "worker processes on this machine for the run; --scheduler overrides it."))
    workers: int | None = Field(None, ge=1, le=256, description=(
        "dask with scheduler local only: worker processes to start (default: retrieve.in_flight)."))

    @model_validator(mode="after")
    def _consistent(self) -> Executor:
        if self.kind == "threads" and (self.scheduler is not None or self.workers is not None):
            raise ValueError("scheduler and workers only apply to kind: dask")
        if self.kind == "dask" and self.scheduler is None:
            raise ValueError("kind: dask needs a scheduler: an address such as tcp://host:8786, or local")
        if self.workers is not None and self.scheduler != "local":
            raise ValueError("workers only applies to scheduler: local (a running cluster has its own workers)")
        return self

    def override(self, kind: str | None = None, scheduler: str | None = None) -> Executor:
        """This executor with the command line's ``--executor`` / ``--scheduler`` applied.

        Parameters
        ----------
        kind : {"threads", "dask"}, optional
            ``--executor``; a ``scheduler`` alone implies ``dask``.
        scheduler : str, optional
            ``--scheduler``: replaces the recipe's address (``workers`` is kept only for
            ``local``).

        Returns
        -------
        Executor

        Raises
        ------
        UsageError
            When the combination is invalid (``dask`` without any scheduler, ``threads`` with one).
        """
        from mastpipe.errors import UsageError, literal

        if kind is None and scheduler is None:
            return self
        kind = kind or ("dask" if scheduler else self.kind)
        if kind == "threads":
            if scheduler:
                raise UsageError("{scheduler} applies to {executor} dask, not threads",
                                 parameters=["scheduler", "executor"])
            return Executor()
        scheduler = scheduler or self.scheduler
        if scheduler is None:
            raise UsageError("{executor} dask needs {scheduler} (an address such as tcp://host:8786, or local) "
                             "when the recipe's retrieve.executor names none", parameters=["executor", "scheduler"])
        workers = self.workers if scheduler == "local" else None
        try:
            return Executor(kind="dask", scheduler=scheduler, workers=workers)
        except ValidationError:
            raise UsageError(f"{{scheduler}} {literal(repr(scheduler))} is not a Dask scheduler address",
                             hint="give tcp://host:8786 (or tls://, ws://, wss://, ucx://), or local",
                             parameters=["scheduler"]) from None


class Segments(_Model):
    """Large files fetched over several connections at once, in ranged segments.

    A link that caps each connection leaves one download at a fraction of what the machine can
    take (MAST over a long path, a shaping proxy). A file of at least ``min_size`` bytes is
    then fetched as segments of ``size`` bytes into one preallocated temporary, like aria2c
    ``-x`` or rclone's multi-thread streams: the first connection alone at first, then the
    ``in_flight`` slots no other file is waiting for, kept only if they measurably raise the
    throughput. Extra connections count in ``in_flight``. A server that ignores ``Range`` gets
    one stream. The temporary's ``.part.json`` records the segments complete, so an
    interrupted run fetches only the others; the whole file is size- and sha256-verified as
    any other. Not used with the Dask executor (each worker fetches one file on one connection).
    """

    min_size: int | None = Field(256_000_000, ge=1, description=(
        "Files of at least this many bytes are fetched in segments (default 256 MB); null: never."))
    size: int = Field(32 << 20, ge=1 << 16, description=(
        "Bytes per segment at most (default 32 MiB): the most a connection refetches after an interruption. "
        "Smaller for a file that would get fewer than 8 segments per connection, so the last ones do not "
        "finish alone for long."))


class Retrieve(_Model):
    """What to do with the products kept, and where files go."""

    mode: Literal["download", "curl", "manifest"] = Field("download", description=(
        "download: mastpipe fetches, verifies and resumes the files itself; curl: write a bash script of "
        "curl commands to run later or elsewhere; manifest: only list URLs, paths and sizes."))
    source: Literal["mast", "cloud", "auto"] = Field("mast", description=(
        "Where files come from. mast (default): MAST's download service, as astroquery without cloud access; "
        "auto: MAST's public copy on AWS S3 (bucket stpubdata) where one exists, MAST otherwise; cloud: only "
        "the S3 copies, products without one are listed as skipped (astroquery's cloud_only). Exclusive-access "
        "products always come from MAST with the token. cloud and auto need mastpipe[cloud] (boto3); "
        "--source overrides this field."))
    destination: str = Field("data", description="Directory files go under; relative paths are relative to the recipe file.")
    layout: str = Field("astroquery", description=(
        "astroquery: mastDownload/<obs_collection>/<obs_id>/<file>, as astroquery writes it (so earlier "
        "manual downloads are adopted); flat: <file>; or a template of product columns such as "
        "\"{obs_collection}/{proposal_id}/{productFilename}\"."))
    in_flight: int = Field(4, ge=1, le=16, description=(
        "Downloads from MAST in flight at once (requests: the extra connections of a file fetched in segments "
        "count; with a Dask executor: across the cluster)."))
    s3_in_flight: int = Field(16, ge=1, le=256, description=(
        "source cloud or auto: downloads from S3 in flight at once, apart from in_flight (S3 has no per-client "
        "limit like MAST's download service; with a Dask executor: across the cluster)."))
    s3_parts: int = Field(8, ge=1, le=64, description=(
        "source cloud or auto: a cloud copy larger than two 16 MiB parts is fetched as parallel ranged parts, "
        "this many at a time, into one temporary, resumable part by part; 1: one stream (resumable with Range)."))
    s3_endpoint: str | None = Field(None, description=(
        "source cloud or auto: S3 endpoint URL of an S3-compatible mirror (default: AWS, region us-east-1); "
        "the environment variable MASTPIPE_S3_ENDPOINT overrides it. curl scripts then fetch "
        "<endpoint>/stpubdata/<key> instead of https://stpubdata.s3.amazonaws.com/<key>."))
    verify: Literal["size", "sha256"] = Field("size", description=(
        "How a rerun checks files it already has: size (fast, no reading) or sha256 (re-hash every file "
        "and repair mismatches). New downloads are always size-checked and hashed."))
    overwrite: Literal["never", "changed", "always"] = Field("changed", description=(
        "Files found at the destination that mastpipe did not record: never (keep; a size mismatch fails that "
        "file), changed (keep when the size matches, refetch otherwise), always (refetch)."))
    executor: Executor = Field(default_factory=Executor, description=(
        "download mode: where the downloads run, local threads (default) or a Dask cluster."))
    segments: Segments = Field(default_factory=Segments, description=(
        "download mode: when a large file is fetched over several connections in ranged segments."))
    script: str | None = Field(None, description="curl mode: where to write the script (default <destination>/mastpipe-download.sh).")
    manifest: str | None = Field(None, description="Where to write the manifest (default <destination>/manifest.ecsv, plus .json).")
    manifest_paths: Literal["relative", "absolute"] = Field("relative", description=(
        "How the manifest names files: relative to the manifest's own directory (it stays right when the "
        "directory is moved or restored elsewhere, e.g. from a CI cache), or absolute."))

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        if value in ("astroquery", "flat"):
            return value
        problem = layout_problem(value)
        if problem:
            raise PydanticCustomError("recipe_value", "{message}", {"message": problem[0], "hint": problem[1]})
        return value
