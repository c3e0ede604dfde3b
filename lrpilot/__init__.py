"""lrpilot: learned learning-rate control from real training runs."""

__version__ = "0.1.0"
