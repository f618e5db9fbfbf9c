"""Settings defaults that the embedded mode relies on."""

from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from baton.settings import get_settings, reset_settings_cache


@pytest.fixture
def embedded(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "BATON_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    reset_settings_cache()
    yield tmp_path
    monkeypatch.undo()
    reset_settings_cache()


def test_embedded_mode_makes_one_encryption_key_and_keeps_it(embedded):
    key = get_settings().encryption_key
    Fernet(key.encode())  # a valid Fernet key: secrets at rest work on a first run
    path = embedded / "encryption.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reset_settings_cache()
    assert get_settings().encryption_key == key  # the same key on the next start


def test_with_services_the_key_is_never_made_up(embedded, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/x")
    reset_settings_cache()
    assert get_settings().encryption_key == ""
    assert not (embedded / "encryption.key").exists()
