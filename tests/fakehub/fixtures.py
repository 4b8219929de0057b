"""Pytest fixtures. In conftest.py: ``from tests.fakehub.fixtures import fake_hub``."""

from collections.abc import Iterator

import pytest

from .server import FakeHub


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A started FakeHub, stopped (connections cut, threads joined) after the test."""
    with FakeHub() as hub:
        yield hub
