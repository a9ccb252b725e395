"""The store contract, run against every backend: Qdrant Edge on a temporary folder,
qdrant-client's local mode as the server stand-in, and a real server when QDRANT_URL is set."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import DIMS, Backend, create, pid, point, unit_vector

import jointspace
from jointspace.errors import JointspaceError
from jointspace.store import ServerOptions, open_store
from jointspace.store.base import Store
from jointspace.store.edge import EdgeStore
from jointspace.store.server import ServerStore

SRC_DIR = str(Path(jointspace.__file__).resolve().parents[1])
FILTERABLE = {"split": "keyword", "labels": "keyword"}  # what conftest's create() records


# -- collections ---------------------------------------------------------------------------------


def test_create_has_list_info_drop(store: Store, backend: Backend) -> None:
    name = backend.name
    assert not store.has_collection(name)
    create(store, name, model="m1", dim=4)
    assert store.has_collection(name)
    assert name in store.list_collections()
    info = store.info(name)
    assert (info.name, info.points, dict(info.vectors)) == (name, 0, DIMS)
    assert info.metadata == {"model": "m1", "dim": 4, "filterable": FILTERABLE}
    store.drop_collection(name)
    assert not store.has_collection(name)
    assert name not in store.list_collections()


def test_list_is_sorted(store: Store, backend: Backend) -> None:
    names = [f"{backend.name}-b", f"{backend.name}-a", f"{backend.name}-c"]
    for name in names:
        create(store, name)
    listed = [n for n in store.list_collections() if n.startswith(backend.name)]
    assert listed == sorted(names)


def test_create_twice_raises(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    with pytest.raises(JointspaceError, match="already exists"):
        create(store, backend.name)


def test_missing_collection_raises(store: Store, backend: Backend) -> None:
    missing = f"{backend.name}-missing"
    for call in (store.info, store.drop_collection, lambda n: store.set_metadata(n, {})):
        with pytest.raises(JointspaceError, match="no collection"):
            call(missing)


def test_invalid_name_raises(store: Store) -> None:
    with pytest.raises(JointspaceError, match="Invalid collection name"):
        store.has_collection("../escape")


# -- points --------------------------------------------------------------------------------------


def test_upsert_count_and_reupsert_does_not_duplicate(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    store.upsert(backend.name, [point(i, degrees=10 * i) for i in range(5)])
    assert store.count(backend.name) == 5
    store.upsert(backend.name, [point(i, degrees=10 * i, again=True) for i in range(3, 7)])
    assert store.count(backend.name) == 7
    assert store.info(backend.name).points == 7
    replaced = {p.id: p.payload for p in store.scroll(backend.name)}
    assert replaced[pid(3)].get("again") is True  # upsert replaced the payload


def test_existing_ids(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    store.upsert(backend.name, [point(i) for i in range(3)])
    asked = [pid(1), pid(2), pid(3), pid(4)]
    assert store.existing_ids(backend.name, asked) == {pid(1), pid(2)}
    # Ids come back as given, even when not in canonical (lower-case) form.
    assert store.existing_ids(backend.name, [pid(0).upper()]) == {pid(0).upper()}
    assert store.existing_ids(backend.name, []) == set()


def test_retrieve_by_id(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    store.upsert(backend.name, [point(i, degrees=10 * i, image=i != 1) for i in range(3)])
    [one] = store.retrieve(backend.name, [pid(1).upper()])
    assert one.id == pid(1).upper() and one.payload["n"] == 1  # the id as given
    assert set(one.vectors) == {"unit", "text"}  # no image vector: none stored
    found = store.retrieve(backend.name, [pid(0), pid(2), pid(9), "not-a-uuid"])
    assert sorted(p.payload["n"] for p in found) == [0, 2]  # unknown ids are simply absent
    assert store.retrieve(backend.name, []) == []


def test_search_orders_by_cosine(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    angles = {0: 50.0, 1: 0.0, 2: 120.0, 3: 20.0, 4: 90.0}
    store.upsert(backend.name, [point(n, degrees=a) for n, a in angles.items()])
    hits = store.search(backend.name, "unit", unit_vector(0.0), k=4)
    assert [h.id for h in hits] == [pid(1), pid(3), pid(0), pid(4)]
    for hit, n in zip(hits, (1, 3, 0, 4), strict=True):
        assert hit.score == pytest.approx(math.cos(math.radians(angles[n])), abs=1e-5)
        assert hit.payload["n"] == n
    # A query that is not unit length gives the same cosine ranking.
    scaled = store.search(backend.name, "unit", [5.0, 0.0, 0.0, 0.0], k=1)
    assert scaled[0].id == pid(1)
    assert scaled[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_wrong_vector_raises(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    with pytest.raises(JointspaceError, match="3 dimensions"):
        store.search(backend.name, "unit", [1.0, 0.0, 0.0], k=3)
    with pytest.raises(JointspaceError, match="no 'audio' vector"):
        store.search(backend.name, "audio", unit_vector(0), k=3)


def test_point_without_image_vector(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    store.upsert(backend.name, [point(1, degrees=0, image=False), point(2, degrees=60)])
    by_image = store.search(backend.name, "image", unit_vector(0), k=10)
    assert [h.id for h in by_image] == [pid(2)]
    by_unit = store.search(backend.name, "unit", unit_vector(0), k=10)
    assert [h.id for h in by_unit] == [pid(1), pid(2)]
    stored = {p.id: p for p in store.scroll(backend.name)}
    assert set(stored[pid(1)].vectors) == {"unit", "text"}


def test_where_on_keyword_and_list_fields(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    store.upsert(
        backend.name,
        [
            point(1, degrees=0, split="train", labels=["animals", "birds"]),
            point(2, degrees=10, split="test", labels=["animals"]),
            point(3, degrees=20, split="train", labels=["food"]),
            point(4, degrees=30, split="train"),
        ],
    )

    def ids(where: dict[str, str]) -> list[str]:
        return [h.id for h in store.search(backend.name, "unit", unit_vector(0), 10, where)]

    assert ids({"split": "train"}) == [pid(1), pid(3), pid(4)]
    assert ids({"labels": "animals"}) == [pid(1), pid(2)]
    assert ids({"labels": "birds"}) == [pid(1)]
    assert ids({"labels": "animals", "split": "test"}) == [pid(2)]
    assert ids({"labels": "vehicles"}) == []
    assert ids({}) == [pid(1), pid(2), pid(3), pid(4)]


def test_scroll_returns_every_point_with_vectors(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    points = [point(i, degrees=7 * i, image=i % 2 == 0) for i in range(23)]
    store.upsert(backend.name, points)
    scrolled = list(store.scroll(backend.name, batch_size=5))
    assert [p.id for p in scrolled] == sorted(p.id for p in points)
    expected = {p.id: p for p in points}
    for got in scrolled:
        want = expected[got.id]
        assert got.payload == want.payload
        assert set(got.vectors) == set(want.vectors)
        for vname, vec in want.vectors.items():
            assert list(got.vectors[vname]) == pytest.approx(vec, abs=1e-6)


def test_metadata_round_trip_survives_reopen(backend: Backend) -> None:
    metadata = {"model": "m1", "checkpoint": {"sha256": "ab" * 32, "dims": [512, 384]}, "n": 3}
    with backend.open() as store:
        store.create_collection(backend.name, DIMS, metadata, ["labels"])
        store.upsert(backend.name, [point(1), point(2, image=False)])
    with backend.open() as store:
        info = store.info(backend.name)
        assert info.metadata == {**metadata, "filterable": {"labels": "keyword"}}
        assert info.points == 2
        assert dict(info.vectors) == DIMS
        # set_metadata replaces: keys left out are gone, except the store's filterable record.
        store.set_metadata(backend.name, {"model": "m2", "filterable": {"n": "integer"}})
    with backend.open() as store:
        assert store.info(backend.name).metadata == {
            "model": "m2",
            "filterable": {"labels": "keyword"},
        }
        assert store.search(backend.name, "image", unit_vector(0), 5)[0].id == pid(1)


def test_closed_store_is_unusable(backend: Backend) -> None:
    store = backend.open()
    create(store, backend.name)
    store.close()
    with pytest.raises(Exception):  # noqa: B017 - what it raises is the backend's business
        store.count(backend.name)


# -- Edge: locking across processes --------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from jointspace.store.base import Point
    from jointspace.store.edge import EdgeStore

    store = EdgeStore(Path(sys.argv[1]))
    ids = sys.argv[2:]
    store.upsert("items", [Point(i, {"unit": [1.0, 0.0, 0.0, 0.0]}, {"k": i}) for i in ids])
    print("holding", flush=True)
    time.sleep(120)
    """
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC_DIR, env.get("PYTHONPATH")) if p)
    return env


