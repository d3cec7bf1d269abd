"""The library version (one place: the package, the weights metadata, benchmark reports)."""

__version__ = "0.1.0"
