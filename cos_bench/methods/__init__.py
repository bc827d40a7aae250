"""Decoding methods that wrap outside implementations (the core methods live in cos_bench.core)."""
