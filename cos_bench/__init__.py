"""cos-bench: measure collaborative decoding via speculation (CoS) against vanilla collaborative decoding."""

__version__ = "0.1.0"
