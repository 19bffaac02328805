"""The sections of a recipe, one frozen pydantic model each, named after the stage they configure.

The field descriptions are the reference users read: ``mastpipe schema`` turns them into the JSON
Schema editors show as hover text (``schemas/recipe.schema.json``), and ``mastpipe schema
--markdown`` into ``docs/recipe.md``; changing one means regenerating both (tests fail until then).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mastpipe.recipe.base import Range, Scalar, _Model
from mastpipe.recipe.checks import check_column, check_criterion, layout_problem
from mastpipe.recipe.fields import OBSERVATION_FIELDS, PRODUCT_COLUMNS
from mastpipe.recipe.quantities import parse_coordinates, parse_duration, parse_radius

__all__ = ["DEFAULT_MAST_URL", "GUIDE_STAR_MARK", "MAST_URL_ENV", "Criterion", "ColumnMatch", "Executor", "Filter",
           "Mast", "Position", "Products", "Query", "Range", "Retrieve", "Segments", "State", "Unique"]

DEFAULT_MAST_URL = "https://mast.stsci.edu"
MAST_URL_ENV = "MASTPIPE_MAST_URL"
GUIDE_STAR_MARK = "_gs-"


def _names_in(names: Iterable[str]) -> dict[str, Any]:
    """JSON Schema for a mapping whose keys are ``names``: editors complete and check them."""
    return {"propertyNames": {"enum": sorted(names)}}


class Position(_Model):
    """Where on the sky: ``coordinates`` or an ``object`` name, and a ``radius`` with a unit."""

    coordinates: Union[str, list[float], None] = Field(
        None, description='ICRS position: "83.633 22.0145" (degrees), "05h34m31.9s +22d00m52s" or [ra, dec].')
    object: str | None = Field(
        None, description="An object name resolved by MAST's name resolver, e.g. \"M1\". Needs real MAST.")
    radius: str = Field("0.2 deg", description='Search radius with a unit: "0.2 deg", "5 arcmin", "30 arcsec".')

    @field_validator("coordinates", mode="before")
    @classmethod
    def _coordinates(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool):  # a boolean gets the general message
            parse_coordinates(value)
        return value

    @field_validator("radius", mode="before")
    @classmethod
    def _radius(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, bool):  # those get the general messages
            parse_radius(value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Position:
        if self.coordinates is not None and self.object is not None:
            raise ValueError("both `coordinates` and `object` are given; keep one")
        if self.coordinates is None and self.object is None:
            raise ValueError("a position needs `coordinates` or `object`")
        return self

    @property
    def radius_deg(self) -> float:
        return parse_radius(self.radius)

    @property
    def ra_dec(self) -> tuple[float, float] | None:
        return parse_coordinates(self.coordinates) if self.coordinates is not None else None


Criterion = Union[Range, list[Scalar], Scalar]


class Query(_Model):
    """One named search for observations. Criteria are ANDed; a list means "any of"."""

    criteria: dict[str, Criterion] = Field(
        ..., json_schema_extra=_names_in(OBSERVATION_FIELDS), description=(
            "Observation fields and the values to match (MAST's CAOM field names, e.g. obs_collection, "
            "proposal_id, instrument_name, filters). A scalar matches exactly (case-insensitive); a list "
            "matches any of its values; `*` is a wildcard (\"NIRCAM*\"); continuous fields (s_ra, s_dec, "
            "t_min, t_max, t_obs_release, t_exptime, em_min, em_max) take {min, max}, and dates may be ISO."))
    position: Position | None = Field(None, description="Restrict the search to a cone on the sky.")

    @field_validator("criteria", mode="before")
    @classmethod
    def _criteria(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if not value:
            raise ValueError("criteria must name at least one field (MAST refuses searches without any)")
        converted = {}
        for name, criterion in value.items():
            converted[name], problem = check_criterion(name, criterion)
            if problem:
                raise ValueError(problem[1])
        return converted

    @property
    def names_collection(self) -> bool:
        return "obs_collection" in self.criteria


class Mast(_Model):
    """How to talk to MAST: where, how patiently and how politely."""

    url: str = Field(DEFAULT_MAST_URL, description=(
        f"MAST's base URL. Overridden by the environment variable {MAST_URL_ENV} and by --mast-url "
        "(precedence: command line, environment, recipe, default)."))
    timeout: float = Field(600.0, gt=0, le=3600, description="Seconds to wait for one request before retrying it.")
    page_size: int = Field(50_000, ge=1, le=50_000, description="Rows per page of query results (MAST's maximum is 50000).")
    max_in_flight: int = Field(4, ge=1, le=16, description=(
        "Most requests to MAST's search API (queries and product lists) in flight at once. Keep it "
        "small: a parallel client once overloaded MAST and was withdrawn. Downloads have their own "
        "limit, retrieve.in_flight."))
    retries: int = Field(5, ge=0, le=50, description="Retries per request after timeouts, connection errors, 429 and 5xx.")
    retry_after_cap: float = Field(300.0, ge=0, le=86_400, description=(
        "Longest Retry-After (seconds) honoured; a server asking for more fails the request at once."))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", value):
        raise ValueError(f"{value!r} is not an http(s) URL like https://mast.stsci.edu")
    return value.rstrip("/")


class Products(_Model):
    """How product lists are fetched for the observations found."""

    batch_size: int = Field(5, ge=1, le=500, description=(
        "Observations per product-list request. MAST times out on large JWST programs when asked for "
        "many at once; a few at a time is its own advice."))
    in_flight: int | None = Field(None, ge=1, le=16, description="Product-list requests in flight (default: mast.max_in_flight).")


class Unique(_Model):
    """Which column makes a product unique (the same file is listed under several observations)."""

    key: Literal["productFilename", "dataURI"] = Field(
        "productFilename", description="Deduplicate on productFilename (the seed tutorial's choice) or dataURI.")


ColumnMatch = Union[Range, list[Scalar], Scalar]


class Filter(_Model):
    """Which products to keep. Every rule given must hold (AND); within a list, any value (OR).

    Rules on the file name (productFilename) are substring tests, case-sensitive, as in the seed
    tutorial's ``product_filter``. A value in ``columns`` starting with ``!`` excludes that value;
    several exclusions all apply; a ``{min, max}`` keeps numeric values inside the range.
    """

    contains: list[str] = Field(default_factory=list, description=(
        "Keep products whose file name contains any of these (the seed's prodList), e.g. [_uncal.fits]. "
        "Empty: no constraint."))
    endswith: list[str] = Field(default_factory=list, description="Keep products whose file name ends with any of these, e.g. [_cal.fits].")
    exclude: list[str] = Field(default_factory=list, description="Drop products whose file name contains any of these.")
    guide_stars: Literal["omit", "keep", "only"] = Field("omit", description=(
        f"Guide-star files (names containing {GUIDE_STAR_MARK!r}): omit them (default, as the seed), keep them, or keep only them."))
    mrp_only: bool = Field(False, description="Keep only MAST's Minimum Recommended Products.")
    columns: dict[str, ColumnMatch] = Field(default_factory=dict, json_schema_extra=_names_in(PRODUCT_COLUMNS), description=(
        "Exact matches on product columns, e.g. productSubGroupDescription: UNCAL, productType: [SCIENCE], "
        "calib_level: [2, 3], dataRights: \"!EXCLUSIVE_ACCESS\", extension-like tests belong in endswith; "
        "numeric columns (size, calib_level) also take {min, max}."))

    @field_validator("contains", "endswith", "exclude")
    @classmethod
    def _non_empty_strings(cls, values: list[str]) -> list[str]:
        if any(not v for v in values):
            raise ValueError("an empty string would match every file name")
        return values

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, match in value.items():
                problem = check_column(name, match)
                if problem:
                    raise ValueError(problem[1])
        return value


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
    destination: str = Field("data", description="Directory files go under; relative paths are relative to the recipe file.")
    layout: str = Field("astroquery", description=(
        "astroquery: mastDownload/<obs_collection>/<obs_id>/<file>, as astroquery writes it (so earlier "
        "manual downloads are adopted); flat: <file>; or a template of product columns such as "
        "\"{obs_collection}/{proposal_id}/{productFilename}\"."))
    in_flight: int = Field(4, ge=1, le=16, description=(
        "Downloads in flight at once (requests: the extra connections of a file fetched in segments count)."))
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

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        if value in ("astroquery", "flat"):
            return value
        problem = layout_problem(value)
        if problem:
            raise PydanticCustomError("recipe_value", "{message}", {"message": problem[0], "hint": problem[1]})
        return value


class State(_Model):
    """Where checkpoints, the ledger and the lock live, and how long query results stay fresh."""

    directory: str | None = Field(None, description=(
        "State directory (default .mastpipe/<name> beside the recipe); --state-dir overrides it."))
    query_max_age: str | None = Field(None, description=(
        "Re-run the query stage when its results are older than this, e.g. \"1d\" or \"12h\" (scheduled reruns)."))

    @field_validator("query_max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value
