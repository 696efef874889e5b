"""The test suite. The helpers in tests/support assert too: their asserts are
rewritten as the tests' own are, so a failure shows the values compared
(registered here, before anything imports them)."""

import pytest

pytest.register_assert_rewrite("tests.support")
