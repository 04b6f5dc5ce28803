"""Cleanroom: hermetic integration tests written in `.cr` files."""

__version__ = "0.1.0"
