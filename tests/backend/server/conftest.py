"""Fixtures of the server tests: a private DREAMSTILL_HOME (the client's owner secret lives there)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def dreamstill_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("dreamstill_home")
    previous = os.environ.get("DREAMSTILL_HOME")
    os.environ["DREAMSTILL_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("DREAMSTILL_HOME", None)
        else:
            os.environ["DREAMSTILL_HOME"] = previous
