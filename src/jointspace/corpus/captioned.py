"""What COCO and Karpathy caption files share: several captions per image, listed in one JSON
file, with the images in a folder somewhere near it."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from jointspace.corpus.item import Item, limit_caption
from jointspace.errors import JointspaceError

CAPTION_MODES = ("first", "join", "each")
# How many entries are tried when looking for the folder that holds the images.
_PROBE = 20


def check_caption_mode(captions: str) -> str:
    """`captions` if it is first, join or each; else a bad run."""
    if captions not in CAPTION_MODES:
        raise JointspaceError(f"Unknown --captions {captions!r}; use {'|'.join(CAPTION_MODES)}.")
    return captions


def load_json_object(path: Path, kind: str) -> dict[str, Any]:
    """The JSON object in `path` (all of it: caption files are metadata, not images)."""
    path = Path(path)
    if not path.is_file():
        raise JointspaceError(f"{path} is not a file; a {kind} caption file is a .json file.")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise JointspaceError(
            f"Cannot read {path} as JSON ({_short(e)}); check the file."
        ) from None
    except OSError as e:
        raise JointspaceError(f"Cannot read {path} ({e.strerror or e}).") from None
    if not isinstance(data, dict):
        raise JointspaceError(f"{path} is not a {kind} caption file (not a JSON object).")
    return data


def find_images_dir(
    annotations: Path,
    names: Iterable[str],
    candidates: Sequence[Path],
    images_dir: str | os.PathLike[str] | None,
) -> Path:
    """The folder the images' relative paths `names` are below.

    `images_dir` when given (it must be a folder); else the first of `candidates` that holds one
    of the first few names. Raises JointspaceError when none does.
    """
    if images_dir is not None:
        folder = Path(images_dir).expanduser()
        if not folder.is_dir():
            raise JointspaceError(f"--images-dir {folder} is not a folder.")
        return folder.resolve()
    probe = list(itertools.islice(names, _PROBE))
    unique = list(dict.fromkeys(c.resolve() for c in candidates))
    if not probe:
        return unique[0]
    for folder in unique:
        if any((folder / name).is_file() for name in probe):
            return folder
    tried = ", ".join(str(c) for c in unique)
    raise JointspaceError(
        f"Cannot find the images of {annotations} (looked for {probe[0]} in {tried}); "
        "pass --images-dir."
    )


def image_items(
    source: str,
    key: str,
    image: str,
    captions: Sequence[str],
    mode: str,
    extra: dict[str, Any],
    locators: Sequence[str] = (),
    image_locator: str | None = None,
) -> Iterator[Item]:
    """The items of one image: one with its first or joined captions, or one per caption.

    Every item of the image has `group` = `key`, so all its captions land in one split. An image
    without captions is one image-only item in every mode. `locators`: where each caption was
    read (e.g. "annotation id 10"), an item's locator is that of its captions; `image_locator`
    is the locator of an image without captions. Captions are cut to MAX_CAPTION_BYTES.
    """
    if mode == "each" and captions:
        for n, caption in enumerate(captions):
            text, truncated = limit_caption(caption)
            yield Item(
                source=source,
                key=f"{key}#{n}",
                image=image,
                text=text,
                extra={**extra, "caption_index": n},
                group=key,
                locator=locators[n] if n < len(locators) else image_locator,
                truncated=truncated,
            )
        return
    text, truncated, locator = None, False, image_locator
    if captions:
        used = 1 if mode == "first" else len(captions)
        text, truncated = limit_caption("\n".join(captions[:used]))
        locator = ", ".join(locators[:used]) or image_locator
    yield Item(
        source=source,
        key=key,
        image=image,
        text=text,
        extra=extra,
        group=key,
        locator=locator,
        truncated=truncated,
    )


def clean_caption(value: Any) -> str | None:
    """A caption as stripped text; None for anything that is not a non-blank string."""
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__
