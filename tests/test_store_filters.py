"""Typed `where` filters: parsed and validated in store/filters.py, run by every backend (Qdrant
Edge, qdrant-client's local mode, a real server when QDRANT_URL is set) with the same results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DIMS, Backend, create, point, unit_vector

from jointspace.errors import JointspaceError
from jointspace.store.base import Store
from jointspace.store.edge import EdgeStore
from jointspace.store.filters import (
    AnyOf,
    Either,
    Equals,
    Range,
    Where,
    parse_conditions,
)
from jointspace.store.server import ServerStore
from jointspace.store.transfer import copy_collection

FIELDS = {"width": "integer", "height": "integer", "ratio": "float", "flag": "bool"}
FILTERABLE = "flag, height, key, labels, ratio, split, width"


def fill(store: Store, name: str) -> None:
    """Five points whose payloads exercise every kind of field (point n at n*10 degrees, so
    results come back in point order)."""
    store.create_collection(name, DIMS, {"model": "m1"}, ["key", "split", "labels"], FIELDS)
    rows: list[dict[str, Any]] = [
        {"labels": ["animals", "birds"], "width": 120, "height": 80, "ratio": 1.5, "flag": True},
        {"labels": ["animals"], "width": 640, "height": 480, "ratio": 1.3, "flag": False},
        {"labels": ["food", "1999"], "width": 200, "height": 200, "ratio": 1.0, "flag": True},
        # flag 1 is an integer, not true: a boolean filter must not match it
        {"labels": ["birds"], "width": 1000, "height": 50, "ratio": 20.0, "flag": 1},
        {"labels": [], "width": None, "height": None, "ratio": None},  # a text-only item
    ]
    store.upsert(
        name,
        [
            point(n, degrees=10 * n, key=f"k{n:03d}", split="train" if n % 2 else "test", **row)
            for n, row in enumerate(rows)
        ],
    )


def found(store: Store, name: str, where: Any) -> list[int]:
    """The numbers of the points that pass `where`, best first (= in point order)."""
    return [h.payload["n"] for h in store.search(name, "unit", unit_vector(0), 10, where)]


# -- against every backend -----------------------------------------------------------------------


def test_repeated_conditions_on_one_key_all_hold(store: Store, backend: Backend) -> None:
    """Issue 10: `--where labels=zzz --where labels=birds` kept only the last condition."""
    fill(store, backend.name)
    assert found(store, backend.name, {"labels": {"all": ["animals", "birds"]}}) == [0]
    assert found(store, backend.name, {"labels": {"all": ["zzz", "birds"]}}) == []
    assert found(store, backend.name, parse_conditions(["labels=zzz", "labels=birds"])) == []
    assert found(store, backend.name, parse_conditions(["labels=birds", "labels=animals"])) == [0]


def test_several_keys_all_hold(store: Store, backend: Backend) -> None:
    fill(store, backend.name)
    assert found(store, backend.name, {"labels": "animals"}) == [0, 1]
    assert found(store, backend.name, {"labels": "animals", "split": "test"}) == [0]
    assert found(store, backend.name, {"labels": "birds", "width": {"gte": 500}}) == [3]
    assert found(store, backend.name, {}) == [0, 1, 2, 3, 4]
    assert found(store, backend.name, None) == [0, 1, 2, 3, 4]


def test_any_of(store: Store, backend: Backend) -> None:
    fill(store, backend.name)
    assert found(store, backend.name, {"labels": ["birds", "food"]}) == [0, 2, 3]
    assert found(store, backend.name, parse_conditions(["labels=food,birds"])) == [0, 2, 3]
    assert found(store, backend.name, {"key": ["k001", "k004", "k999"]}) == [1, 4]
    assert found(store, backend.name, {"width": [120, 1000]}) == [0, 3]
    # (birds or food) and animals
    both = {"labels": {"all": [["birds", "food"], "animals"]}}
    assert found(store, backend.name, both) == [0]


def test_ranges(store: Store, backend: Backend) -> None:
    fill(store, backend.name)
    assert found(store, backend.name, {"width": {"gte": 200, "lt": 1000}}) == [1, 2]
    assert found(store, backend.name, {"width": {"gt": 200}}) == [1, 3]
    assert found(store, backend.name, {"height": {"lte": 80}}) == [0, 3]
    assert found(store, backend.name, {"width": {"gte": 199.5, "lte": 200.5}}) == [2]
    assert found(store, backend.name, {"ratio": {"gt": 1.25, "lt": 2}}) == [0, 1]
    assert found(store, backend.name, parse_conditions(["width>=200", "width<1000"])) == [1, 2]
    assert found(store, backend.name, parse_conditions(["ratio > 1.4"])) == [0, 3]


def test_numbers_and_booleans_compare_as_such(store: Store, backend: Backend) -> None:
    fill(store, backend.name)
    assert found(store, backend.name, {"width": 640}) == [1]
    assert found(store, backend.name, {"width": 640.0}) == [1]  # a float equal to an int
    assert found(store, backend.name, {"width": "640"}) == [1]  # text read as a number
    assert found(store, backend.name, {"ratio": 1.5}) == [0]
    assert found(store, backend.name, {"ratio": [1.0, 20.0]}) == [2, 3]
    assert found(store, backend.name, {"flag": True}) == [0, 2]
    assert found(store, backend.name, {"flag": False}) == [1]
    assert found(store, backend.name, parse_conditions(["flag=true", "width=200"])) == [2]
    # A number given for a keyword field is matched as its text (the label "1999").
    assert found(store, backend.name, {"labels": 1999}) == [2]
    assert found(store, backend.name, parse_conditions(["labels=1999"])) == [2]
    assert found(store, backend.name, parse_conditions(["key=k003"])) == [3]


def test_unknown_key_names_the_filterable_ones(store: Store, backend: Backend) -> None:
    fill(store, backend.name)
    with pytest.raises(JointspaceError) as err:
        found(store, backend.name, {"labels": "birds", "colour": "red"})
    assert str(err.value) == (
        f"Collection '{backend.name}' cannot filter on 'colour'; its filterable keys are "
        f"{FILTERABLE}."
    )
    assert store.filterable_fields(backend.name) == {
        "key": "keyword",
        "split": "keyword",
        "labels": "keyword",
        **FIELDS,
    }


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"width": {"ge": 200}}, "Unknown where operator 'ge' for 'width'; use gt, gte, lt or lte"),
        ({"width": {"gte": "big"}}, "range bound gte of 'width' must be a number, not 'big'"),
        ({"labels": {"gte": 1}}, "'labels' in collection '.*' holds text, so it takes no range"),
        ({"flag": {"lt": 1}}, "'flag' in collection '.*' holds true/false, so it takes no range"),
        ({"labels": []}, "condition for 'labels' is an empty list"),
        ({"width": {}}, "where range for 'width' is empty"),
        ({"labels": {"all": []}}, r"\{'all': ...\} for 'labels' takes a non-empty list"),
        ({"width": "wide"}, "'width' in collection '.*' holds numbers, so 'wide' cannot match"),
        ({"flag": "yes"}, "'flag' in collection '.*' holds true/false, so 'yes' cannot match"),
        ({"width": True}, "'width' in collection '.*' holds numbers, so True cannot match"),
        ({"labels": None}, "condition for 'labels' must be a value, a list of values or a range"),
        ({"labels": [["a"]]}, "list for 'labels' may hold text, numbers and booleans"),
        ({"": "x"}, "keys are payload field names, not ''"),
        (["labels", "birds"], "maps payload keys to conditions"),
        ({"ratio": float("nan")}, "not a finite number"),
    ],
)
def test_malformed_where_is_one_sentence(
    store: Store, backend: Backend, where: Any, message: str
) -> None:
    fill(store, backend.name)
    with pytest.raises(JointspaceError, match=message) as err:
        found(store, backend.name, where)
    text = str(err.value)
    one_sentence = "\n" not in text and ". " not in text.replace("e.g. ", "")
    assert one_sentence and text.endswith("."), text


def test_filterable_fields_are_recorded_kept_and_copied(
    store: Store, backend: Backend, tmp_path: Path
) -> None:
    fill(store, backend.name)
    recorded = store.info(backend.name).metadata["filterable"]
    assert recorded == store.filterable_fields(backend.name)
    store.set_metadata(backend.name, {"model": "m2"})  # a replacement keeps the record
    assert store.info(backend.name).metadata == {"model": "m2", "filterable": recorded}
    store.set_alias(f"{backend.name}-live", backend.name)
    assert store.filterable_fields(f"{backend.name}-live") == recorded
    assert found(store, f"{backend.name}-live", {"width": {"gte": 1000}}) == [3]
    # A copy (to the other kind of store) can filter on the same fields: it was indexed alike.
    other = ServerStore.local(tmp_path / "copy") if backend.kind == "edge" else None
    other = other or EdgeStore(tmp_path / "copy")
    with other:
        copy_collection(store, backend.name, other, "copied")
        assert other.filterable_fields("copied") == recorded
        assert found(other, "copied", {"labels": "birds", "ratio": {"gte": 2}}) == [3]


def test_fields_added_later_are_indexed_recorded_and_filter(store: Store, backend: Backend) -> None:
    """An ingest makes a manifest's own columns filterable as they appear."""
    create(store, backend.name)
    store.upsert(
        backend.name,
        [point(n, photographer=p, year=y) for n, p, y in [(0, "ann", 1990), (1, "bo", 2010)]],
    )
    with pytest.raises(JointspaceError, match="photographer"):
        found(store, backend.name, {"photographer": "ann"})
    store.add_filterable_fields(backend.name, {"photographer": "keyword", "year": "integer"})
    store.add_filterable_fields(backend.name, {"year": "float"})  # already there: kept as it was
    assert store.filterable_fields(backend.name) == {
        "split": "keyword",
        "labels": "keyword",
        "photographer": "keyword",
        "year": "integer",
    }
    assert found(store, backend.name, {"photographer": "ann"}) == [0]
    assert found(store, backend.name, {"year": {"gte": 2000}}) == [1]