def test_edge_collection_locked_by_another_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with EdgeStore(home) as store:
        create(store, "items")
    ids = [pid(i) for i in range(10)]
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home), *ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.strip() == "holding", child.stderr.read() if child.stderr else ""
        with EdgeStore(home) as store:
            assert store.has_collection("items")  # reading the marker needs no lock
            for call in (
                lambda: store.count("items"),
                lambda: store.search("items", "unit", unit_vector(0), 3),
                lambda: store.drop_collection("items"),
            ):
                with pytest.raises(JointspaceError, match="in use by another process") as err:
                    call()
                assert "'items'" in str(err.value) and str(home) in str(err.value)
    finally:
        # kill -9: the lock must go with the process, and its flushed upsert must survive.
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with EdgeStore(home) as store:
        assert store.count("items") == len(ids)
        assert store.existing_ids("items", ids) == set(ids)


def test_edge_second_store_in_same_process_is_refused(tmp_path: Path) -> None:
    with EdgeStore(tmp_path) as first, EdgeStore(tmp_path) as second:
        create(first, "items")
        with pytest.raises(JointspaceError, match="in use"):
            second.count("items")
    with EdgeStore(tmp_path) as again:  # close() released the lock
        assert again.count("items") == 0


def test_edge_interrupted_create_is_cleaned_up(tmp_path: Path) -> None:
    with EdgeStore(tmp_path) as store:
        create(store, "items")
    (tmp_path / "collections" / "items" / "collection.json").unlink()  # as if killed mid-create
    with EdgeStore(tmp_path) as store:
        assert not store.has_collection("items")
        assert store.list_collections() == []
        create(store, "items")
        assert store.count("items") == 0


