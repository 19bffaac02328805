"""What can be wrong with a recipe, located in its file, before and after the models see it.

Before: :func:`scan` expands ``${VAR}`` and refuses anything that looks like a secret, as a
problem at the key or value where it stands. After: :func:`problems_from` turns pydantic's
errors into one-line messages ("must be X, not Y") at the line and column of the field, with a
hint ("did you mean ...?", or the field's own description). The models live in
:mod:`mastpipe.recipe.models`; this module does not import them, so they can use :func:`shown` and
:func:`error_message` for their own checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from mastpipe.errors import Problem
from mastpipe.recipe.fields import suggest
from mastpipe.recipe.yamlload import Located, dotted

TOKEN_ENV = "MAST_API_TOKEN"

_SECRET_WORDS = {"token", "secret", "password", "passwd", "passphrase", "apikey", "credential",
                 "credentials", "cookie", "auth", "authorization", "bearer"}
_SECRET_VALUE = re.compile(r"^(?:[0-9a-fA-F]{32,}|(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{32,}|Bearer\s+\S+)$")
_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|\$)")
_LABELS = {("query",)}  # mappings whose keys are names the author chooses
_SECRET_HINT = f"never put tokens in recipes: set the environment variable {TOKEN_ENV} or run `mastpipe login`"


__all__ = [
    "TOKEN_ENV", "boolean_problem", "error_message", "misread_number", "number_problems", "problems_from",
    "scan", "shown"
]


def _is_secret_key(key: str) -> bool:
    """``token``, ``api_key``, ``apiToken``, ``mast-password``: a word of the key names a secret."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).lower()
    parts = [w for w in re.split(r"[^a-z0-9]+", words) if w]
    joined = {a + b for a, b in zip(parts, parts[1:])}  # api_key -> apikey
    return bool(_SECRET_WORDS & (set(parts) | joined))


def scan(located: Located, environ: dict[str, str]) -> tuple[Any, list[Problem]]:
    """Refuse secrets and expand ``${VAR}`` in every string, collecting located problems.

    Returns the data with variables expanded, ready for the models, and the problems found.
    """
    problems: list[Problem] = []

    def expand(text: str, path: tuple[Any, ...]) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, has_default, default = (match.group(1) or "").partition(":-")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                problems.append(located.problem(path, f"${{{match.group(1)}}} is not a valid variable reference",
                                                "write ${NAME} or ${NAME:-default}; $$ for a literal $"))
                return ""
            if name == TOKEN_ENV:
                problems.append(located.problem(path, f"the recipe refers to ${{{TOKEN_ENV}}}",
                                                f"remove it: mastpipe reads {TOKEN_ENV} from the environment itself, "
                                                "and a token must never end up in paths or logs"))
                return ""
            if name not in environ and has_default:
                return default
            if name not in environ:
                problems.append(located.problem(path, f"environment variable {name} is not set",
                                                f"export {name}=... before running, or write ${{{name}:-default}}"))
                return ""
            return environ[name]

        return _VARIABLE.sub(one, text)

    def walk(value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                # A query's name is a label the author chooses ("secret", "tokens_of_light"):
                # only its values are checked. Other keys are fields or MAST columns, where a
                # secret-like name means a secret is about to be written down.
                if _is_secret_key(key) and path not in _LABELS:
                    problems.append(located.problem(path + (key,), f"the key {key!r} looks like a secret",
                                                    _SECRET_HINT, key=True))
                out[key] = walk(item, path + (key,))
            return out
        if isinstance(value, list):
            return [walk(item, path + (i,)) for i, item in enumerate(value)]
        if isinstance(value, str):
            if _SECRET_VALUE.match(value.strip()):
                problems.append(located.problem(path, "this value looks like an access token", _SECRET_HINT))
                return value
            return expand(value, path)
        return value

    return walk(located.data, ()), problems


# --------------------------------------------------------------------------------------------
# Turning pydantic's errors into one-line messages that say what is wrong and what to do


def shown(value: Any) -> str:
    """A short description of a value as the author wrote it, for "must be X, not Y"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def error_message(error: Any) -> str:
    """One error of a ValidationError as a message of the form "must be X, not Y"."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    not_ = f", not {shown(value)}"
    messages = {
        "float_type": "must be a number", "float_parsing": "must be a number",
        "finite_number": "must be a finite number",
        "int_type": "must be a whole number", "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "bool_type": "must be true or false", "bool_parsing": "must be true or false",
        "string_type": "must be text", "list_type": "must be a list, e.g. [a, b]",
        "dict_type": "must be a mapping of keys to values", "model_type": "must be a mapping of keys to values",
        "model_attributes_type": "must be a mapping of keys to values",
    }
    if kind in messages:
        return messages[kind] + not_
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}{not_}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
                 "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}[kind]
        return f"must be {bound[0]} {ctx.get(bound[1])}{not_}"
    if kind == "too_short":
        return f"must not be empty (at least {ctx.get('min_length', 1)})"
    if kind == "string_pattern_mismatch":
        return f"{shown(value)} is not allowed here"
    if kind == "recipe_value":  # the models' own messages; a "hint" in ctx goes with them
        return str(ctx["message"])
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"]).replace("Input should be", "must be")


