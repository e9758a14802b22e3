"""Benchmarks that print figures and the ratios that compare them, measured in the same run (BUILD.md, "Benchmarks"):
`python -m benchmarks NAME [flags]`; NAMES in benchmarks.__main__, the JSON envelope in benchmarks.common."""
