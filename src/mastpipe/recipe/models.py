"""The recipe language: pydantic models of a recipe, and :func:`load_recipe`.

A recipe is one YAML document with these sections, each named after the stage it configures::

    version: 1
    name: nircam-1073
    mast:      {url, timeout, page_size, max_in_flight, retries, retry_after_cap}
    query:     {<name>: {criteria: {...}, position: {...}}, ...}
    products:  {batch_size, in_flight}
    unique:    {key}
    filter:    {contains, endswith, exclude, guide_stars, mrp_only, columns}
    retrieve:  {mode, destination, layout, in_flight, verify, overwrite, executor, script, manifest,
                manifest_paths}
    state:     {directory, query_max_age, ledger_journal}

Models are immutable and reject unknown keys. Loading goes through :mod:`mastpipe.recipe.yamlload` and
:mod:`mastpipe.recipe.problems`, so every error names the file, line, column and field, and says
what to do. The field descriptions
below are the reference users read: ``mastpipe schema`` turns them into the JSON Schema that
editors show as hover text (``schemas/recipe.schema.json``), and ``mastpipe schema --markdown``
into ``docs/recipe.md``; changing one means regenerating both (tests fail until then).
"""

from __future__ import annotations

import logging
import os
import re
import string
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, WithJsonSchema, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from mastpipe.errors import Problem, RecipeError
from mastpipe.recipe.fields import (BOOLEAN_FIELDS, CONTINUOUS_FIELDS, DATE_FIELDS, OBSERVATION_FIELDS, PRODUCT_COLUMNS,
                     suggest)
from mastpipe.stages.retrieve.paths import component_problem
from mastpipe.recipe.quantities import parse_coordinates, parse_duration, parse_radius, to_mjd
from mastpipe.recipe.problems import (_model_for, boolean_problem, error_message, number_problems, problems_from, scan,
                              shown)
from mastpipe.recipe.yamlload import Located, dotted, load_yaml

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAST_URL = "https://mast.stsci.edu"
MAST_URL_ENV = "MASTPIPE_MAST_URL"
GUIDE_STAR_MARK = "_gs-"


class FrozenList(list):  # type: ignore[type-arg]
    """A list that refuses changes: recipes are immutable all the way down, and hashable.

    It is a ``list`` (equal to one, serialised as one), so code reading a recipe sees no difference.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a recipe is immutable; build a new one with model_copy(update=...)")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __reduce__(self) -> tuple[Any, ...]:  # copy and pickle rebuild it whole
        return (type(self), (list(self),))


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses changes (see :class:`FrozenList`)."""

    _refuse = FrozenList._refuse
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _frozen(value: Any) -> Any:
    if isinstance(value, list) and not isinstance(value, FrozenList):
        return FrozenList(_frozen(item) for item in value)
    if isinstance(value, dict) and not isinstance(value, FrozenDict):
        return FrozenDict((key, _frozen(item)) for key, item in value.items())
    return value


_NUMBERS = (int, float, Optional[int], Optional[float])


def _types(annotation: Any) -> set[Any]:
    """The types a field admits as a value, looking through Optional, Union and Annotated
    (``list[str]`` stays one type; Literal values are not types)."""
    if get_origin(annotation) in (Union, UnionType, Annotated):
        args = get_args(annotation)[:1] if get_origin(annotation) is Annotated else get_args(annotation)
        return set().union(*(_types(arg) for arg in args))
    return {annotation}


def _takes_text(types: set[Any]) -> bool:
    return str in types and bool not in types