def test_local_mode_folder_in_use(tmp_path: Path) -> None:
    with ServerStore.local(tmp_path), pytest.raises(JointspaceError, match="in use"):
        ServerStore.local(tmp_path)


# -- server connection errors --------------------------------------------------------------------

SECRET = "s3cr3t-api-key-do-not-print"


def _full_text(exc: BaseException) -> str:
    """The message plus the whole printed traceback, chained exceptions included."""
    return str(exc) + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def test_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(JointspaceError, match="Cannot reach the Qdrant server at") as err:
        open_store(url="http://127.0.0.1:9", options=ServerOptions(api_key=SECRET))
    assert "http://127.0.0.1:9" in str(err.value)
    assert "docker compose up -d" in str(err.value)
    assert SECRET not in _full_text(err.value)
    assert SECRET not in caplog.text


class _Answers(BaseHTTPRequestHandler):
    """A stand-in HTTP server that answers every request with `status`."""

    status = 401

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"status": {"error": "Must provide an API key or an Authorization bearer token"}}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_answering(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a local HTTP server answering every request with the test's status."""
    handler = type("Handler", (_Answers,), {"status": request.param})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("http_answering", "message"),
    [(401, "refused the API key"), (403, "refused the API key"), (404, "not answer like a Qdrant")],
    indirect=["http_answering"],
)
def test_server_answering_with_an_error(
    http_answering: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(JointspaceError, match=message) as err:
        ServerStore.connect(http_answering, ServerOptions(api_key=SECRET))
    assert http_answering in str(err.value)
    assert SECRET not in _full_text(err.value)
    assert SECRET not in caplog.text


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    with open_store(home=tmp_path) as store:
        assert isinstance(store, EdgeStore)
        create(store, "items")
    assert (tmp_path / "collections" / "items" / "collection.json").is_file()
    assert (tmp_path / "collections" / "items" / "shard").is_dir()


# -- bulk uploads --------------------------------------------------------------------------------


def test_bulk_upload_brackets_work(store: Store, backend: Backend) -> None:
    create(store, backend.name)
    with store.bulk(backend.name):
        store.upsert(backend.name, [point(i, degrees=i) for i in range(40)])
        # Searches keep working during a bulk upload.
        assert store.search(backend.name, "unit", unit_vector(0), 1)[0].id == pid(0)
    assert store.count(backend.name) == 40
    store.end_bulk(backend.name)  # a second end (or one without a begin) is harmless
    assert store.count(backend.name) == 40


# -- aliases -------------------------------------------------------------------------------------


def test_alias_resolves_and_switches(store: Store, backend: Backend) -> None:
    first, second, alias = f"{backend.name}-v1", f"{backend.name}-v2", f"{backend.name}-live"
    create(store, first, model="m1")
    create(store, second, model="m2")
    store.upsert(first, [point(i) for i in range(3)])
    store.upsert(second, [point(i) for i in range(10, 15)])
    assert alias not in store.list_aliases()
    assert store.resolve(alias) == alias  # not an alias: the name itself

    store.set_alias(alias, first)
    assert store.list_aliases()[alias] == first
    assert store.resolve(alias) == first
    assert store.resolve(first) == first
    assert store.has_collection(alias)
    assert alias not in store.list_collections()  # an alias is not a collection
    assert store.count(alias) == 3
    assert store.info(alias).metadata == {"model": "m1", "filterable": FILTERABLE}
    assert store.existing_ids(alias, [pid(1), pid(11)]) == {pid(1)}

    store.set_alias(alias, second)  # the switch
    assert store.resolve(alias) == second
    assert store.count(alias) == 5
    assert {p.id for p in store.scroll(alias)} == {pid(i) for i in range(10, 15)}
    assert store.search(alias, "unit", unit_vector(0), 10)[0].id in {pid(i) for i in range(10, 15)}
    store.upsert(alias, [point(20)])  # writes through an alias land in its collection
    assert store.count(second) == 6
    store.set_metadata(alias, {"model": "m2b"})
    assert store.info(second).metadata == {"model": "m2b", "filterable": FILTERABLE}

    store.set_alias(alias, second)  # pointing it where it points already changes nothing
    store.delete_alias(alias)
    assert alias not in store.list_aliases()
    assert not store.has_collection(alias)
    assert store.count(first) == 3 and store.count(second) == 6  # collections stay


def test_alias_mistakes_raise(store: Store, backend: Backend) -> None:
    first, second, alias = f"{backend.name}-v1", f"{backend.name}-v2", f"{backend.name}-live"
    create(store, first)
    create(store, second)
    with pytest.raises(JointspaceError, match="no collection"):
        store.set_alias(alias, f"{backend.name}-missing")
    with pytest.raises(JointspaceError, match="cannot become an alias"):
        store.set_alias(second, first)  # the name of a collection
    store.set_alias(alias, first)
    with pytest.raises(JointspaceError, match="itself an alias"):
        store.set_alias(f"{backend.name}-other", alias)
    with pytest.raises(JointspaceError, match="already exists"):
        create(store, alias)
    with pytest.raises(JointspaceError, match="is an alias of collection"):
        store.drop_collection(alias)
    with pytest.raises(JointspaceError, match="no alias"):
        store.delete_alias(f"{backend.name}-nothing")
    with pytest.raises(JointspaceError, match="Invalid collection name"):
        store.set_alias("../escape", first)
    assert store.list_aliases()[alias] == first  # the failed calls changed nothing


def test_dropping_a_collection_drops_its_aliases(store: Store, backend: Backend) -> None:
    first, second = f"{backend.name}-v1", f"{backend.name}-v2"
    create(store, first)
    create(store, second)
    store.set_alias(f"{backend.name}-a", first)
    store.set_alias(f"{backend.name}-b", second)
    store.drop_collection(first)
    aliases = {k: v for k, v in store.list_aliases().items() if k.startswith(backend.name)}
    assert aliases == {f"{backend.name}-b": second}


def test_aliases_survive_reopen(backend: Backend) -> None:
    with backend.open() as store:
        create(store, f"{backend.name}-v1")
        store.set_alias(f"{backend.name}-live", f"{backend.name}-v1")
    with backend.open() as store:
        assert store.resolve(f"{backend.name}-live") == f"{backend.name}-v1"


def test_alias_switch_under_a_concurrent_reader(store: Store, backend: Backend) -> None:
    """A reader searching through the alias while a new collection fills and the alias is
    switched back and forth sees a complete collection every time: the old point count or the
    new one, never a partial fill; and every search that starts after a switch returned sees
    the collection switched to."""
    old, new, alias = f"{backend.name}-v1", f"{backend.name}-v2", f"{backend.name}-live"
    old_count, new_count = 30, 45
    create(store, old)
    store.upsert(old, [point(i, degrees=i) for i in range(old_count)])
    store.set_alias(alias, old)

    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(len(store.search(alias, "unit", unit_vector(0), k=100)))
        except Exception:
            errors.append(traceback.format_exc())

    def reads_after(switch_returned: int) -> list[int]:
        """Wait for a few searches that started after a switch; return them."""
        for _ in range(1000):
            if len(seen) >= switch_returned + 3 or errors:
                break
            threading.Event().wait(0.01)
        # The first one may have started before the switch returned.
        return seen[switch_returned + 1 :]

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        create(store, new)
        for start in range(0, new_count, 5):  # the new collection fills in steps
            batch = range(1000 + start, 1000 + start + 5)
            store.upsert(new, [point(i, degrees=i % 90) for i in batch])
        for target, count in ((new, new_count), (old, old_count), (new, new_count)):
            store.set_alias(alias, target)
            later = reads_after(len(seen))
            assert later and set(later) == {count}, (target, later[:10])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert set(seen) == {old_count, new_count}


def test_edge_alias_switch_reaches_a_store_already_open(tmp_path: Path) -> None:
    """The alias file is re-read when it changes: a store that resolved the alias before
    follows a switch made by another store at its next call."""
    with EdgeStore(tmp_path) as store:
        for name, n in (("v1", 2), ("v2", 4)):
            create(store, name)
            store.upsert(name, [point(i) for i in range(n)])
        store.set_alias("live", "v1")
    reader = EdgeStore(tmp_path)
    try:
        assert reader.count("live") == 2  # opens v1 (and holds it)
        with EdgeStore(tmp_path) as switcher:  # switching needs no shard, only the alias file
            switcher.set_alias("live", "v2")
        assert reader.count("live") == 4
        assert json.loads((tmp_path / "aliases.json").read_text())["aliases"] == {"live": "v2"}
    finally:
        reader.close()


def test_edge_alias_file_is_replaced_atomically(tmp_path: Path) -> None:
    with EdgeStore(tmp_path) as store:
        create(store, "v1")
        store.set_alias("live", "v1")
        store.set_alias("other", "v1")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert json.loads((tmp_path / "aliases.json").read_text())["aliases"] == {
        "live": "v1",
        "other": "v1",
    }


def test_base_store_defaults_without_aliases() -> None:
    """A backend that overrides none of the optional methods: no aliases, names resolve to
    themselves, setting an alias raises a clear error, bulk hooks do nothing."""
    bare_cls = type(
        "BareStore", (Store,), {m: lambda *a, **k: None for m in Store.__abstractmethods__}
    )
    bare = bare_cls()
    assert bare.list_aliases() == {}
    assert bare.resolve("items") == "items"
    with pytest.raises(JointspaceError, match="BareStore does not support aliases"):
        bare.set_alias("live", "items")
    with pytest.raises(JointspaceError, match="does not support aliases"):
        bare.delete_alias("live")
    with bare.bulk("items"):
        pass
