"""The devkit's throwaway slapd and the demo seed's passwords."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from directory_support import bound_connection
from ldap3.core.exceptions import LDAPBindError

from careid_devkit.slapd import (
    DEMO_AUP_WRITER_DN,
    DEMO_AUP_WRITER_PASSWORD,
    DEMO_SEED,
    DEMO_SERVICE_DN,
    DEMO_SERVICE_PASSWORD,
    DEMO_USER_PASSWORD,
    Slapd,
    SlapdUnavailable,
    ssha_hash,
    ssha_verify,
    start_slapd,
)


def test_ssha_round_trip_and_known_vector() -> None:
    hashed = ssha_hash("Demo-Password-1")
    assert hashed.startswith("{SSHA}")
    assert ssha_verify("Demo-Password-1", hashed)
    assert not ssha_verify("demo-password-1", hashed)
    assert ssha_hash("x") != ssha_hash("x")  # salted
    # Made with `slappasswd -h {SSHA} -s secret` (salt chosen by slappasswd).
    assert ssha_verify("secret", "{SSHA}fuy8e7+NkdpRqyzJOND9Ub2X36qL01hW")
    assert not ssha_verify("secret", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")
    assert not ssha_verify("secret", "{SSHA}not-base64!")


def _seed_passwords() -> dict[str, str]:
    text = DEMO_SEED.read_text()
    entries = {}
    for block in text.split("\n\n"):
        dn = re.search(r"^dn: (.+)$", block, re.MULTILINE)
        password = re.search(r"^userPassword: (.+)$", block, re.MULTILINE)
        if dn and password:
            entries[dn.group(1)] = password.group(1)
    return entries


def test_every_seeded_password_is_a_hash_of_the_documented_one() -> None:
    passwords = _seed_passwords()
    people = {dn: h for dn, h in passwords.items() if dn.endswith("ou=people,dc=nhs,dc=example")}
    assert len(people) == 9
    for dn, hashed in people.items():
        assert ssha_verify(DEMO_USER_PASSWORD, hashed), dn
    assert ssha_verify(DEMO_SERVICE_PASSWORD, passwords[DEMO_SERVICE_DN])
    assert ssha_verify(DEMO_AUP_WRITER_PASSWORD, passwords[DEMO_AUP_WRITER_DN])


def test_missing_slapd_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(SlapdUnavailable, match="Debian package slapd"):
        start_slapd(tmp_path / "dir", sbin_dir=tmp_path / "no-sbin")


@pytest.mark.slapd
def test_start_is_fast_and_the_handle_works(
    slapd_factory: Callable[..., Slapd],
) -> None:
    started = time.monotonic()
    slapd = slapd_factory()
    assert time.monotonic() - started < 2.0
    assert slapd.running and slapd.port > 0
    assert slapd.url == f"ldap://127.0.0.1:{slapd.port}"
    assert "Demo-Broker" not in repr(slapd)
    with bound_connection(slapd.url, slapd.service_bind_dn, slapd.service_password) as conn:
        assert conn.search(slapd.base_dn, "(objectClass=organizationalUnit)")
        assert len(conn.entries) == 4
    slapd.stop()
    assert not slapd.running
    slapd.stop()  # idempotent
    slapd.start()
    assert slapd.running


@pytest.mark.slapd
def test_the_root_password_is_random_per_instance(slapd_factory: Callable[..., Slapd]) -> None:
    first, second = slapd_factory(), slapd_factory()
    assert first.root_password != second.root_password
    with pytest.raises(LDAPBindError):
        with bound_connection(first.url, first.root_dn, second.root_password):
            pass
    config = (first.workdir / "config.ldif").read_text()
    assert first.root_password not in config


@pytest.mark.slapd
def test_an_empty_directory(slapd_factory: Callable[..., Slapd]) -> None:
    slapd = slapd_factory(seed=None)
    with bound_connection(slapd.url, slapd.root_dn, slapd.root_password) as conn:
        conn.search(slapd.base_dn, "(objectClass=*)")
        assert conn.result["description"] == "noSuchObject"


@pytest.mark.slapd
def test_a_broken_seed_is_reported(slapd_factory: Callable[..., Slapd], tmp_path: Path) -> None:
    seed = tmp_path / "bad.ldif"
    seed.write_text("dn: dc=nhs,dc=example\nobjectClass: noSuchClass\n")
    with pytest.raises(SlapdUnavailable, match="slapadd \\(seed\\) failed"):
        slapd_factory(seed=seed)
