"""The names a user may choose among (losses, fusions, backbone presets), importable without torch,
so that a command line can offer them as choices and refuse a typo before any work starts."""

LOSSES = ("sum", "max", "sum-max", "infonce")
FUSIONS = ("gated", "fixed", "concat")
