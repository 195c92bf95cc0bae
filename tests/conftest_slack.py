"""Pytest plugin: the ``slack_server`` fixture (a Slack-compatible server on 127.0.0.1).

Registered in tests/conftest.py (``pytest_plugins``), so any test can ask for it::

    def test_something(slack_server, monkeypatch):
        for k, v in slack_server.env().items():
            monkeypatch.setenv(k, v)
        ...
        assert slack_server.messages

See tests/slack_server.py for what it implements and how to script faults.
"""

from __future__ import annotations

import pytest
from slack_server import SlackServer


@pytest.fixture
def slack_server():
    """A started :class:`SlackServer`; stopped after the test."""
    with SlackServer() as server:
        yield server


@pytest.fixture
def slack_env(slack_server, monkeypatch):
    """``slack_server`` with SLACK_BOT_TOKEN, MAILPULSE_SLACK_CHANNEL and
    MAILPULSE_SLACK_API_URL set to reach it."""
    for k, v in slack_server.env().items():
        monkeypatch.setenv(k, v)
    return slack_server