def test_a_collection_that_records_no_fields_filters_on_any_key(
    store: Store, backend: Backend
) -> None:
    """Made before filterable fields were recorded: any key is taken as it is, as before."""
    fill(store, backend.name)
    if isinstance(store, EdgeStore):
        path = store.home / "collections" / backend.name / "collection.json"
        meta = json.loads(path.read_text())
        del meta["metadata"]["filterable"]
        path.write_text(json.dumps(meta))
    else:
        assert isinstance(store, ServerStore)
        store.client.update_collection(backend.name, metadata={"filterable": None})
        store._forget(backend.name)  # as a store opened afterwards would see it
    assert store.filterable_fields(backend.name) is None
    assert found(store, backend.name, {"n": {"gte": 3}, "labels": "birds"}) == [3]
    assert found(store, backend.name, {"split": "train"}) == [1, 3]


# -- parsing command-line conditions ------------------------------------------------------------


def test_parse_conditions() -> None:
    assert parse_conditions(["labels=a,b", "width>=200", "labels=birds"]) == {
        "labels": {"all": [["a", "b"], "birds"]},
        "width": {"gte": 200},
    }
    assert parse_conditions(["w>1", "w<2.5", "w<=3", "w >= -4", "h=5"]) == {
        "w": {"all": [{"gt": 1}, {"lt": 2.5}, {"lte": 3}, {"gte": -4}]},
        "h": 5,
    }
    assert parse_conditions([]) == {}


