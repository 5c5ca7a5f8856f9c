"""Helpers shared by the test suites: the core driver, SCRAM steps, child servers, files.

tests/ is on pytest's `pythonpath` and mypy's `mypy_path`, so tests import `support.core`, ...
"""
