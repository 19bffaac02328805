"""The recipe language: pydantic models of a recipe, and :func:`load_recipe`.

A recipe is one YAML document with these sections, each named after the stage it configures::

    version: 1
    name: nircam-1073
    mast:      {url, timeout, page_size, max_in_flight, retries, retry_after_cap}
    query:     {<name>: {criteria: {...}, position: {...}}, ...}  (or {mission, conditions, select_cols, position})
    products:  {batch_size, in_flight}
    unique:    {key}
    filter:    {contains, endswith, exclude, guide_stars, mrp_only, columns}
    retrieve:  {mode, source, destination, layout, in_flight, s3_in_flight, s3_parts, s3_endpoint, verify,
                overwrite, executor, script, manifest, manifest_paths}
    state:     {directory, query_max_age, ledger_journal}
    expect:    {observations, products, files, bytes}   (also per query)

Models are immutable and reject unknown keys. The sections live in :mod:`mastpipe.recipe.sections`,
what they share in :mod:`mastpipe.recipe.base`, the value checks in :mod:`mastpipe.recipe.checks`;
every name is importable from here as before. Loading goes through :mod:`mastpipe.recipe.yamlload` and
:mod:`mastpipe.recipe.problems`, so every error names the file, line, column and field, and says
what to do. The field descriptions
below are the reference users read: ``mastpipe schema`` turns them into the JSON Schema that
editors show as hover text (``schemas/recipe.schema.json``), and ``mastpipe schema --markdown``
into ``docs/recipe.md``; changing one means regenerating both (tests fail until then).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mastpipe.errors import Problem, RecipeError
from mastpipe.recipe.base import FrozenDict, FrozenList, Range, Scalar, _Model, _types
from mastpipe.recipe.checks import (_COLUMN_KINDS, _booleans, _column_kinds, check_column, check_condition, check_criterion,
                                    check_url, layout_problem)
from mastpipe.recipe.fields import BOOLEAN_FIELDS, CONTINUOUS_FIELDS, OBSERVATION_FIELDS
from mastpipe.recipe.problems import _model_for, boolean_problem, number_problems, problems_from, scan, shown
from mastpipe.recipe.sections import (DEFAULT_MAST_URL, GUIDE_STAR_MARK, MAST_URL_ENV, ColumnMatch, Criterion, Executor,
                                      Expect, Filter, Mast, Position, Products, Query, QueryExpect, Retrieve, Segments,
                                      State, Unique)
from mastpipe.recipe.yamlload import Located, dotted, load_yaml

__all__ = ["DEFAULT_MAST_URL", "GUIDE_STAR_MARK", "MAST_URL_ENV", "SCHEMA_VERSION", "ColumnMatch", "Criterion",
           "Executor", "Expect", "Filter", "FrozenDict", "FrozenList", "Mast", "Position", "Products", "Query", "QueryExpect", "Range",
           "Recipe", "Retrieve", "Scalar", "Segments", "State", "Unique", "check_column", "check_criterion",
           "effective_mast_url", "layout_problem", "load_recipe", "parse_recipe", "recipe_dir", "warning_problems"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


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
    expect: Expect = Field(default_factory=Expect, description=(
        "What a run must find; a run breaking it stops before retrieve with exit code 5 (default: at "
        "least one observation and one file kept)."))

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

    @model_validator(mode="after")
    def _one_catalogue(self) -> Recipe:
        """All queries search CAOM, or all the same mission; filter then names that kind's columns.

        CAOM product lists and a mission's have different columns, identifiers and download
        services, and one observation is not one dataset (a JWST exposure is both, an HST
        association is one dataset but a CAOM observation per member): uniting them would
        fetch some files twice under two names, so a recipe keeps to one catalogue.
        """
        kinds = {name: query.mission for name, query in self.query.items()}
        first_name, first = next(iter(kinds.items()))
        for name, mission in kinds.items():
            if mission != first:
                def kind(m: str | None) -> str:
                    return f"a {m} mission search" if m else "a CAOM search"
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": f"query {name!r} is {kind(mission)} and query {first_name!r} is {kind(first)}: "
                               "a recipe's queries all search CAOM, or all the same mission",
                    "hint": "their product lists have different columns and download services; "
                            "split them into two recipes", "where": f"query.{name}"})
        searches_mission = first is not None
        for name, match in self.filter.columns.items():
            problem = check_column(name, match, mission=searches_mission)
            if problem:
                raise PydanticCustomError("recipe_value", "{message}", {
                    "message": problem[1], "hint": problem[2], "where": f"filter.columns.{name}"})
        if searches_mission and self.filter.mrp_only:
            raise PydanticCustomError("recipe_value", "{message}", {
                "message": "mrp_only needs CAOM's productGroupDescription; mission product lists do not mark "
                           "Minimum Recommended Products", "where": "filter.mrp_only",
                "hint": "select files with columns: {file_suffix: ..., category: ...} instead"})
        return self

    @property
    def mission(self) -> str | None:
        """The mission every query searches (``jwst``, ``hst``), or None for CAOM searches."""
        return next(iter(self.query.values())).mission

    def warnings(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Things that are valid but probably not what the author wants, as (path, message, hint)."""
        found: list[tuple[tuple[str, ...], str, str]] = []
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
        if retrieve.source == "mast":
            for key in ("s3_in_flight", "s3_endpoint", "s3_parts"):
                if key in given:
                    found.append((("retrieve", key), f"retrieve.{key} has no effect with source mast: "
                                  "only cloud and auto fetch from S3", "remove it, or set `source: auto`"))
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
    mission = False
    if isinstance(queries, dict):
        mission = any(isinstance(q, dict) and q.get("mission") is not None for q in queries.values())
        for qname, query in queries.items():
            if isinstance(query, dict) and isinstance(query.get("criteria"), dict):
                entries.append((("query", qname, "criteria"), query["criteria"], lambda n, v: check_criterion(n, v)[1]))
            if isinstance(query, dict) and isinstance(query.get("conditions"), dict):
                entries.append((("query", qname, "conditions"), query["conditions"], check_condition))
    filt = data.get("filter")
    kinds = _column_kinds(mission)
    if isinstance(filt, dict) and isinstance(filt.get("columns"), dict):
        entries.append((("filter", "columns"), filt["columns"], lambda n, v: check_column(n, v, mission=mission)))
    for path, mapping, check in entries:
        columns = path == ("filter", "columns")
        conditions = path[-1] == "conditions"
        for name, value in mapping.items():
            entry = dotted(path + (name,))
            if any(m == entry or m.startswith((entry + ".", entry + "[")) for m in misread):
                flagged.append(dotted(path))
                continue
            if (conditions or name in (kinds if columns else OBSERVATION_FIELDS)) and _booleans(value) and (
                    columns or conditions or name not in BOOLEAN_FIELDS):  # each boolean where it stands, as written
                expected = _COLUMN_KINDS[kinds[name]] if columns else "text"
                problems += [boolean_problem(located, path + (name,) + at, value if not at else value[at[0]], expected)
                             for at, _ in _booleans(value)]
                flagged.append(dotted(path))
                continue
            problem = check(name, value)
            if problem:
                where, message, hint = problem
                at = (int(where.split(":")[1]),) if where.startswith("value:") else ()
                problems.append(located.problem(path + (name,) + at, message, hint, key=where == "key"))
                flagged.append(dotted(path))
    return problems, tuple(flagged)


