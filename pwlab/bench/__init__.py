"""Benchmarks: each module prints measured ratios as JSON lines (``pwlab bench NAME``)."""
