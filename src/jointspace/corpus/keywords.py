"""Keyword queries: what a user types, derived from a caption or a file name."""

from __future__ import annotations

import re

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "with",
        "which",
        "who",
        "what",
        "when",
        "where",
        "while",
        "into",
        "onto",
        "over",
        "under",
        "some",
        "any",
    ]
)


def keyword_query(text: str) -> str:
    """The content words of a text, lowercased, in order, without stopwords or punctuation
    ("A Magellanic penguin." → "magellanic penguin"); the text itself if nothing is left."""
    words = [w for w in re.findall(r"[^\W_]+", text.lower()) if w not in STOPWORDS]
    return " ".join(words) or text.strip()


def name_query(name: str) -> str:
    """A keyword query from a file name ("penguin_magellanic-2" → "penguin magellanic")."""
    words = re.findall(r"[^\W\d_]+", name.lower())
    return " ".join(words) or name
