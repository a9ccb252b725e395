"""`where` filters: validated once here, translated by each backend.

A `where` maps payload keys to conditions; every key's condition must hold (AND):

    {"labels": "animals"}                   equality (a list-valued field matches when any
                                            element equals the value)
    {"labels": ["birds", "fish"]}           any of these values
    {"width": {"gte": 200, "lt": 1000}}     a range: gt, gte, lt, lte (numbers)
    {"labels": {"all": ["birds", "fish"]}}  several conditions on one key, all holding (what
                                            repeated `--where labels=...` give)

Values are typed: numbers and booleans compare as numbers and booleans, text as text.

`Where.of` validates the shape (a malformed where is a one-sentence InvalidQuery, which is a
JointspaceError);
`Where.for_fields` checks it against the fields a collection can filter on (recorded at creation
in its metadata under `FILTERABLE_KEY`: key -> "keyword" | "integer" | "float" | "bool") and
types each value for its field; `Where.clauses` is what a backend translates: equalities of
text, integers or booleans, any-of lists of text or of integers, ranges, and alternatives
(`Either`) for what has no direct form (a float equality becomes a one-point range).
`parse_conditions` turns command-line strings (`labels=a,b`, `width>=200`) into a where.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jointspace.errors import InvalidQuery, JointspaceError

Scalar = str | int | float | bool
FieldKind = Literal["keyword", "integer", "float", "bool"]
FIELD_KINDS: tuple[str, ...] = ("keyword", "integer", "float", "bool")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
ALL = "all"
# The metadata key under which a collection records its filterable fields (the store owns it:
# written at creation, kept by set_metadata).
FILTERABLE_KEY = "filterable"


@dataclass(frozen=True)
class Equals:
    """`key` equals `value` (for a list-valued field: some element does)."""

    key: str
    value: Scalar


@dataclass(frozen=True)
class AnyOf:
    """`key` equals one of `values`."""

    key: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    """`key` is a number within the given bounds (None: no bound)."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def bounds(self) -> dict[str, float]:
        """The bounds that are set, by operator name."""
        return {op: getattr(self, op) for op in RANGE_OPERATORS if getattr(self, op) is not None}


@dataclass(frozen=True)
class Either:
    """At least one of `options` holds (all on the same key)."""

    options: tuple[Equals | AnyOf | Range, ...]


Condition = Equals | AnyOf | Range
Clause = Equals | AnyOf | Range | Either


@dataclass(frozen=True)
class Where:
    """A validated filter: every condition must hold."""

    conditions: tuple[Condition, ...] = ()

    @classmethod
    def of(cls, where: WhereLike) -> Where:
        """The validated form of a where dict (a Where is returned as it is; None and {} mean
        no filter). Raises InvalidQuery, in one sentence, for a malformed where."""
        if where is None:
            return cls()
        if isinstance(where, Where):
            return where
        if not isinstance(where, Mapping):
            raise InvalidQuery(
                "A where filter maps payload keys to conditions, e.g. {'labels': 'animals'}, "
                f"not {_show(where)}."
            )
        conditions: list[Condition] = []
        for key, condition in where.items():
            if not isinstance(key, str) or not key:
                raise InvalidQuery(f"Where filter keys are payload field names, not {_show(key)}.")
            conditions.extend(_conditions(key, condition))
        return cls(tuple(conditions))

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def keys(self) -> list[str]:
        """The payload keys named, in order, each once."""
        return list(dict.fromkeys(c.key for c in self.conditions))

    def for_fields(self, filterable: Mapping[str, str] | None, collection: str) -> Where:
        """This filter checked against a collection's filterable fields (key -> kind), each
        value typed for its field: text for keyword fields (a number or boolean given for one
        is matched as its text), numbers for numeric fields (text that reads as a number is
        taken as one), booleans for boolean fields. With `filterable` None (a collection that
        records none, made before they were recorded) the filter is taken as it is.
        Raises InvalidQuery for a key the collection cannot filter on (listing those it
        can) or a condition its field cannot hold (a range on text)."""
        if filterable is None or not self.conditions:
            return self
        return Where(tuple(_typed(c, filterable, collection) for c in self.conditions))

    def clauses(self) -> tuple[Clause, ...]:
        """What a backend translates, all of which must hold: Equals of text, an integer or a
        boolean; AnyOf all-text or all-integer values (at least two); Range; Either of those
        (for floats, booleans or mixed types in an any-of)."""
        return tuple(_clause(c) for c in self.conditions)


WhereLike = Mapping[str, Any] | Where | None


