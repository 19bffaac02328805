"""The sections of a recipe, one frozen pydantic model each, named after the stage they configure.

The ``retrieve`` section, the largest, is in :mod:`mastpipe.recipe.retrieve_section` (and
re-exported here). The field descriptions are the reference users read: ``mastpipe schema`` turns them into the JSON
Schema editors show as hover text (``schemas/recipe.schema.json``), and ``mastpipe schema
--markdown`` into ``docs/recipe.md``; changing one means regenerating both (tests fail until then).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mastpipe.recipe.base import Range, Scalar, _Model
from mastpipe.recipe.checks import check_column, check_condition, check_criterion, check_url
from mastpipe.recipe.fields import COLUMN_NAME, MISSION_PRODUCT_COLUMNS, OBSERVATION_FIELDS, PRODUCT_COLUMNS
from mastpipe.recipe.quantities import parse_bytes, parse_coordinates, parse_duration, parse_radius
from mastpipe.recipe.retrieve_section import Executor, Retrieve, Segments

__all__ = ["DEFAULT_MAST_URL", "GUIDE_STAR_MARK", "MAST_URL_ENV", "Condition", "Criterion", "ColumnMatch", "Executor",
           "Filter", "Mast", "Position", "Products", "Query", "Range", "Retrieve", "Segments", "State", "Unique",
           "Bounds", "ByteBounds", "Expect", "QueryExpect"]

DEFAULT_MAST_URL = "https://mast.stsci.edu"
MAST_URL_ENV = "MASTPIPE_MAST_URL"
GUIDE_STAR_MARK = "_gs-"


def _names_in(names: Iterable[str]) -> dict[str, Any]:
    """JSON Schema for a mapping whose keys are ``names``: editors complete and check them."""
    return {"propertyNames": {"enum": sorted(names)}}


class Bounds(_Model):
    """How many there must be: ``{min, max}``, either end may be left out (inclusive)."""

    min: int | None = Field(None, ge=0, description="The fewest allowed (inclusive); none: no lower bound.")
    max: int | None = Field(None, ge=0, description="The most allowed (inclusive); none: no upper bound.")

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max}), so no run can pass")
        return self

    def broken_by(self, found: int) -> bool:
        """Whether ``found`` lies outside the bounds."""
        return (self.min is not None and found < self.min) or (self.max is not None and found > self.max)


_ByteBound = Annotated[Union[int, str, None], WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}, {"type": "null"}]})]


class ByteBounds(Bounds):
    """Bounds on a number of bytes: ``{max: 2 TB}``; a number of bytes or a size with a unit
    (B, KB, MB, GB, TB, PB = powers of 1000; KiB, MiB, GiB, TiB, PiB = powers of 1024)."""

    min: _ByteBound = Field(None, description="Fewest bytes allowed, e.g. 1 GB.")  # type: ignore[assignment]
    max: _ByteBound = Field(None, description="Most bytes allowed, e.g. 2 TB.")  # type: ignore[assignment]

    @field_validator("min", "max", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_bytes(value)


#: The default of every ``expect``: a search that matches nothing fails the run.
_AT_LEAST_ONE = {"min": 1}


class QueryExpect(_Model):
    """What one named search must find, checked after the stage that counts it."""

    observations: Bounds | None = Field(default_factory=lambda: Bounds(**_AT_LEAST_ONE), description=(
        "Observations this search matches; default {min: 1}: a search that matches nothing (a typo, a "
        "withdrawn program) stops the run. Write {min: 0} when an empty result is fine."))
    products: Bounds | None = Field(None, description="Product-list rows of this search's observations.")
    files: Bounds | None = Field(None, description="Products of this search's observations kept by filter.")
    bytes: ByteBounds | None = Field(None, description="Bytes of those files, e.g. {max: 500 GB}.")


class Expect(QueryExpect):
    """What a run must find; checked after each stage, a failed expectation stops the run before
    retrieve (exit 5) and is named in the report and the summary.

    By default a run must find at least one observation and keep at least one file: an empty
    result is a failure, not a silent success. Accept one with ``{min: 0}``.
    """

    observations: Bounds | None = Field(default_factory=lambda: Bounds(**_AT_LEAST_ONE), description=(
        "Observations found by all searches together (after query); default {min: 1}."))
    products: Bounds | None = Field(None, description="Product-list rows of those observations (after products).")
    files: Bounds | None = Field(default_factory=lambda: Bounds(**_AT_LEAST_ONE), description=(
        "Products kept by filter, i.e. the files retrieve handles (after filter); default {min: 1}: a "
        "filter that keeps nothing stops the run."))
    bytes: ByteBounds | None = Field(None, description=(
        "Total size of those files (after filter), e.g. {max: 2 TB} to stop before filling a disk."))


class Position(_Model):
    """Where on the sky: ``coordinates`` or an ``object`` name, and a ``radius`` with a unit."""

    coordinates: Union[str, list[float], None] = Field(
        None, description='ICRS position: "83.633 22.0145" (degrees), "05h34m31.9s +22d00m52s" or [ra, dec].')
    object: str | None = Field(
        None, description=("An object name, e.g. \"M1\", resolved by MAST's name look-up (Mast.Name.Lookup) on the "
                           "server mastpipe talks to, once: the answer is kept in the state directory."))
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


Condition = Union[list[Union[str, int, float]], str, int, float]


class Query(_Model):
    """One named search: for CAOM observations (``criteria``), or for one mission's datasets
    through MAST's mission search API (``mission`` and ``conditions``). Criteria and conditions
    are ANDed; a list means "any of"."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, json_schema_extra={
        "oneOf": [{"required": ["criteria"], "not": {"required": ["mission"]}},
                  {"required": ["mission"], "not": {"required": ["criteria"]}}]})

    mission: Literal["jwst", "hst"] | None = Field(None, description=(
        "Search this mission's own catalogue (MAST's mission search API, astroquery's MastMissions) "
        "instead of CAOM: its columns (for JWST exp_type, program, detector, readpatt ...; for HST the "
        "sci_* fields) in `conditions`, its product lists (with file_suffix and category) and downloads. "
        "All the queries of a recipe search CAOM, or all the same mission."))
    criteria: dict[str, Criterion] | None = Field(
        None, json_schema_extra=_names_in(OBSERVATION_FIELDS), description=(
            "CAOM searches (required without `mission`): observation fields and the values to match "
            "(MAST's CAOM field names, e.g. obs_collection, "
            "proposal_id, instrument_name, filters). A scalar matches exactly (case-insensitive); a list "
            "matches any of its values; `*` is a wildcard (\"NIRCAM*\"); continuous fields (s_ra, s_dec, "
            "t_min, t_max, t_obs_release, t_exptime, em_min, em_max) take {min, max}, and dates may be ISO."))
    conditions: dict[Annotated[str, Field(pattern=COLUMN_NAME)], Condition] = Field(
        default_factory=dict, description=(
            "Mission searches only: the mission's columns and the values to match, e.g. "
            "{program: 1073, exp_type: NRC_IMAGE, filter: F277W}. A list matches any of its values; `*` "
            "is a wildcard. `mastpipe validate --online` (and every run) checks the names against MAST's "
            "list of the mission's searchable columns."))
    select_cols: list[Annotated[str, Field(pattern=COLUMN_NAME)]] = Field(default_factory=list, description=(
        "Mission searches only: the columns to keep in the query results (default: MAST's default "
        "set); the dataset column (fileSetName, sci_data_set_name) is always added."))
    position: Position | None = Field(None, description="Restrict the search to a cone on the sky.")
    expect: QueryExpect = Field(default_factory=QueryExpect, description=(
        "What this search must find (default: at least one observation)."))

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

    @field_validator("conditions", mode="before")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, condition in value.items():
                problem = check_condition(name, condition)
                if problem:
                    raise ValueError(problem[1])
        return value

    @model_validator(mode="after")
    def _kind(self) -> Query:
        if self.mission is None:
            if self.conditions or self.select_cols:
                given = "conditions" if self.conditions else "select_cols"
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": f"{given} belong to a mission search, and this query names no mission",
                    "hint": "add `mission: jwst` (or hst) to search that mission's own columns, or write CAOM "
                            "`criteria:` instead", "at": "mission"})
            if self.criteria is None:
                raise PydanticCustomError("missing_criteria", "required key 'criteria' is missing")
        else:
            if self.criteria is not None:
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": f"criteria are CAOM observation fields; a {self.mission} mission search "
                               "takes `conditions` over the mission's own columns",
                    "hint": "rename criteria to conditions and use the mission's column names "
                            "(e.g. program, exp_type for JWST; sci_pep_id, sci_instrume for HST), "
                            "or remove `mission:` to search CAOM", "at": "criteria"})
            if self.position is not None and self.position.object is not None:
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": "a mission search takes a position as coordinates, not an object name",
                    "hint": "write e.g. `coordinates: \"83.633 22.0145\"` (MAST's name resolver serves CAOM searches)",
                    "at": "position.object"})
            if not self.conditions and self.position is None:
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": "a mission search needs conditions or a position (MAST refuses searches without any)",
                    "hint": "add e.g. `conditions: {program: 1073}`", "at": "mission"})
        return self

    @property
    def names_collection(self) -> bool:
        return self.mission is not None or "obs_collection" in (self.criteria or {})