_BOOLEAN_WORDS = "YAML reads unquoted yes/no, on/off and true/false as booleans"


def boolean_problem(located: Located, path: tuple[Any, ...], value: bool, expected: str = "text") -> Problem:
    """A boolean where ``expected`` (text, a number) belongs, quoting what the author wrote.

    YAML 1.1 reads an unquoted ``NO`` (Norway, a target name) or ``off`` as false; pydantic would
    then keep it, or refuse it as "not text" although the author wrote text.
    """
    word = str(value).lower()
    raw = located.texts.get(tuple(path)) or word
    read = f"{raw} is a boolean" if raw.lower() == word else f"{raw} was read as the boolean {word}"
    if expected == "text":
        hint = f'quote it ("{raw}") if you mean the text; {_BOOLEAN_WORDS}'
    else:
        hint = f"write {expected} here; {_BOOLEAN_WORDS}"
    return located.problem(path, f"{read}, not {expected}", hint)


_WHY = {
    "octal": "YAML 1.1 reads an integer with a leading 0 as octal",
    "hexadecimal": "YAML 1.1 reads 0x... as hexadecimal",
    "binary": "YAML 1.1 reads 0b... as binary",
    "base 60": "YAML 1.1 reads digits joined by colons as base 60",
    "underscores": "YAML 1.1 drops underscores from numbers (editors, reading YAML 1.2, see text)",
    "special": "YAML reads unquoted .inf and .nan as infinity and NaN",
}