def test_parse_conditions_types_only_plain_values() -> None:
    parsed = parse_conditions(
        ["i=-12", "f=1.5", "t=true", "b=false", "zeros=007", "pad=1.50", "cap=True", "sci=1e3"]
    )
    assert parsed == {
        "i": -12,
        "f": 1.5,
        "t": True,
        "b": False,
        "zeros": "007",  # not 7: matched as text it must stay exactly as written
        "pad": "1.50",
        "cap": "True",
        "sci": "1e3",
    }
    # but a range reads any number
    assert parse_conditions(["w>=1e3", "r<1.50"]) == {"w": {"gte": 1000.0}, "r": {"lt": 1.5}}


def test_parse_conditions_text() -> None:
    assert parse_conditions(["text=a=b", "title = hello world ", r"t=x\,y,z"]) == {
        "text": "a=b",
        "title": "hello world",
        "t": ["x,y", "z"],
    }


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("labels", "is not KEY=VALUE or KEY>=NUMBER"),
        ("=birds", "is not KEY=VALUE or KEY>=NUMBER"),
        ("labels=", "has an empty value"),
        ("labels=a,,b", "has an empty value"),
        ("width>=wide", "compares with >=, so its value must be a number"),
        ("width<", "compares with <, so its value must be a number"),
    ],
)
def test_parse_conditions_errors(condition: str, message: str) -> None:
    with pytest.raises(JointspaceError, match=message):
        parse_conditions([condition])


# -- the typed form ------------------------------------------------------------------------------


def test_where_validates_and_lowers() -> None:
    where = Where.of({"labels": {"all": [["a", "b"], "c"]}, "w": {"gte": 1, "lt": 2}})
    assert where.conditions == (
        AnyOf("labels", ("a", "b")),
        Equals("labels", "c"),
        Range("w", gte=1, lt=2),
    )
    assert where.keys() == ["labels", "w"]
    assert Where.of(where) is where and not Where.of(None) and not Where.of({})
    # What backends translate: float equality as a one-point range; an any-of that Qdrant
    # cannot match at once as alternatives; duplicates once (True is not 1).
    lowered = Where.of({"r": 2.5, "x": [1, 1, True, 2.5], "y": ["a"], "z": [1, 2]}).clauses()
    assert lowered == (
        Range("r", gte=2.5, lte=2.5),
        Either((Equals("x", 1), Equals("x", True), Range("x", gte=2.5, lte=2.5))),
        Equals("y", "a"),
        AnyOf("z", (1, 2)),
    )


def test_where_for_fields_types_values() -> None:
    fields = {"labels": "keyword", "w": "integer", "f": "bool"}
    typed = Where.of({"labels": [1999, True, 1.5], "w": "12", "f": "TRUE"}).for_fields(fields, "c")
    assert typed.conditions == (
        AnyOf("labels", ("1999", "true", "1.5")),
        Equals("w", 12),
        Equals("f", True),
    )
    anything = Where.of({"other": {"gt": 1}})
    assert anything.for_fields(None, "c") is anything  # no record: taken as it is
    with pytest.raises(JointspaceError, match="'c' has no filterable keys, so it cannot filter"):
        anything.for_fields({}, "c")
