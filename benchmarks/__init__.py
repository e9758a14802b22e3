"""Benchmarks that print figures and the ratios that compare them, measured in the same run (BUILD.md, "Benchmarks")."""