def _number_place(path: tuple[Any, ...]) -> tuple[bool, bool] | None:
    """What the field at ``path`` takes, ``(text, numbers)``, for :func:`number_problems`;
    None where another check refuses the place itself (unknown keys and fields)."""
    if len(path) >= 4 and path[0] == "query" and path[2] == "conditions":
        field, rest = path[3], path[4:]
        known, text = True, True
    elif len(path) >= 4 and path[0] == "query" and path[2] == "criteria":
        field, rest = path[3], path[4:]
        known, text = field in OBSERVATION_FIELDS, field not in CONTINUOUS_FIELDS
    elif len(path) >= 3 and path[:2] == ("filter", "columns"):
        field, rest = path[2], path[3:]
        kinds = _column_kinds(None)
        known, text = field in kinds, kinds.get(str(field)) == "text"
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
    for candidate, origin in ((cli_url, "{mast_url}"), (env.get(MAST_URL_ENV), MAST_URL_ENV)):
        if candidate:
            try:
                return check_url(candidate)
            except ValueError as exc:
                from mastpipe.errors import UsageError, literal
                fix = f"unset {MAST_URL_ENV} or set it" if origin == MAST_URL_ENV else "give"
                raise UsageError(f"{origin}: {literal(exc)}",
                                 hint=f"{fix} a full URL such as {DEFAULT_MAST_URL} "
                                 "or http://127.0.0.1:8000 for a local server", parameters=["mast_url"]) from None
    return recipe.mast.url