def filterable_fields(
    keyword_fields: Iterable[str] = (),
    fields: Mapping[str, str] | None = None,
    recorded: Any = None,
) -> dict[str, str]:
    """The filterable fields of a new collection, key -> kind: `keyword_fields` as keyword
    fields, `fields` by kind, and `recorded` (a metadata's FILTERABLE_KEY entry, as copied from
    another collection) when it is a mapping. Raises JointspaceError for an unknown kind or a
    field given two kinds."""
    merged: dict[str, str] = {}
    sources: list[Iterable[tuple[str, str]]] = [
        recorded.items() if isinstance(recorded, Mapping) else (),
        ((name, "keyword") for name in keyword_fields),
        (fields or {}).items(),
    ]
    for pairs in sources:
        for name, kind in pairs:
            if kind not in FIELD_KINDS:
                raise JointspaceError(
                    f"Field '{name}' has the unknown kind {kind!r}; use one of "
                    f"{', '.join(FIELD_KINDS)}."
                )
            if merged.setdefault(str(name), kind) != kind:
                raise JointspaceError(
                    f"Field '{name}' is given two kinds, {merged[name]} and {kind}; give one."
                )
    return merged


def parse_conditions(conditions: Iterable[str]) -> dict[str, Any]:
    """A where dict from command-line conditions: `KEY=VALUE`, `KEY=A,B` (any of A, B; `\\,` is
    a literal comma), `KEY>=N`, `KEY<=N`, `KEY>N`, `KEY<N`. Values that read as an integer, a
    float or true/false become one (only in their plain form: `007` and `1.50` stay text, so
    that text matches stay exact). Several conditions on one key must all hold: that key's
    entry is then {"all": [condition, ...]}. Raises InvalidQuery for a malformed condition.

    >>> parse_conditions(["labels=a,b", "width>=200", "labels=birds"])
    {'labels': {'all': [['a', 'b'], 'birds']}, 'width': {'gte': 200}}
    """
    parsed: dict[str, list[Any]] = {}
    for text in conditions:
        match = _CONDITION.fullmatch(text)
        if match is None or not match["key"].strip():
            raise InvalidQuery(
                f"The condition {text!r} is not KEY=VALUE or KEY>=NUMBER "
                "(e.g. labels=animals, width>=200)."
            )
        key, operator, value = match["key"].strip(), match["op"], match["value"].strip()
        if operator == "=":
            parts = [part.strip().replace("\\,", ",") for part in _COMMA.split(value)]
            if not all(parts):
                raise InvalidQuery(
                    f"The condition {text!r} has an empty value; write KEY=VALUE or KEY=A,B."
                )
            typed = [_plain_value(part) for part in parts]
            parsed.setdefault(key, []).append(typed[0] if len(typed) == 1 else typed)
        else:
            number = _number(value)
            if number is None:
                raise InvalidQuery(
                    f"The condition {text!r} compares with {operator}, so its value must be a "
                    "number."
                )
            parsed.setdefault(key, []).append({_OPERATOR_NAMES[operator]: number})
    return {key: found[0] if len(found) == 1 else {ALL: found} for key, found in parsed.items()}


# -- validation ------------------------------------------------------------------------------------

_CONDITION = re.compile(r"(?P<key>[^<>=]*)(?P<op>>=|<=|>|<|=)(?P<value>.*)", re.DOTALL)
_COMMA = re.compile(r"(?<!\\),")
_OPERATOR_NAMES = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
_PLAIN_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_INT = re.compile(r"[+-]?[0-9]+")


def _conditions(key: str, condition: Any) -> list[Condition]:
    if _is_scalar(condition):
        return [Equals(key, _finite(key, condition))]
    if isinstance(condition, (list, tuple)):
        if not condition:
            raise InvalidQuery(
                f"The where condition for '{key}' is an empty list; give at least one value."
            )
        for value in condition:
            if not _is_scalar(value):
                raise InvalidQuery(
                    f"The where list for '{key}' may hold text, numbers and booleans, not "
                    f"{_show(value)}."
                )
        return [AnyOf(key, tuple(_finite(key, value) for value in condition))]
    if isinstance(condition, Mapping):
        return _mapping_conditions(key, condition)
    raise InvalidQuery(
        f"The where condition for '{key}' must be a value, a list of values or a range such "
        f"as {{'gte': 1}}, not {_show(condition)}."
    )


def _mapping_conditions(key: str, condition: Mapping[Any, Any]) -> list[Condition]:
    if ALL in condition:
        conditions = condition[ALL]
        if len(condition) > 1 or not isinstance(conditions, (list, tuple)) or not conditions:
            raise InvalidQuery(
                f"The where condition {{'all': ...}} for '{key}' takes a non-empty list of "
                "conditions and nothing beside it."
            )
        return [found for each in conditions for found in _conditions(key, each)]
    if not condition:
        raise InvalidQuery(
            f"The where range for '{key}' is empty; give gt, gte, lt or lte (e.g. {{'gte': 1}})."
        )
    bounds: dict[str, float] = {}
    for operator, bound in condition.items():
        if operator not in RANGE_OPERATORS:
            raise InvalidQuery(
                f"Unknown where operator {operator!r} for '{key}'; use gt, gte, lt or lte for a "
                "range, or 'all' for a list of conditions."
            )
        if not _is_number(bound):
            raise InvalidQuery(
                f"The range bound {operator} of '{key}' must be a number, not {_show(bound)}: "
                "ranges compare numbers."
            )
        bounds[operator] = _finite(key, bound)
    return [Range(key, **bounds)]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQuery(f"The where value {value} for '{key}' is not a finite number.")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- typing values for their fields ----------------------------------------------------------------