def _booleans_for_text(annotation: Any, value: Any) -> list[int | None]:
    """Where ``value`` holds a boolean the field takes as text: [None] for the value itself,
    list indexes for items of a list of text."""
    types = _types(annotation)
    if isinstance(value, bool):
        return [None] if _takes_text(types) else []
    if isinstance(value, list):
        items = set().union(*(_types(get_args(t)[0]) for t in types if get_origin(t) is list and get_args(t)))
        if _takes_text(items):
            return [i for i, item in enumerate(value) if isinstance(item, bool)]
    return []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_unless_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        """A boolean is only ever meant for a true/false field.

        pydantic reads true as 1 for a number, and YAML 1.1 reads unquoted yes/no/on/off as
        booleans, so ``target_name: NO`` or ``contains: [off]`` reach a text field as False. This one
        rule covers every field of every model; criteria and filter columns, whose values may be
        text or numbers, are checked by :func:`check_criterion` and :func:`check_column`.
        """
        if not info.field_name:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in _NUMBERS:
            raise ValueError(f"must be a number, not {str(value).lower()}")
        found = _booleans_for_text(annotation, value)
        if found:
            raise PydanticCustomError("read_as_boolean", "{value} is a boolean, not text",
                                      {"value": str(value if found == [None] else value[found[0]]).lower()})
        return value

    @model_validator(mode="after")
    def _freeze(self) -> Any:
        """``frozen=True`` stops assignment; this also stops changes to the lists and dicts inside."""
        for name in type(self).model_fields:
            value = self.__dict__.get(name)
            if isinstance(value, (list, dict)):
                object.__setattr__(self, name, _frozen(value))
        return self


Scalar = Union[str, int, float, bool]


def check_criterion(name: str, criterion: Any) -> tuple[Any, tuple[str, str, str | None] | None]:
    """Check one query criterion; return it (dates converted to MJD) and a problem or None.

    A problem is ``(where, message, hint)`` with ``where`` "key" when the field name is wrong and
    "value" when its value is.
    """
    if name not in OBSERVATION_FIELDS:
        return criterion, ("key", f"unknown observation field {name!r}",
                           suggest(name, OBSERVATION_FIELDS) or _FIELDS_HINT)
    shape = _shape_problem(name, criterion, "field")
    if shape:
        return criterion, shape
    if name not in BOOLEAN_FIELDS and _booleans(criterion):
        return criterion, ("value", f"{name}: {_booleans(criterion)[0][1]} is a boolean, not text", _QUOTE_HINT)
    if name in CONTINUOUS_FIELDS:
        if not isinstance(criterion, dict):
            return criterion, ("value", f"{name} is continuous: give a range {{min: ..., max: ...}}, not {criterion!r}",
                               f"e.g. {name}: {{min: 1, max: 2}}")
        if name in DATE_FIELDS:
            try:
                criterion = {k: (to_mjd(v) if k in ("min", "max") and v is not None else v)
                             for k, v in criterion.items()}
            except ValueError as exc:
                bad = next(k for k, v in criterion.items() if k in ("min", "max") and _not_a_date(v))
                return criterion, ("value", f"{bad}: {exc}", "dates are taken as UTC and compared as MJD")
    elif isinstance(criterion, dict):
        return criterion, ("value", f"{name} is not a continuous field, so it takes a value or a list, not a range",
                           "ranges work only on " + ", ".join(sorted(CONTINUOUS_FIELDS)))
    elif isinstance(criterion, list) and not criterion:
        return criterion, ("value", f"{name}: an empty list matches nothing", "remove the field or give values")
    return criterion, _range_problem(criterion)


_QUOTE_HINT = "quote it if you mean the text; YAML reads unquoted yes/no, on/off and true/false as booleans"


def _booleans(value: Any) -> list[tuple[tuple[int, ...], str]]:
    """The booleans in a criterion or column match: ``[((), "false")]`` or ``[((1,), "true"), ...]``."""
    if isinstance(value, bool):
        return [((), str(value).lower())]
    if isinstance(value, list):
        return [((i,), str(item).lower()) for i, item in enumerate(value) if isinstance(item, bool)]
    return []


def _not_a_date(value: Any) -> bool:
    try:
        to_mjd(value)
    except ValueError:
        return value is not None
    return False


