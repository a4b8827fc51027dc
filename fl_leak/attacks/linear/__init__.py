"""The layerwise linear-system attack of Chen & Campbell (BMVC 2022)."""

from fl_leak.attacks.linear import attack  # noqa: F401  (registers "linear")
