"""fastseldon's benchmark harness: servers side by side, compiled load generators, report and plots.

A separate top-level package, never imported by fastseldon itself. Entry point: `python -m benchmarks`.
"""