_FIELDS_HINT = "criteria take MAST's CAOM observation fields, e.g. obs_collection, proposal_id, instrument_name"


def _shape_problem(name: str, value: Any, what: str) -> tuple[str, str, str | None] | None:
    """A criterion or column match is a scalar, a list of scalars or a {min, max} mapping."""
    if value is None:
        return ("value", f"{name} has no value", f"give a value or a list of values, or remove the {what}")
    if isinstance(value, list):
        for item in value:
            if item is None or isinstance(item, (list, dict)):
                shown = "nothing (null)" if item is None else ("a list" if isinstance(item, list) else "a mapping")
                return ("value", f"{name}: a list holds values (text or numbers), not {shown}",
                        f"write {name}: [a, b] for any of several values")
    return None


def _range_problem(value: Any) -> tuple[str, str, str | None] | None:
    if not isinstance(value, dict):
        return None
    try:
        Range.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            return ("value", f"a range takes only min and max, not {where!r}", "write {min: ..., max: ...}")
        message = error_message(first)
        return ("value", f"{where}: {message}" if where else message,
                "a range is {min: ..., max: ...}; either end may be left out")
    return None


_COLUMN_KINDS = {"text": "text", "number": "a number"}


def check_column(name: str, match: Any) -> tuple[str, str, str | None] | None:
    """Check one ``filter.columns`` entry; return ``(where, message, hint)`` or None."""
    if name not in PRODUCT_COLUMNS:
        return ("key", f"unknown product column {name!r}",
                suggest(name, PRODUCT_COLUMNS) or "columns are " + ", ".join(sorted(PRODUCT_COLUMNS)))
    shape = _shape_problem(name, match, "column")
    if shape:
        return shape
    if _booleans(match):  # no product column holds true/false
        return ("value", f"{name}: {_booleans(match)[0][1]} is a boolean, not {_COLUMN_KINDS[PRODUCT_COLUMNS[name]]}",
                _QUOTE_HINT if PRODUCT_COLUMNS[name] == "text" else "write a number here")
    if isinstance(match, dict) and PRODUCT_COLUMNS[name] != "number":
        return ("value", f"{name} is a text column, so it takes a value or a list, not a range",
                "ranges work only on numeric columns: size, calib_level")
    if isinstance(match, list) and not match:
        return ("value", f"{name}: an empty list matches nothing", "remove the column or give values")
    return _range_problem(match)


#: A range bound is a number once loaded; editors must also accept the ISO dates date fields take
#: (they are converted to MJD before the model sees them).
_Bound = Annotated[Optional[float], WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
               {"type": "null"}]})]


