"""The `[pki]` settings: a full example loads, and every kind of mistake is named."""

from __future__ import annotations

import shutil
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki_validation_support import DEV_POLICY, PkiEnv

from careid_broker.codes import BrokerCode
from careid_broker.errors import PkiConfigError
from careid_broker.pki import PkiConfig, PolicyMatch, RevocationMode
from careid_protocol.identity import DEFAULT_RULE

EXAMPLE = """
[pki]
trust_anchors = ["root-ca.pem"]
intermediates = ["issuing-ca.pem"]
max_clock_skew_seconds = 120
require_policies = ["{policy}"]
policy_match = "all"
disallowed_policies = ["1.2.3.4.5"]
revocation = "ocsp"
soft_fail = false

[pki.ocsp]
responder_url = "http://ocsp.example.nhs.uk/"
require_nonce = true
timeout_seconds = 3
max_response_age_seconds = 600

[[pki.ocsp.responders]]
url = "http://ocsp-cdn.example.nhs.uk/"
require_nonce = false

[pki.crl]
files = ["crl/issuing-ca.crl"]
use_distribution_points = true
refresh_seconds = 900
timeout_seconds = 8

[pki.identity]
attributes = ["serialNumber", "CN"]
pattern = "^[0-9]{{12}}$"
"""


def _problems(data: dict[str, Any], base_dir: Path) -> tuple[str, ...]:
    with pytest.raises(PkiConfigError) as caught:
        PkiConfig.from_mapping(data, base_dir=base_dir)
    assert caught.value.code is BrokerCode.BROKER_CONFIG_INVALID
    assert caught.value.detail == "; ".join(caught.value.problems)
    return caught.value.problems


def test_the_documented_example_loads(env: PkiEnv) -> None:
    data = tomllib.loads(EXAMPLE.format(policy=DEV_POLICY))["pki"]
    config = PkiConfig.from_mapping(data, base_dir=env.directory)
    assert config.trust_anchors == (env.pki.root_certificate,)
    assert config.intermediates == (env.pki.issuing_certificate,)
    assert config.max_clock_skew == timedelta(minutes=2)
    assert config.require_policies == (x509.ObjectIdentifier(DEV_POLICY),)
    assert config.policy_match is PolicyMatch.ALL
    assert config.disallowed_policies == (x509.ObjectIdentifier("1.2.3.4.5"),)
    assert config.revocation is RevocationMode.OCSP
    assert config.ocsp.responder_url == "http://ocsp.example.nhs.uk/"
    assert config.ocsp.timeout_seconds == 3
    assert config.ocsp.max_response_age == timedelta(minutes=10)
    assert config.ocsp.nonce_required_for("http://OCSP.example.nhs.uk")
    assert not config.ocsp.nonce_required_for("http://ocsp-cdn.example.nhs.uk")
    assert config.crl.files == (env.directory / "crl" / "issuing-ca.crl",)
    assert config.crl.refresh_interval == timedelta(minutes=15)
    assert config.identity == DEFAULT_RULE


def test_defaults_are_fail_closed_ocsp_then_crl(env: PkiEnv) -> None:
    config = PkiConfig.from_mapping({"trust_anchors": "root-ca.pem"}, base_dir=env.directory)
    assert config.revocation is RevocationMode.OCSP_THEN_CRL
    assert not config.soft_fail
    assert config.max_clock_skew == timedelta(minutes=5)
    assert config.ocsp.require_nonce and config.crl.use_distribution_points


def test_a_folder_of_anchors_is_read(env: PkiEnv, tmp_path: Path) -> None:
    shutil.copy(env.directory / "root-ca.pem", tmp_path / "root.pem")
    shutil.copy(env.directory / "issuing-ca.pem", tmp_path / "issuing.crt")
    (tmp_path / "README.txt").write_text("not a certificate")
    config = PkiConfig.from_mapping({"trust_anchors": [str(tmp_path)]}, base_dir=env.directory)
    assert set(config.trust_anchors) == {env.pki.root_certificate, env.pki.issuing_certificate}


def test_trust_anchors_are_required(env: PkiEnv) -> None:
    assert _problems({}, env.directory) == (
        "pki.trust_anchors: is required (PEM files, or a folder of them)",
    )


def test_every_problem_is_named_at_once(env: PkiEnv, tmp_path: Path) -> None:
    card = env.work / "card.pem"
    card.write_bytes(env.issue().public_bytes(serialization.Encoding.PEM))
    (tmp_path / "junk.crl").write_text("not a CRL")
    data: dict[str, Any] = {
        "trust_anchors": ["missing.pem", str(card)],
        "intermediates": [str(tmp_path)],  # a folder with no certificate files
        "max_clock_skew_seconds": 7200,
        "require_policies": ["1.2.3", "not-an-oid"],
        "disallowed_policies": ["1.2.3"],
        "policy_match": "some",
        "revocation": "carrier-pigeon",
        "soft_fail": "no",
        "ocsp": {
            "responder_url": "ldap://ocsp.example",
            "timeout_seconds": 0,
            "responders": [{"url": "file:///etc/passwd", "nonce": False}],
            "colour": "blue",
        },
        "crl": {"files": [str(tmp_path / "junk.crl"), "absent.crl"]},
        "identity": {"attributes": ["shoeSize"], "pattern": "([0-9]"},
        "trust_ancors": ["typo.pem"],
    }
    problems = _problems(data, env.directory)
    text = "\n".join(problems)
    for expected in [
        "pki.trust_anchors[0]: cannot read",
        "pki.trust_anchors[1]:",
        "is not a CA certificate",
        "pki.intermediates[0]:",
        "folder holds no",
        "pki.max_clock_skew_seconds: must be between 0 and 3600",
        "pki.require_policies: 'not-an-oid' is not a dotted OID",
        "pki.disallowed_policies: 1.2.3 is also required",
        "pki.policy_match: must be one of: any, all",
        "pki.revocation: must be one of: ocsp, crl, ocsp-then-crl",
        "pki.soft_fail: must be true or false",
        "pki.ocsp.responder_url: 'ldap://ocsp.example' must be an http:// or https:// URL",
        "pki.ocsp.timeout_seconds: must be between",
        "pki.ocsp.responders[0].url: 'file:///etc/passwd' must be an http:// or https:// URL",
        "pki.ocsp.responders[0].nonce: is not a known setting",
        "pki.ocsp.colour: is not a known setting",
        "pki.crl.files[0]:",
        "not a valid CRL",
        "pki.crl.files[1]: cannot read",
        "pki.identity.attributes: unknown subject attribute 'shoeSize'",
        "pki.identity.pattern: invalid identity pattern",
        "pki.trust_ancors: is not a known setting",
    ]:
        assert expected in text, f"{expected!r} not named in:\n{text}"


def test_crl_modes_need_a_crl_source(env: PkiEnv) -> None:
    data = {"trust_anchors": ["root-ca.pem"], "revocation": "crl"}
    data["crl"] = {"use_distribution_points": False}  # type: ignore[assignment]
    assert _problems(data, env.directory) == (
        "pki.crl: has no source: give files or set use_distribution_points = true",
    )
    # OCSP alone needs none.
    data["revocation"] = "ocsp"
    assert PkiConfig.from_mapping(data, base_dir=env.directory).revocation is RevocationMode.OCSP


def test_an_empty_identity_attribute_list_is_refused(env: PkiEnv) -> None:
    data = {"trust_anchors": ["root-ca.pem"], "identity": {"attributes": []}}
    assert _problems(data, env.directory) == (
        "pki.identity.attributes: must name at least one subject attribute",
    )
