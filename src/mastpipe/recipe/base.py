"""What every recipe model shares: immutability all the way down, and no boolean where text is meant.

The sections (:mod:`mastpipe.recipe.sections`) and the recipe (:mod:`mastpipe.recipe.models`)
are built on :class:`_Model`; :class:`Range` lives here because both the sections and the checks
(:mod:`mastpipe.recipe.checks`) need it.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["FrozenDict", "FrozenList", "Range", "Scalar"]


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
