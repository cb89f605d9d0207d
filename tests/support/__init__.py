"""Helpers shared by several test folders (importable as ``support.*``; see pyproject's
``pythonpath``). Fixtures that start servers live in ``tests/conftest.py``."""
