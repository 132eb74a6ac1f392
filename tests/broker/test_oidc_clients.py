"""The client registry (clients.toml), client secret hashing and the [oidc] settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from careid_broker.codes import BrokerCode
from careid_broker.oidc.client_secrets import (
    hash_secret,
    new_client_secret,
    parse_secret_hash,
    verify_secret,
)
from careid_broker.oidc.clients import (
    AuthMethod,
    IdTokenAlg,
    clients_from_mapping,
    load_clients,
)
from careid_broker.oidc.config import OidcConfig
from careid_broker.oidc.errors import OidcConfigError

REPO = Path(__file__).resolve().parents[2]
# Cheap scrypt parameters: these tests are about the format, not the cost.
FAST = {"log2_n": 10, "r": 8, "p": 1}


def _problems(data: dict[str, object], tmp_path: Path) -> tuple[str, ...]:
    with pytest.raises(OidcConfigError) as caught:
        clients_from_mapping(data, base_dir=tmp_path)
    assert caught.value.code is BrokerCode.OIDC_CONFIG_INVALID
    return caught.value.problems


def test_a_secret_hash_verifies_its_secret_only() -> None:
    secret = new_client_secret()
    entry = hash_secret(secret, **FAST)
    assert entry.startswith("scrypt$10$8$1$") and secret not in entry
    parsed = parse_secret_hash(entry)
    assert verify_secret(secret, parsed)
    assert not verify_secret(secret + "x", parsed)
    assert not verify_secret("", parsed)
    # Salted: the same secret never hashes to the same entry twice.
    assert hash_secret(secret, **FAST) != entry


@pytest.mark.parametrize(
    "entry",
    [
        "plain-secret",
        "scrypt$14$8$1$c2FsdA",
        "bcrypt$14$8$1$c2FsdHNhbHQ$aGFzaA",
        "scrypt$30$8$1$c2FsdHNhbHQ$" + "A" * 43,  # would allocate gigabytes
        "scrypt$14$8$1$c2FsdHNhbHQ$c2hvcnQ",  # hash of the wrong length
    ],
)
def test_malformed_or_dangerous_hashes_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_secret_hash(entry)


def test_the_shipped_clients_file_declares_the_demo_webmail_client() -> None:
    registry = load_clients(REPO / "config" / "clients.toml")
    webmail = registry.get("webmail")
    assert webmail is not None
    assert webmail.redirect_uris == ("http://localhost:5001/callback",)
    assert webmail.post_logout_redirect_uris == ("http://localhost:5001/",)
    assert webmail.backchannel_logout_uri == "http://localhost:5001/backchannel-logout"
    assert webmail.confidential and webmail.require_pkce
    # The documented demo secret, stored only as a hash.
    text = (REPO / "config" / "clients.toml").read_text()
    assert 'secret_hash = "scrypt$' in text
    assert webmail.check_secret("webmail-demo-secret-change-me")
    assert not webmail.check_secret("webmail-demo-secret")


def test_defaults_follow_the_credentials_given(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256")
    registry = clients_from_mapping(
        {
            "clients": {
                "secret": {
                    "secret_hash": hash_secret("s" * 20, **FAST),
                    "redirect_uris": ["https://rp.example/cb"],
                },
                "keyed": {
                    "jwks": {"keys": [key.as_dict(private=False)]},
                    "redirect_uris": ["https://rp.example/cb"],
                    "id_token_signed_response_alg": "ES256",
                    "require_pkce": False,
                },
                "public": {"redirect_uris": ["http://127.0.0.1:8080/cb"]},
            }
        },
        base_dir=tmp_path,
    )
    secret, keyed, public = (registry.get(n) for n in ("secret", "keyed", "public"))
    assert secret is not None and keyed is not None and public is not None
    assert secret.auth_methods == (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST)
    assert keyed.auth_methods == (AuthMethod.PRIVATE_KEY_JWT,)
    assert keyed.id_token_alg is IdTokenAlg.ES256 and not keyed.require_pkce
    assert public.auth_methods == (AuthMethod.NONE,) and not public.confidential
    assert registry.id_token_algorithms() == {IdTokenAlg.RS256, IdTokenAlg.ES256}


def test_every_problem_in_a_clients_file_is_named(tmp_path: Path) -> None:
    private = ECKey.generate_key("P-256").as_dict(private=True)
    problems = _problems(
        {
            "clients": {
                "bad": {
                    "secret": "plain-text-secret",
                    "redirect_uris": [
                        "http://rp.example/cb",  # plain http off localhost
                        "https://rp.example/cb#frag",
                        "rp.example/cb",
                    ],
                    "scopes": ["openid", "everything"],
                    "require_pkce": False,
                    "id_token_signed_response_alg": "HS256",
                    "colour": "blue",
                },
                "leaky": {
                    "jwks": {"keys": [private]},
                    "redirect_uris": ["https://rp.example/cb"],
                },
                "nokeys": {
                    "token_endpoint_auth_method": "private_key_jwt",
                    "redirect_uris": ["https://rp.example/cb"],
                },
            }
        },
        tmp_path,
    )
    text = "\n".join(problems)
    for expected in (
        "clients.bad.secret: plain secrets are not accepted",
        "plain http is allowed only on localhost",
        "must not have a #fragment",
        "'rp.example/cb' must be an absolute https:// URL",
        "unknown scope 'everything'",
        "clients.bad.require_pkce: may be false only for a confidential client",
        "clients.bad.id_token_signed_response_alg: must be one of: RS256, ES256",
        "clients.bad.colour: is not a known setting",
        "clients.leaky.jwks: holds a private key",
        "clients.nokeys.jwks: or jwks_uri is required for private_key_jwt",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_a_clients_file_without_clients_is_refused(tmp_path: Path) -> None:
    assert _problems({}, tmp_path) == (
        "clients: no client is declared ([clients.<client_id>] tables)",
    )


def test_oidc_settings_read_with_defaults_and_the_clients_file(tmp_path: Path) -> None:
    (tmp_path / "rp.toml").write_text(
        '[clients.rp]\nredirect_uris = ["http://localhost:9000/cb"]\n', encoding="utf-8"
    )
    config = OidcConfig.from_mapping(
        {"clients_file": "rp.toml", "signing_key_passphrase": "correct horse"},
        base_dir=tmp_path,
    )
    assert config.clients.get("rp") is not None
    assert config.code_ttl.total_seconds() == 60
    assert config.access_token_lifetime_seconds == 600
    assert config.refresh_token_lifetime_seconds == 28800
    assert config.id_token_lifetime_seconds == 300
    assert config.require_pkce and config.key_passphrase == b"correct horse"
    assert "correct horse" not in repr(config)


def test_oidc_settings_problems_include_the_clients_file(tmp_path: Path) -> None:
    with pytest.raises(OidcConfigError) as caught:
        OidcConfig.from_mapping(
            {"code_lifetime_seconds": 3600, "require_pkce": "yes", "clients_file": "none.toml"},
            base_dir=tmp_path,
        )
    text = "\n".join(caught.value.problems)
    assert "oidc.code_lifetime_seconds: must be between 5 and 600" in text
    assert "oidc.require_pkce: must be true or false" in text
    assert "none.toml: cannot read the clients file" in text


def test_jwks_uri_may_name_a_file_next_to_the_clients_file(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256")
    (tmp_path / "rp-keys.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8"
    )
    registry = clients_from_mapping(
        {"clients": {"rp": {"jwks_uri": "rp-keys.json", "redirect_uris": ["https://r.example/"]}}},
        base_dir=tmp_path,
    )
    record = registry.get("rp")
    assert record is not None and record.jwks_uri == (tmp_path / "rp-keys.json").as_uri()
    missing = _problems(
        {"clients": {"rp": {"jwks_uri": "gone.json", "redirect_uris": ["https://r.example/"]}}},
        tmp_path,
    )
    assert "is not a readable file" in missing[0]


def test_hash_secret_command_reads_the_secret_from_stdin() -> None:
    secret = "a-client-secret-of-enough-length"
    result = subprocess.run(
        [sys.executable, "-m", "careid_broker.cli", "clients", "hash-secret"],
        input=secret + "\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    line = result.stdout.strip()
    assert line.startswith('secret_hash = "scrypt$') and secret not in result.stdout
    assert verify_secret(secret, parse_secret_hash(line.split('"')[1]))

    short = subprocess.run(
        [sys.executable, "-m", "careid_broker.cli", "clients", "hash-secret"],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert short.returncode == 1 and "at least 16 characters" in short.stderr
