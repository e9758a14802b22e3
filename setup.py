"""Lets Beam workers install the project with `--setup_file ./setup.py`; metadata is in pyproject.toml."""
import setuptools

setuptools.setup()