class Range(_Model):
    """An inclusive range ``{min, max}``; either end may be left out."""

    min: _Bound = Field(None, description=(
        "Smallest value kept (inclusive). On t_min, t_max and t_obs_release: an MJD or an ISO date (UTC)."))
    max: _Bound = Field(None, description=(
        "Largest value kept (inclusive). On t_min, t_max and t_obs_release: an MJD or an ISO date (UTC)."))

    @field_validator("min", "max", mode="before")
    @classmethod
    def _a_real_number(cls, value: Any) -> Any:
        if isinstance(value, float) and value != value:
            raise ValueError("must be a number, not .nan (nothing would match)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g}), so nothing matches")
        return self


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
        ..., json_schema_extra={"propertyNames": {"enum": sorted(OBSERVATION_FIELDS)}}, description=(
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
    columns: dict[str, ColumnMatch] = Field(default_factory=dict, json_schema_extra={
        "propertyNames": {"enum": sorted(PRODUCT_COLUMNS)}}, description=(
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
        from mastpipe.errors import UsageError

        if kind is None and scheduler is None:
            return self
        kind = kind or ("dask" if scheduler else self.kind)
        if kind == "threads":
            if scheduler:
                raise UsageError("--scheduler applies to --executor dask, not threads")
            return Executor()
        scheduler = scheduler or self.scheduler
        if scheduler is None:
            raise UsageError("--executor dask needs --scheduler (an address such as tcp://host:8786, or local) "
                             "when the recipe's retrieve.executor names none")
        workers = self.workers if scheduler == "local" else None
        try:
            return Executor(kind="dask", scheduler=scheduler, workers=workers)
        except ValidationError:
            raise UsageError(f"--scheduler {scheduler!r} is not a Dask scheduler address",
                             hint="give tcp://host:8786 (or tls://, ws://, wss://, ucx://), or local") from None


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
    in_flight: int = Field(4, ge=1, le=16, description="Downloads in flight at once.")
    verify: Literal["size", "sha256"] = Field("size", description=(
        "How a rerun checks files it already has: size (fast, no reading) or sha256 (re-hash every file "
        "and repair mismatches). New downloads are always size-checked and hashed."))
    overwrite: Literal["never", "changed", "always"] = Field("changed", description=(
        "Files found at the destination that mastpipe did not record: never (keep; a size mismatch fails that "
        "file), changed (keep when the size matches, refetch otherwise), always (refetch)."))
    executor: Executor = Field(default_factory=Executor, description=(
        "download mode: where the downloads run, local threads (default) or a Dask cluster."))
    script: str | None = Field(None, description="curl mode: where to write the script (default <destination>/mastpipe-download.sh).")
    manifest: str | None = Field(None, description="Where to write the manifest (default <destination>/manifest.ecsv, plus .json).")
    manifest_paths: Literal["relative", "absolute"] = Field("relative", description=(
        "How the manifest names files: relative to the manifest's own directory (it stays right when the "
        "directory is moved or restored elsewhere, e.g. from a CI cache), or absolute."))

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        if value in ("astroquery", "flat"):
            return value
        problem = layout_problem(value)
        if problem:
            raise PydanticCustomError("recipe_value", "{message}", {"message": problem[0], "hint": problem[1]})
        return value


_PLACEHOLDERS = ("placeholders are product columns in braces: " + ", ".join(f"{{{c}}}" for c in sorted(PRODUCT_COLUMNS))
                 + "; write {{ or }} for a literal brace")


def layout_problem(template: str) -> tuple[str, str | None] | None:
    """What is wrong with a ``retrieve.layout`` template, as ``(message, hint)``, or None.

    The template is read as the download code reads it (:meth:`string.Formatter.parse`), so
    whatever passes here also builds paths; a hint of None means the field's own description.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return _brace_problem(template), _PLACEHOLDERS
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name:
            return "an empty placeholder {} in layout", _PLACEHOLDERS
        if conversion or spec or not name.isidentifier() and re.search(r"[.\[]", name):
            plain = re.split(r"[.\[]", name)[0]
            return (f"placeholder {written} in layout: a placeholder is a plain column name, without "
                    "formatting (:...), conversion (!...), attributes or indexes",
                    f"write {{{plain}}}" if plain in PRODUCT_COLUMNS else _PLACEHOLDERS)
        if name not in PRODUCT_COLUMNS:
            return f"unknown product column {{{name}}} in layout", suggest(name, PRODUCT_COLUMNS) or _PLACEHOLDERS
        names.append(name)
    if "productFilename" not in names:
        return "a layout template must contain {productFilename}, e.g. \"{obs_collection}/{productFilename}\"", None
    parts = re.sub(r"{[^{}]*}", "x", template).split("/")
    if template.startswith("/") or ".." in parts:
        return "a layout template is relative to the destination and may not contain `..`", None
    if "" in parts or "." in parts:
        return "a layout template has an empty directory name (`//`, `/.`, or a `/` at the end)", None
    for part in template.format(**{name: "x" for name in names}).split("/"):
        why = component_problem(part)
        if why is not None:
            return f"a layout template's path component {part!r} cannot be a file or directory name: {why}", None
    return None


def _brace_problem(template: str) -> str:
    """Which brace of a template that :meth:`string.Formatter.parse` refuses is unbalanced."""
    i = 0
    while i < len(template):
        if template[i:i + 2] in ("{{", "}}"):
            i += 2
            continue
        if template[i] == "}":
            return f"a }} at character {i + 1} of the layout closes no placeholder"
        if template[i] == "{":
            end = template.find("}", i)
            start = template.find("{", i + 1)
            if end < 0 or 0 <= start < end:
                opened = template[i:start if 0 <= start < end else len(template)]
                return f"the placeholder {opened!r} in layout is not closed: a }} is missing"
            i = end
        i += 1
    return "the braces in the layout do not balance"  # pragma: no cover - parse refused it for a reason


class State(_Model):
    """Where checkpoints, the ledger and the lock live, and how long query results stay fresh."""

    directory: str | None = Field(None, description=(
        "State directory (default .mastpipe/<name> beside the recipe); --state-dir overrides it."))
    query_max_age: str | None = Field(None, description=(
        "Re-run the query stage when its results are older than this, e.g. \"1d\" or \"12h\" (scheduled reruns)."))
    ledger_journal: Literal["auto", "wal", "delete"] = Field("auto", description=(
        "SQLite journal mode of the download ledger. auto: WAL where the filesystem supports it, else "
        "delete (rollback journal), which is safe on NFS; wal; delete (choose it for a state directory on "
        "NFS or another network filesystem, where WAL's shared memory is unsafe)."))

    @field_validator("query_max_age")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class Recipe(_Model):
    """A mastpipe recipe: which observations, which of their products, and where they go."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="mastpipe recipe",
                              json_schema_extra={"$id": "https://mastpipe.invalid/schemas/recipe.schema.json"})

    version: Literal[1] = Field(..., description="Recipe language version; this is version 1.")
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description=(
        "Short identifier (letters, digits, . _ -); names the state directory."))
    description: str = Field("", description="What this recipe fetches and why, for the people who review it.")
    mast: Mast = Field(default_factory=Mast, description="Server and politeness settings.")
    query: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")], Query] = Field(
        ..., min_length=1, json_schema_extra={"additionalProperties": False}, description="Named searches for observations; their results are united.")
    products: Products = Field(default_factory=Products, description="How product lists are fetched.")
    unique: Unique = Field(default_factory=Unique, description="How duplicate products are recognised.")
    filter: Filter = Field(default_factory=Filter, description="Which products are kept.")
    retrieve: Retrieve = Field(default_factory=Retrieve, description="What happens to the products kept.")
    state: State = Field(default_factory=State, description="Checkpoints and scheduled reruns.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        if isinstance(value, (bool, str)):  # true == 1 in Python, and "1" is text
            raise ValueError(f"the version is the number 1, not {shown(value)}")
        return value

    @model_validator(mode="after")
    def _in_flight(self) -> Recipe:
        if self.products.in_flight is not None and self.products.in_flight > self.mast.max_in_flight:
            raise PydanticCustomError(
                "in_flight_exceeds",
                "{in_flight} product-list requests in flight exceed mast.max_in_flight ({limit})",
                {"in_flight": self.products.in_flight, "limit": self.mast.max_in_flight})
        return self

    def warnings(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Things that are valid but probably not what the author wants, as (path, message, hint)."""
        found = []
        for name, query in self.query.items():
            if not query.names_collection:
                found.append((("query", name, "criteria"),
                              "no obs_collection: naming the mission (e.g. JWST) makes MAST's search much faster",
                              "add e.g. `obs_collection: JWST` (or HST, TESS, ...) to the criteria"))
        retrieve = self.retrieve
        given = retrieve.model_fields_set  # written in the recipe, not defaults
        if "script" in given and retrieve.script is not None and retrieve.mode != "curl":
            found.append((("retrieve", "script"), f"retrieve.script has no effect with mode {retrieve.mode}: "
                          "only curl mode writes a script", "remove it, or set `mode: curl`"))
        if retrieve.mode != "download":
            for key in ("in_flight", "verify", "overwrite", "executor"):
                if key in given:  # even at its default value: the author expects it to matter
                    found.append((("retrieve", key), f"retrieve.{key} has no effect with mode {retrieve.mode}: "
                                  "only download mode fetches files itself", "remove it, or set `mode: download`"))
        return found


# --------------------------------------------------------------------------------------------
# Loading


def parse_recipe(located: Located, environ: dict[str, str] | None = None) -> Recipe:
    """Validate already-loaded YAML into a :class:`Recipe` (see :func:`load_recipe`).

    Every problem is collected (secrets, unset variables, unknown keys, wrong values) and raised
    together in one :class:`RecipeError`, sorted by position.
    """
    env = dict(os.environ) if environ is None else environ
    if not isinstance(located.data, dict):
        kind = {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false",
                type(None): "nothing (null)"}.get(type(located.data), type(located.data).__name__)
        line, column = located.where(())
        raise RecipeError([Problem(located.file, line or 1, column or 1, "<recipe>",
                                   f"a recipe is a mapping of sections, not {kind}",
                                   "start with `version: 1` and `name: ...` at the top level")])
    data, problems = scan(located, env)
    numbers = number_problems(located, _number_place)
    problems += numbers
    scanned = tuple(p.field for p in problems)
    named, flagged = _check_named_entries(data, located, {p.field for p in numbers})
    problems += [p for p in named if p.field not in scanned]  # one problem per place: the secret first
    skip = scanned + flagged
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += [p for p in problems_from(exc, located, data, Recipe)
                     if not any(p.field == f or p.field.startswith(f + ".") for f in skip)]
    if problems:
        raise RecipeError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0, p.field)))
    return recipe


def _check_named_entries(data: dict[str, Any], located: Located,
                         misread: frozenset[str] | set[str] = frozenset()) -> tuple[list[Problem], tuple[str, ...]]:
    """Check criteria and filter columns one by one, so each error points at its own key.

    The models check the same things, but pydantic can only report a dict's first bad entry and
    only at the dict itself; here every bad entry is reported where it stands. An entry holding a
    number YAML misread (``misread``, dotted paths already reported) is not checked again.
    """
    problems: list[Problem] = []
    flagged: list[str] = []
    entries: list[tuple[tuple[Any, ...], Any, Any]] = []
    queries = data.get("query")
    if isinstance(queries, dict):
        for qname, query in queries.items():
            if isinstance(query, dict) and isinstance(query.get("criteria"), dict):
                entries.append((("query", qname, "criteria"), query["criteria"], lambda n, v: check_criterion(n, v)[1]))
    filt = data.get("filter")
    if isinstance(filt, dict) and isinstance(filt.get("columns"), dict):
        entries.append((("filter", "columns"), filt["columns"], check_column))
    for path, mapping, check in entries:
        columns = path == ("filter", "columns")
        for name, value in mapping.items():
            entry = dotted(path + (name,))
            if any(m == entry or m.startswith((entry + ".", entry + "[")) for m in misread):
                flagged.append(dotted(path))
                continue
            if name in (PRODUCT_COLUMNS if columns else OBSERVATION_FIELDS) and _booleans(value) and (
                    columns or name not in BOOLEAN_FIELDS):  # each boolean where it stands, as written
                expected = _COLUMN_KINDS[PRODUCT_COLUMNS[name]] if columns else "text"
                problems += [boolean_problem(located, path + (name,) + at, value if not at else value[at[0]], expected)
                             for at, _ in _booleans(value)]
                flagged.append(dotted(path))
                continue
            problem = check(name, value)
            if problem:
                where, message, hint = problem
                problems.append(located.problem(path + (name,), message, hint, key=where == "key"))
                flagged.append(dotted(path))
    return problems, tuple(flagged)


def _number_place(path: tuple[Any, ...]) -> tuple[bool, bool] | None:
    """What the field at ``path`` takes, ``(text, numbers)``, for :func:`number_problems`;
    None where another check refuses the place itself (unknown keys and fields)."""
    if len(path) >= 4 and path[0] == "query" and path[2] == "criteria":
        field, rest = path[3], path[4:]
        known, text = field in OBSERVATION_FIELDS, field not in CONTINUOUS_FIELDS
    elif len(path) >= 3 and path[:2] == ("filter", "columns"):
        field, rest = path[2], path[3:]
        known, text = field in PRODUCT_COLUMNS, PRODUCT_COLUMNS.get(str(field)) == "text"
    else:
        names = tuple(part for part in path if not isinstance(part, int))
        parent = _model_for(Recipe, names[:-1]) if names else None
        info = parent.model_fields.get(str(names[-1])) if parent else None
        if info is None:
            return None
        types = _types(info.annotation)
        if isinstance(path[-1], int):  # an item of a list
            types = set().union(*(_types(get_args(t)[0]) for t in types if get_origin(t) is list and get_args(t)))
        numbers = any(t in (int, float) or get_origin(t) is Literal and any(
            isinstance(a, int) and not isinstance(a, bool) for a in get_args(t)) for t in types)
        text = str in types
        return (text, numbers) if text or numbers else None
    if not known:
        return None
    if rest and rest[0] in ("min", "max"):  # a range bound
        return False, True
    return text, True


def warning_problems(recipe: Recipe, located: Located) -> list[Problem]:
    """:meth:`Recipe.warnings` located in the file, as Problems whose message starts "warning:"."""
    return [located.problem(where, f"warning: {message}", hint, key=True) for where, message, hint in recipe.warnings()]


def load_recipe(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Recipe:
    """Load and validate a recipe file.

    Parameters
    ----------
    path : path-like
        The YAML recipe.
    environ : dict, optional
        Variables for ``${VAR}`` interpolation (default: the process environment).

    Returns
    -------
    Recipe
        The validated, immutable recipe.

    Raises
    ------
    RecipeError
        With every problem found, each located by file, line, column and field path.

    Examples
    --------
    >>> recipe = load_recipe("pipelines/jwst-1073-nircam-uncal.yaml")  # doctest: +SKIP
    >>> sorted(recipe.query)                                            # doctest: +SKIP
    ['nircam']

    Notes
    -----
    What :func:`warning_problems` finds (valid, but probably not meant) is logged as warnings
    on the ``mastpipe`` logger, so ``run`` and ``plan`` show them as ``validate`` does.
    """
    located = load_yaml(path)
    recipe = parse_recipe(located, environ)
    for warning in warning_problems(recipe, located):
        log.warning("%s", warning)
    return recipe


def recipe_dir(path: str | os.PathLike[str]) -> Path:
    """The directory relative paths in a recipe are resolved against."""
    return Path(path).resolve().parent


def effective_mast_url(recipe: Recipe, cli_url: str | None = None, environ: dict[str, str] | None = None) -> str:
    """MAST's URL with the documented precedence: command line, environment, recipe, default."""
    env = os.environ if environ is None else environ
    for candidate, origin in ((cli_url, "--mast-url"), (env.get(MAST_URL_ENV), MAST_URL_ENV)):
        if candidate:
            try:
                return _check_url(candidate)
            except ValueError as exc:
                from mastpipe.errors import UsageError
                fix = f"unset {MAST_URL_ENV} or set it" if origin == MAST_URL_ENV else "pass"
                raise UsageError(f"{origin}: {exc}", hint=f"{fix} a full URL such as {DEFAULT_MAST_URL} "
                                 "or http://127.0.0.1:8000 for a local server") from None
    return recipe.mast.url
