"""DATABASE_URL may list several hosts (asyncpg tries them in order): the validator takes the
list, refuses a malformed one, and masking keeps every host while hiding the password."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_settings, mask_url

FAILOVER = "postgresql://bridge:s3cret@db1:5432,db2:5433/bridge?target_session_attrs=read-write"


def test_a_two_host_url_is_accepted_as_written() -> None:
    s = load_settings({"DATABASE_URL": FAILOVER}, dotenv=None)
    assert s.database_url == FAILOVER


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://u@db1:5432,db2:99999/db",  # port out of range
        "postgresql://u@db1:5432,/db",  # an empty host
        "postgresql://u@db1:5432,db2:x/db",  # a port that is no number
    ],
)
def test_a_malformed_host_list_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"DATABASE_URL": bad}, dotenv=None)
    assert info.value.variable == "DATABASE_URL"


def test_masking_keeps_every_host_and_hides_the_password() -> None:
    shown = mask_url(FAILOVER)
    assert "s3cret" not in shown
    assert shown == (
        "postgresql://bridge:***@db1:5432,db2:5433/bridge?target_session_attrs=read-write"
    )
    assert mask_url("postgresql://u:pw@[::1]:5432,db2/db") == "postgresql://u:***@[::1]:5432,db2/db"


def test_the_password_is_hidden_in_errors_about_a_host_list() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"DATABASE_URL": "postgresql://u:s3cret@db1:1,db2:0/db"}, dotenv=None)
    assert "s3cret" not in str(info.value)
