"""The layerwise linear-system attack of Chen & Campbell (BMVC 2022) and its hybrid variant."""

from fl_leak.attacks.linear import attack, hybrid  # noqa: F401  (registers "linear", "hybrid")
