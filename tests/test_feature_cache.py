"""The feature cache under bad conditions: a damaged file is moved aside and rebuilt with a
warning, damaged rows are recomputed, and a full disk or an unusable location is one sentence
that names the path."""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from jointspace.corpus.item import Item, text_hash
from jointspace.errors import JointspaceError
from jointspace.pipeline.backbone import Backbone
from jointspace.pipeline.features import EncodedItem, FeatureCache, encode_items, encode_texts

TEXTS = [f"caption number {i}: a {colour} square" for i, colour in enumerate(["red", "blue"] * 40)]
ASIDE = re.compile(r"\.corrupt-\d{8}-\d{6}(-\d+)?$")


@pytest.fixture()
def images(tmp_path: Path) -> list[Item]:
    folder = tmp_path / "images"
    folder.mkdir()
    items = []
    for i, colour in enumerate(["red", "green", "blue", "yellow"]):
        Image.new("RGB", (40 + i, 30), colour).save(folder / f"{colour}.png")
        items.append(Item("src", colour, image=str(folder / f"{colour}.png"), text=TEXTS[i]))
    return items


def _use(cache: FeatureCache, backbone: Backbone, items: list[Item]) -> tuple[np.ndarray, list]:
    """What a run does with a cache: text features, then image and text features of items."""
    texts = encode_texts(TEXTS, backbone, cache)
    encoded = [e for batch in encode_items(items, backbone, cache, workers=0) for e in batch]
    assert all(isinstance(e, EncodedItem) for e in encoded)
    return texts, [(e.image_features, e.width, e.height) for e in encoded]


def _assert_same(a: tuple[np.ndarray, list], b: tuple[np.ndarray, list]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    for (x, xw, xh), (y, yw, yh) in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(x, y)
        assert (xw, xh) == (yw, yh)


@pytest.fixture()
def filled(
    tiny: Backbone, images: list[Item], tmp_path: Path
) -> tuple[Path, tuple[np.ndarray, list]]:
    """A cache file with the features of TEXTS and the images, and those features."""
    path = tmp_path / "home" / "features" / "abc.sqlite"
    cache = FeatureCache(path)
    expected = _use(cache, tiny, images)
    cache.close()
    gc.collect()  # no connection left open: the file is whole, with no write-ahead log
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return path, expected


def test_encoding_in_process_leaves_no_connection_open(
    tiny: Backbone, images: list[Item], tmp_path: Path
) -> None:
    """The image reader's own connection is closed when `encode_items` ends, so a closed cache
    is a whole file (checkpointed, no -wal or -shm left behind)."""
    cache = FeatureCache(tmp_path / "cache.sqlite")
    _use(cache, tiny, images)
    cache.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.sqlite", "images"]


def _rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT kind, count(*) FROM features GROUP BY kind"))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jointspace"]


