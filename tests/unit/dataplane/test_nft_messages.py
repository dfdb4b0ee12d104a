"""nft's error messages, mapped back to the offending line of our input (no kernel needed)."""

from __future__ import annotations

import pytest

from netpol.dataplane.nft import parse_messages
from tests.kernel.conftest import fresh_netns

netns = pytest.fixture(fresh_netns)
other_netns = pytest.fixture(fresh_netns)


def test_messages_point_into_our_input():
    source = ["table inet netpol {", "\tchain c {", "\t\tip saddr @nope accept", "\t}", "}"]
    stderr = "/proc/self/fd/7:3:12-16: Error: No such file or directory\n\t\tip saddr @nope accept\n\t\t   ^^^^^\n"
    [message] = parse_messages(stderr, source)
    assert (message.line, message.text, message.message) == (3, source[2], "No such file or directory")
    assert parse_messages("Error: syntax error\n", [])[0].message == "syntax error"
