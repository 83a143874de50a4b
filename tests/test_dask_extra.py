"""Dask is an optional extra (`kimiplan[dask]`): without it the Dask engine says which extra to install."""

import sys

import pytest

from kimiplan.errors import ConfigError


def test_missing_dask_names_the_extra(monkeypatch):
    from kimiplan.sweeps.run import DASK_EXTRA_MESSAGE, dask_client_class

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: the import raises ImportError
    with pytest.raises(ConfigError) as exc:
        dask_client_class()
    assert str(exc.value) == DASK_EXTRA_MESSAGE and "\n" not in str(exc.value)
    assert "pip install 'kimiplan[dask]'" in str(exc.value)


def test_the_cli_says_it_in_one_line(monkeypatch, capsys):
    from kimiplan.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)
    code = main(["simulate-days", "support_chat", "--days", "1", "--engine", "dask", "--scheduler", "tcp://x:1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "kimiplan[dask]" in err and len(err.splitlines()) == 1