def _typed(condition: Condition, filterable: Mapping[str, str], collection: str) -> Condition:
    kind = filterable.get(condition.key)
    if kind is None:
        raise _not_filterable(condition.key, filterable, collection)
    if isinstance(condition, Range):
        if kind in ("integer", "float"):
            return condition
        bound = next(iter(condition.bounds()))
        holds = "text" if kind == "keyword" else "true/false"
        raise InvalidQuery(
            f"'{condition.key}' in collection '{collection}' holds {holds}, so it takes no "
            f"range ({bound}); match values instead, e.g. {{'{condition.key}': ...}}."
        )
    if isinstance(condition, Equals):
        return Equals(condition.key, _value_for(condition.key, condition.value, kind, collection))
    values = (_value_for(condition.key, v, kind, collection) for v in condition.values)
    return AnyOf(condition.key, tuple(values))


def _value_for(key: str, value: Scalar, kind: str, collection: str) -> Scalar:
    if kind == "keyword":
        return value if isinstance(value, str) else _text_of(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidQuery(
            f"'{key}' in collection '{collection}' holds true/false, so {_show(value)} cannot "
            "match it."
        )
    number = value if _is_number(value) else _number(value) if isinstance(value, str) else None
    if number is None:
        raise InvalidQuery(
            f"'{key}' in collection '{collection}' holds numbers, so {_show(value)} cannot match "
            "it; give a number."
        )
    return number


def _text_of(value: Scalar) -> str:
    """The text a typed value was read from by parse_conditions (its plain form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _not_filterable(key: str, filterable: Mapping[str, str], collection: str) -> InvalidQuery:
    if not filterable:
        return InvalidQuery(
            f"Collection '{collection}' has no filterable keys, so it cannot filter on '{key}'."
        )
    return InvalidQuery(
        f"Collection '{collection}' cannot filter on '{key}'; its filterable keys are "
        f"{', '.join(sorted(filterable))}."
    )


def _plain_value(text: str) -> Scalar:
    """An int, float or bool when `text` is that value's plain form, else the text."""
    if text in ("true", "false"):
        return text == "true"
    if _PLAIN_INT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) and repr(number) == text else text


def _number(text: str) -> int | float | None:
    """The number `text` reads as (any form), or None."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# -- lowering for the backends ---------------------------------------------------------------------


def _clause(condition: Condition) -> Clause:
    if isinstance(condition, Equals):
        return _equality(condition.key, condition.value)
    if isinstance(condition, Range):
        return condition
    # same order, each once; keyed by type too, since True == 1 == 1.0 in Python
    values = tuple(v for _, v in dict.fromkeys((type(v), v) for v in condition.values))
    if len(values) == 1:
        return _equality(condition.key, values[0])
    if all(isinstance(v, str) for v in values) or all(_is_int(v) for v in values):
        return AnyOf(condition.key, values)
    return Either(tuple(_equality(condition.key, v) for v in values))


def _equality(key: str, value: Scalar) -> Equals | Range:
    # Qdrant matches text, integers and booleans; a float equality is the one-point range.
    if isinstance(value, float):
        return Range(key, gte=value, lte=value)
    return Equals(key, value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def keep_filterable(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """`new` metadata with the FILTERABLE_KEY entry of `old` (the store's own record: a
    metadata replacement cannot change or drop it)."""
    kept = {key: value for key, value in new.items() if key != FILTERABLE_KEY}
    if FILTERABLE_KEY in old:
        kept[FILTERABLE_KEY] = old[FILTERABLE_KEY]
    return kept


def recorded_fields(metadata: Mapping[str, Any]) -> dict[str, str] | None:
    """The filterable fields a collection's metadata records, or None if it records none."""
    recorded = metadata.get(FILTERABLE_KEY)
    if not isinstance(recorded, Mapping):
        return None
    return {str(key): str(kind) for key, kind in recorded.items()}


__all__ = [
    "ALL",
    "FIELD_KINDS",
    "FILTERABLE_KEY",
    "RANGE_OPERATORS",
    "AnyOf",
    "Clause",
    "Condition",
    "Either",
    "Equals",
    "FieldKind",
    "Range",
    "Where",
    "WhereLike",
    "filterable_fields",
    "keep_filterable",
    "parse_conditions",
    "recorded_fields",
]
