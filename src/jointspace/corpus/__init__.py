"""Corpora: the item record, one reader per format, image decoding with limits."""
