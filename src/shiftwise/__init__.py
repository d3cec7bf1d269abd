"""shiftwise: very large kernel effects from small convolutions (ShiftwiseConv and SLaK)."""

__version__ = "0.1.0"
