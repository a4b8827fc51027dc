"""Flower simulation with a malicious server: clients, strategy, update-to-gradient, outputs."""

from fl_leak.fl.simulation import simulate
from fl_leak.fl.validation import ConfigError, check, problems

__all__ = ["ConfigError", "check", "problems", "simulate"]