def misread_number(raw: str, value: Any) -> tuple[str, str, str] | None:
    """How YAML 1.1 read a number written ``raw``, when a plain decimal does not say so.

    Returns ``(kind, read, plain)``: the kind of form (a key of ``_WHY``), what the value became
    ("the octal number 571") and how to write the number as a plain decimal (``1073`` for
    ``01073``, the author surely meant decimal; ``31`` for ``0x1F``), or None when ``raw`` is a
    plain decimal (``1073``, ``+5``, ``0``, ``0.5``, ``1.5e+3``) or ``value`` is not a number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    body = raw.strip().lstrip("+-").lower()
    if value != value:
        return "special", 'NaN ("not a number")', ""
    if value in (float("inf"), float("-inf")):
        return "special", "minus infinity" if value < 0 else "infinity", ""
    for prefix, kind in (("0x", "hexadecimal"), ("0o", "octal"), ("0b", "binary")):
        if body.startswith(prefix):
            return kind, f"the {kind} number {value}", str(value)
    if ":" in body:
        return "base 60", f"{value} (YAML 1.1 base 60)", str(value)
    if isinstance(value, int) and len(body) > 1 and body.startswith("0"):
        decimal = int(raw.strip().replace("_", ""), 10)
        return "octal", f"the octal number {value}", str(decimal)
    if "_" in body:
        return "underscores", f"the number {value}", str(value)
    return None


def number_problems(located: Located,
                    place: Callable[[tuple[Any, ...]], tuple[bool, bool] | None]) -> list[Problem]:
    """Every number YAML 1.1 read from something other than a plain decimal, where it stands.

    ``01073`` is the octal 571, ``0x1F`` 31, ``12:30`` the base-60 750, ``1_000`` 1000 and
    ``.inf``/``.nan`` are not finite: a recipe would validate and search for something the
    author did not write, and editors (YAML 1.2) would read some of them differently again.
    ``place(path)`` says what the field there takes, ``(takes text, takes numbers)``, or None for
    a place other checks refuse anyway (an unknown key).
    """
    problems = []
    for path, raw in located.texts.items():
        found = misread_number(raw, _at(located.data, path))
        takes = place(path) if found else None
        if not found or takes is None:
            continue
        kind, read, plain = found
        text, number = takes
        message = f"{raw} was read as {read}" + (", not text" if text and not number else "")
        why = _WHY[kind]
        if text:
            hint = f'quote it ("{raw}") if you mean the text'
            if number and plain and kind == "octal":
                hint += f", or write {plain} for the decimal number"
        elif kind == "special":
            hint = (f"give a finite number, or leave {path[-1]} out for a range open at that end"
                    if path[-1] in ("min", "max") else "give a finite number")
        else:
            hint = f"write {plain} (plain decimal digits)"
        problems.append(located.problem(path, message, f"{hint}; {why}"))
    return problems


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _walk_loc(loc: tuple[Any, ...], data: Any, kind: str) -> tuple[Any, ...]:
    """pydantic's error location with union branch names ("Range", "str") and "[key]" removed.

    Parts are kept while they name keys or indexes actually present in the data; the last part
    of a "missing" error is kept although it is, by definition, absent.
    """
    kept: list[Any] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            kept.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            kept.append(part)
            current = current[part]
        elif kind == "missing" and i == len(loc) - 1:
            kept.append(part)
    return tuple(kept)


class _DictOf:
    """Marks a field that maps user-chosen names to models (``query``); the next loc part is a name."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model


