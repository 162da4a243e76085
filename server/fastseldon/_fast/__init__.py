"""Compiled codec modules built from ../../_fast/*.pyx (absent when built without a compiler)."""