class Mast(_Model):
    """How to talk to MAST: where, how patiently and how politely."""

    url: str = Field(DEFAULT_MAST_URL, description=(
        f"MAST's base URL. Overridden by the environment variable {MAST_URL_ENV} and by --mast-url "
        "(precedence: command line, environment, recipe, default)."))
    timeout: float = Field(600.0, gt=0, le=3600, description="Seconds to wait for one request before retrying it.")
    page_size: int = Field(50_000, ge=1, le=50_000, description="Rows per page of query results (MAST's maximum is 50000).")
    row_cap: int = Field(50_000, ge=1, le=500_000, description=(
        "Most rows MAST returns for one search, silently (50000). A search whose count is larger is split "
        "on t_min before any table is fetched; a server that cuts lower is noticed and split further."))
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
        return check_url(value)


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
    columns: dict[str, ColumnMatch] = Field(default_factory=dict, json_schema_extra=_names_in(
        {**PRODUCT_COLUMNS, **MISSION_PRODUCT_COLUMNS}), description=(
        "Exact matches on product columns, e.g. productSubGroupDescription: UNCAL, productType: [SCIENCE], "
        "calib_level: [2, 3], dataRights: \"!EXCLUSIVE_ACCESS\", extension-like tests belong in endswith; "
        "numeric columns (size, calib_level) also take {min, max}. A mission search's product lists have "
        "their own columns: file_suffix: _uncal, category: CALIBRATED, access, type ..."))

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
                problem = check_column(name, match, mission=None)  # whose columns: the Recipe checks
                if problem:
                    raise ValueError(problem[1])
        return value


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