def _model_for(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model at ``loc`` (``root`` for (), Query for ("query", "q"), ...), or None."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(model, _DictOf):
            model = model.model
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        found: Any = None
        args = [annotation]
        while args:
            arg = args.pop()
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found = arg
                break
            args.extend(getattr(arg, "__args__", ()))
        if found is not None and getattr(annotation, "__origin__", None) is dict:
            found = _DictOf(found)
        model = found
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The field's own description (its first sentence), as a hint for wrong values."""
    names = tuple(part for part in loc if not isinstance(part, int))
    if not names:
        return None
    if len(names) == 2 and names[0] == "query":
        return "each search is a mapping with `criteria:` and, optionally, `position:`"
    parent = _model_for(root, names[:-1])
    field = parent.model_fields.get(names[-1]) if parent else None
    if field is None or not field.description:
        return None
    first = re.split(r"(?<!e\.g\.)(?<=[A-Za-z)\]]\.)\s+(?=[A-Z])", field.description, maxsplit=1)[0].rstrip(".")
    if first[1:2].islower():
        first = first[:1].lower() + first[1:]
    return f"{names[-1]}: {first}"


_SPECIAL = {
    ("version",): ("literal_error", lambda v: f"unsupported recipe version {shown(v)}; this mastpipe reads version 1",
                   "write `version: 1`; newer recipes need a newer mastpipe"),
    ("name",): ("string_pattern_mismatch", lambda v: f"{shown(v)} is not a valid name",
                "use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    ("query",): ("too_short", lambda v: "must name at least one search",
                 "add one, e.g. `query: {main: {criteria: {obs_collection: JWST}}}`"),
}


def problems_from(error: ValidationError, located: Located, data: Any, root: type[BaseModel]) -> list[Problem]:
    """Each of pydantic's errors validating ``data`` against ``root`` as a located Problem,
    with "must be X, not Y" messages, "did you mean" and the field's own description as hints."""
    problems = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        raw_loc = tuple(item["loc"])
        loc = _walk_loc(raw_loc, data, kind)
        if kind == "extra_forbidden":
            parent = _model_for(root, loc[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            hint = suggest(str(loc[-1]), allowed) if allowed else None
            hint = hint or ("allowed keys here: " + ", ".join(allowed) if allowed else None)
            problems.append(located.problem(loc, f"unknown key {loc[-1]!r}", hint, key=True))
            continue
        if kind == "missing_criteria":  # a query without mission must have criteria (Query._kind)
            kind, loc = "missing", loc + ("criteria",)
        if kind == "recipe_value":  # a model's check of one of its fields ("at"), or of the recipe's ("where")
            ctx = item.get("ctx") or {}
            if ctx.get("where"):
                loc = tuple(str(ctx["where"]).split("."))
            elif ctx.get("at"):
                loc = loc + tuple(str(ctx["at"]).split("."))
        if kind == "missing":
            message = f"required key {loc[-1]!r} is missing"
            problems.append(Problem(located.file, *located.where(loc[:-1]), dotted(loc), message,
                                    _missing_hint(str(loc[-1]))))
            continue
        if kind == "in_flight_exceeds":
            where = ("products", "in_flight")
            problems.append(located.problem(where, item["msg"],
                                            "lower products.in_flight or raise mast.max_in_flight"))
            continue
        if raw_loc and raw_loc[-1] == "[key]" and kind == "string_pattern_mismatch":
            problems.append(located.problem(loc, f"{shown(loc[-1])} is not a valid name for a search",
                                            "use letters, digits, '_' and '-', starting with a letter or digit",
                                            key=True))
            continue
        value = item.get("input")
        if kind == "read_as_boolean" or (kind == "string_type" and isinstance(value, bool)):
            if isinstance(value, list):  # a list of text with booleans in it: each where it stands
                problems += [boolean_problem(located, loc + (i,), v) for i, v in enumerate(value)
                             if isinstance(v, bool)]
            else:
                problems.append(boolean_problem(located, loc, value))
            continue
        if kind == "string_type" and value is None:
            raw = located.texts.get(loc)
            written = f" ({raw})" if raw else ""
            problems.append(located.problem(loc, f"has no value{written}, but must be text",
                                            _default_hint(root, loc) or _describe(root, loc)))
            continue
        special = _SPECIAL.get(loc)
        if special and special[0] == kind:
            problems.append(located.problem(loc, special[1](item.get("input")), special[2]))
            continue
        message = error_message(item)
        hint = (item.get("ctx") or {}).get("hint") if kind == "recipe_value" else None
        if loc[-1:] == ("criteria",) and item.get("input") == {}:
            hint = "add at least one field, e.g. `obs_collection: JWST`"
        raw = located.texts.get(loc)
        if isinstance(value, bool) and raw and raw.lower() != str(value).lower():
            message = message.replace(f", not {shown(value)}", f", not {raw} (YAML reads it as {shown(value)})")
        if "; did you mean" in message:
            message, _, rest = message.partition("; did you mean")
            hint = "did you mean" + rest
        problems.append(located.problem(loc, message, hint or _describe(root, loc) or "see schemas/recipe.schema.json"))
    # A union of several branches reports one error per branch; keep the first per place.
    unique: dict[tuple[str, int | None], Problem] = {}
    for problem in problems:
        unique.setdefault((problem.field, problem.line), problem)
    return list(unique.values())


def _default_hint(root: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """For an empty value: the field's description and how to get its default back."""
    names = tuple(part for part in loc if not isinstance(part, int))
    parent = _model_for(root, names[:-1]) if names else None
    field = parent.model_fields.get(names[-1]) if parent else None
    described = _describe(root, loc)
    if field is None or not isinstance(field.default, str) or not field.default or described is None:
        return None
    return f"{described}; remove the key to use the default, {field.default!r}"


def _missing_hint(name: str) -> str | None:
    return {
        "version": "start the recipe with `version: 1`",
        "name": "add `name: my-recipe` (letters, digits, . _ -)",
        "query": "add a `query:` section with at least one named search",
        "criteria": "add `criteria:` with at least one field, e.g. `obs_collection: JWST`",
    }.get(name, f"add `{name}:`")