def _damage(path: Path, how: str) -> None:
    good = path.read_bytes()
    rng = np.random.default_rng(7)
    if how == "truncated to half":
        path.write_bytes(good[: len(good) // 2])
    elif how == "truncated mid-page":
        path.write_bytes(good[:-100])
    elif how == "header only":
        path.write_bytes(good[:100])
    elif how == "random bytes":
        path.write_bytes(rng.bytes(len(good)))
    elif how == "not a database":
        path.write_text("kind,hash,vector\nimage,abc,0.1 0.2\n")
    elif how == "garbled header":
        garbled = bytearray(good)
        garbled[16:32] = rng.bytes(16)
        path.write_bytes(bytes(garbled))
    elif how == "garbled pages":  # the schema page intact, every other page noise
        page = int.from_bytes(good[16:18], "big")
        path.write_bytes(good[:page] + rng.bytes(len(good) - page))
    else:
        raise AssertionError(how)


DAMAGES = [
    "truncated to half",
    "truncated mid-page",
    "header only",
    "random bytes",
    "not a database",
    "garbled header",
    "garbled pages",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_cache_file_is_moved_aside_rebuilt_and_works(
    tiny: Backbone,
    images: list[Item],
    filled: tuple[Path, tuple[np.ndarray, list]],
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, expected = filled
    _damage(path, how)
    bad = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="jointspace")

    cache = FeatureCache(path)
    got = _use(cache, tiny, images)
    cache.close()

    _assert_same(got, expected)  # recomputed: the same features as before the damage
    asides = [p for p in path.parent.iterdir() if ASIDE.search(p.name)]
    assert len(asides) == 1 and asides[0].name.startswith(path.name)
    assert asides[0].read_bytes() == bad  # kept as it was, not deleted
    (warning,) = _warnings(caplog)
    assert re.fullmatch(
        rf"Feature cache {re.escape(str(path))} was unreadable \(.+\); rebuilt it, keeping the "
        rf"bad file as {re.escape(asides[0].name)}: features will be recomputed\.",
        warning,
    ), warning
    # the rebuilt cache holds the recomputed features: a second run reads them, quietly
    assert _rows(path) == {"image": len(images), "text": len(TEXTS)}
    caplog.clear()
    towerless = Backbone(f"{TINY}:random")
    del towerless.model.visual, towerless.model.transformer  # any encoding would fail
    again = FeatureCache(path)
    _assert_same(_use(again, towerless, images), expected)
    again.close()
    assert _warnings(caplog) == []


def test_damaged_rows_are_dropped_and_recomputed(
    tiny: Backbone,
    images: list[Item],
    filled: tuple[Path, tuple[np.ndarray, list]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, expected = filled
    keys = [text_hash(t) for t in TEXTS[:4]]
    with sqlite3.connect(path) as db:
        update = "UPDATE features SET {} WHERE kind='text' AND hash=?"
        db.execute(update.format("vector=x'0000'"), [keys[0]])  # too short
        db.execute(update.format("vector=zeroblob(63)"), [keys[1]])  # odd: not float16
        db.execute(update.format("vector=?"), [b"\xff\x7f" * 32, keys[2]])  # NaNs, right size
        db.execute(update.format("vector='garbled text'"), [keys[3]])
        db.execute(
            "UPDATE features SET width='wide' WHERE kind='image' AND rowid=(SELECT "
            "min(rowid) FROM features WHERE kind='image')"
        )
    caplog.set_level(logging.WARNING, logger="jointspace")

    cache = FeatureCache(path)
    _assert_same(_use(cache, tiny, images), expected)
    cache.close()

    warnings = _warnings(caplog)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"Feature cache {path} had 4 damaged text row(s) (")
    assert warnings[1].startswith(f"Feature cache {path} had 1 damaged image row(s) (")
    assert all(w.endswith("dropped them: their features will be recomputed.") for w in warnings)
    assert not [p for p in path.parent.iterdir() if ASIDE.search(p.name)]  # the rest is kept
    caplog.clear()
    again = FeatureCache(path)
    _assert_same(_use(again, tiny, images), expected)  # the rows were written back whole
    again.close()
    assert _warnings(caplog) == []


def test_two_open_caches_rebuild_a_damaged_file_once(
    filled: tuple[Path, tuple[np.ndarray, list]], caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes (here two connections) that find the same damage: one moves the file
    aside, the other picks up the fresh cache instead of moving that aside too."""
    path, _ = filled
    _damage(path, "garbled pages")
    first, second = FeatureCache(path), FeatureCache(path)  # the schema page still reads
    caplog.set_level(logging.WARNING, logger="jointspace")
    keys = [text_hash(t) for t in TEXTS]
    assert first.get_many("text", keys) == {}
    assert second.get_many("text", keys) == {}
    second.put_many("text", [("k", np.ones(32, np.float32), None, None)])
    assert list(first.get_many("text", ["k"])) == ["k"]
    first.close()
    second.close()
    assert len([p for p in path.parent.iterdir() if ASIDE.search(p.name)]) == 1
    assert len(_warnings(caplog)) == 1


def test_an_open_cache_follows_a_file_replaced_or_removed_under_it(tmp_path: Path) -> None:
    """Another process that rebuilt the cache (or a user who deleted it) while this one had it
    open: what this one writes next goes to the file now at the path, not to the old one."""
    path = tmp_path / "features" / "abc.sqlite"
    cache = FeatureCache(path)
    cache.put_many("text", [("before", np.ones(4, np.float32), None, None)])
    path.rename(tmp_path / "elsewhere.sqlite")
    cache.put_many("text", [("after-move", np.ones(4, np.float32), None, None)])
    assert _rows(path) == {"text": 1}
    shutil.rmtree(path.parent)
    cache.put_many("text", [("after-delete", np.ones(4, np.float32), None, None)])
    assert list(cache.get_many("text", ["before", "after-move", "after-delete"])) == [
        "after-delete"
    ]
    cache.close()


def test_a_full_disk_is_one_sentence_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = FeatureCache(path)
    kept = [(f"kept{i}", np.ones(512, np.float32), 1, 1) for i in range(3)]
    cache.put_many("image", kept)
    # SQLite's own limit on the file's size: the same "database or disk is full" as ENOSPC
    pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
    cache._db.execute(f"PRAGMA max_page_count={pages + 2}")
    rows = [(f"new{i}", np.ones(512, np.float32), 1, 1) for i in range(200)]
    with pytest.raises(JointspaceError) as caught:
        cache.put_many("image", rows)
    assert str(caught.value) == (
        f"No space left for the feature cache at {path}; free some space and re-run: what was "
        "written is kept."
    )
    cache.close()
    reopened = FeatureCache(path)
    assert set(reopened.get_many("image", [k for k, *_ in kept])) == {k for k, *_ in kept}
    reopened.close()
    assert not [p for p in tmp_path.iterdir() if ASIDE.search(p.name)]  # not mistaken for damage


@pytest.mark.parametrize("where", ["home is a file", "path under a file", "folder at the path"])
def test_an_unusable_cache_location_is_one_sentence_naming_the_path(
    tmp_path: Path, where: str
) -> None:
    home = tmp_path / "home"
    if where == "home is a file":
        home.write_text("not a folder")
        path, culprit = home / "features" / "abc.sqlite", f"{home} is a file, not a folder"
    elif where == "path under a file":
        (tmp_path / "features").write_text("not a folder")
        path = tmp_path / "features" / "abc.sqlite"
        culprit = f"{tmp_path / 'features'} is a file, not a folder"
    else:
        path, culprit = home / "features" / "abc.sqlite", "a folder is in the way"
        path.mkdir(parents=True)
    with pytest.raises(JointspaceError) as caught:
        FeatureCache(path)
    assert str(caught.value) == (
        f"Cannot keep the feature cache at {path} ({culprit}); choose a home folder that can be "
        "written."
    )


READ_ONLY_CHECK = """
import sys
from pathlib import Path
from jointspace.errors import JointspaceError
from jointspace.pipeline.features import FeatureCache
for path in sys.argv[1:]:
    try:
        FeatureCache(Path(path)).close()
        print("opened", path)
    except JointspaceError as error:
        print(error)
"""


def test_a_read_only_cache_location_is_one_sentence_naming_the_path(tmp_path: Path) -> None:
    """Root ignores file modes, so as root this runs as user nobody (setpriv)."""
    command = [sys.executable, "-c", READ_ONLY_CHECK]
    folder = tmp_path
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file modes cannot be tested")
        folder = Path(tempfile.mkdtemp(prefix="jointspace-ro-"))
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    try:
        FeatureCache(folder / "old" / "abc.sqlite").close()
        (folder / "new").mkdir()
        for sub in (folder / "old", folder / "new"):
            for p in (sub, *sub.iterdir()):
                p.chmod(0o555 if p.is_dir() else 0o444)
        folder.chmod(0o755)
        paths = [folder / "new" / "abc.sqlite", folder / "new" / "features" / "abc.sqlite"]
        paths.append(folder / "old" / "abc.sqlite")
        proc = subprocess.run(
            [*command, *map(str, paths)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        culprits = [folder / "new", folder / "new", folder / "old" / "abc.sqlite"]
        assert proc.stdout.splitlines() == [
            f"Cannot keep the feature cache at {path} ({culprit} is read-only); choose a home "
            "folder that can be written."
            for path, culprit in zip(paths, culprits, strict=True)
        ]
    finally:
        for p in folder.rglob("*"):
            p.chmod(0o755)
        if folder != tmp_path:
            shutil.rmtree(folder)
