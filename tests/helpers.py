"""Kept only for tests/test_parallel.py, which imports ``assert_close`` from here: the one copy
lives in minilora.testing. Delete this file once test_parallel.py imports minilora.testing."""
from minilora.testing import assert_close  # noqa: F401
