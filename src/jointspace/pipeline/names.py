"""The names a user may choose among (losses, fusions, backbone presets), importable without torch,
so that a command line can offer them as choices and refuse a typo before any work starts."""

LOSSES = ("sum", "max", "sum-max", "infonce")
FUSIONS = ("gated", "fixed", "concat")
# How training batches draw from several sources (pipeline/train.py): in proportion to their
# training items, to the square root of it, or equally.
SAMPLINGS = ("proportional", "sqrt", "balanced")
DEFAULT_SAMPLING = "proportional"
# Whether images also carry the backbone's ImageNet bridge (pipeline/bridge.py).
BRIDGES = ("auto", "imagenet", "none")
