"""The public Python API in-process: connect → ingest → collection → search/similar/embed/info,
with a tiny random open_clip backbone and an untrained gated encoder (seconds, no training),
over a small folder corpus of real photos with captions (conftest.py: `corpus`, `tiny_model`)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import CAPTIONS, photo
from PIL import Image

import jointspace as js


@pytest.fixture(scope="module")
def ingested(corpus: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The corpus ingested once through the API; yields (space, report, progress reports)."""
    home = tmp_path_factory.mktemp("api-home")
    seen: list[js.Progress] = []
    space = js.connect(home=home)
    report = space.ingest(corpus, collection="photos", model=tiny_model, on_progress=seen.append)
    yield space, report, seen
    space.close()


def test_ingest_reports_what_it_did(ingested) -> None:
    _, report, seen = ingested
    assert report.collection == "photos"
    assert (report.ingested, report.skipped) == (len(CAPTIONS), 1)
    assert report.errors_file and Path(report.errors_file).is_file()
    document = report.to_dict()
    assert {"collection", "ingested", "skipped", "errors_file", "seconds"} <= set(document)
    assert seen and seen[-1].stage == "ingest" and seen[-1].done == len(CAPTIONS) + 1


def test_collections_lists_it_with_its_card(ingested, tiny_model: Path) -> None:
    space, _, _ = ingested
    [summary] = space.collections()
    assert (summary.name, summary.points, summary.state) == ("photos", len(CAPTIONS), "ready")
    assert summary.model_id == js.load_model(tiny_model).model_id
    assert "labels" in summary.filterable
    assert space.collection("photos").info().points == len(CAPTIONS)


def test_search_by_text_image_both_and_where(ingested, corpus: Path) -> None:
    coll = ingested[0].collection("photos")
    hits = coll.search(text="coffee", k=3)
    assert len(hits) == 3 and all(isinstance(h, js.Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    keys = {"id", "score", "text", "image", "labels", "source", "payload", "ref"}
    assert keys == set(hits[0].to_dict())
    coffee = corpus / "food" / "coffee.png"
    # an image query finds that very image first, whichever way it is given
    for image in (coffee, str(coffee), coffee.read_bytes(), Image.open(coffee)):
        [best] = coll.search(image=image, target="image", k=1)
        assert best.image == str(coffee.resolve()) or best.payload["key"] == "food/coffee.png"
    units = coll.search(text="cup", image=coffee, k=len(CAPTIONS))
    assert len(units) == len(CAPTIONS)
    food = coll.search(text="cup", k=10, where={"labels": "food"})
    assert food and all("food" in h.labels for h in food)


def test_similar_uses_the_stored_vector(ingested) -> None:
    coll = ingested[0].collection("photos")
    first = coll.search(text="a cat", k=1)[0]
    neighbours = coll.similar(first.id, k=3)
    assert len(neighbours) == 3 and first.id not in {h.id for h in neighbours}
    assert coll.search(id=first.id, k=3) == neighbours


def test_embed_is_the_query_vector(ingested) -> None:
    coll = ingested[0].collection("photos")
    vector = coll.embed(text="a cat")
    assert len(vector) == 16 and abs(sum(v * v for v in vector) - 1) < 1e-4
    assert vector == coll.model.embed(text="a cat")


def test_the_model_is_loaded_once_per_collection(ingested) -> None:
    coll = ingested[0].collection("photos")
    coll.search(text="grass")
    loaded, backbone = coll.model.loaded, coll.model.loaded.backbone
    coll.search(text="rocket")
    coll.search(image=photo("rocket"))
    assert coll.model.loaded is loaded and coll.model.loaded.backbone is backbone


def test_a_second_ingest_resumes(ingested, corpus: Path) -> None:
    space = ingested[0]
    again = space.ingest(corpus, collection="photos")  # the model the collection records
    assert (again.ingested, again.already_stored, again.skipped) == (0, len(CAPTIONS), 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.collection("nope"), "No collection 'nope'"),
        (lambda s: s.collection("photos").search(text="  "), "empty"),
        (lambda s: s.collection("photos").search(), "Give a query"),
        (lambda s: s.collection("photos").search(text="x", id="y"), "not both"),
        (lambda s: s.collection("photos").search(text="x", target="video"), "Unknown target"),
        (lambda s: s.collection("photos").search(text="x", k=0), "at least 1"),
        (lambda s: s.collection("photos").search(image=b"not an image"), "query image"),
        (lambda s: s.collection("photos").search(image=io.BytesIO()), "must be a path"),
        (lambda s: s.ingest("/no/such/folder", collection="photos"), "No such file"),
        (lambda s: s.ingest("/tmp", collection="new"), "does not exist yet"),
        (lambda s: s.ingest("/tmp", collection="photos", batch_size=0), "--batch-size"),
    ],
)
def test_bad_calls_raise_one_clear_error(ingested, call, message: str) -> None:
    with pytest.raises(js.JointspaceError, match=message):
        call(ingested[0])


def test_a_manifest_s_own_columns_are_filterable(
    ingested, corpus: Path, tiny_model: Path, tmp_path: Path
) -> None:
    import pandas as pd

    images = sorted(p for p in corpus.rglob("*.png") if p.stem != "broken")[:4]
    rows = [
        {"image": str(p), "text": f"picture {i}", "photographer": name, "year": year}
        for i, (p, name, year) in enumerate(
            zip(images, ["ann", "bo", "ann", "cy"], [1990, 2001, 2010, 2020], strict=True)
        )
    ]
    manifest = tmp_path / "photos.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    space = ingested[0]
    report = space.ingest(manifest, collection="by-photographer", model=tiny_model)
    assert report.ingested == 4
    coll = space.collection("by-photographer")
    assert {"photographer", "year"} <= set(coll.info().filterable)
    ann = coll.search(text="picture", k=10, where={"photographer": "ann"})
    assert sorted(h.payload["year"] for h in ann) == [1990, 2010]
    recent = coll.search(
        text="picture", k=10, where={"year": {"gte": 2001}, "photographer": ["bo", "cy"]}
    )
    assert sorted(h.payload["photographer"] for h in recent) == ["bo", "cy"]
    with pytest.raises(js.InvalidQuery, match="photographer"):
        coll.search(text="picture", where={"camera": "x"})


def test_a_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(js.JointspaceError, match="is a file"):
        js.connect(home=file)
    with pytest.raises(js.JointspaceError, match="Cannot use"):
        js.connect(home=file / "below")


def test_import_is_light() -> None:
    import subprocess
    import sys

    heavy = "{'torch', 'open_clip', 'qdrant_edge', 'qdrant_client'}"
    code = f"import sys, jointspace; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
