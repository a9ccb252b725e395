"""A look at the start of a JSON document, to tell its format without parsing all of it.

Caption files run to hundreds of megabytes, so format detection reads only their head and
scans its tokens: the top-level keys seen there and the keys of the first entry of "images".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 1024 * 1024
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]')


@dataclass(frozen=True)
class JsonHead:
    """What the head of a JSON object shows.

    `keys`: top-level keys seen; `first_image_keys`: keys of the first object in the top-level
    "images" list, as far as seen; `complete`: whether the head was the whole file.
    """

    keys: frozenset[str]
    first_image_keys: frozenset[str]
    complete: bool


def read_json_head(path: Path, limit: int = HEAD_BYTES) -> JsonHead | None:
    """The keys at the start of the JSON object in `path`; None if it does not hold an object."""
    try:
        with Path(path).open("rb") as f:
            raw = f.read(limit + 1)
    except OSError:
        return None
    text = raw[:limit].decode("utf-8-sig", errors="replace")
    if not text.lstrip().startswith("{"):
        return None
    keys: set[str] = set()
    image_keys: set[str] = set()
    # One entry per open container: its bracket and the key that led to it (None in a list).
    stack: list[tuple[str, str | None]] = []
    key: str | None = None  # the last key read in the innermost object
    string: str | None = None  # the last string token, a key if a colon follows
    images_seen = 0  # elements opened so far in the top-level "images" list
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == ":":
            key, string = string, None
            if len(stack) == 1 and key is not None:
                keys.add(key)
            elif key is not None and images_seen == 1 and _in_image(stack):
                image_keys.add(key)
        elif token in "{[":
            stack.append((token, key if stack and stack[-1][0] == "{" else None))
            images_seen += _in_image(stack)
            key = string = None
        elif token in "}]":
            if stack:
                stack.pop()
            if not stack:
                break
            key = string = None
        else:
            string = _unquote(token)
    return JsonHead(frozenset(keys), frozenset(image_keys), complete=len(raw) <= limit)


def _in_image(stack: list[tuple[str, str | None]]) -> bool:
    """Whether the innermost container is an object element of the top-level "images" list."""
    return len(stack) == 3 and stack[1] == ("[", "images") and stack[2][0] == "{"


def _unquote(token: str) -> str:
    try:
        return json.loads(token)
    except ValueError:
        return token[1:-1]
