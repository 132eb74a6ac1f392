"""`careid-devkit pki …` and `careid-devkit ocsp-responder`, end to end."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import VerificationError
from pki_fixtures import card_cert, run_cli, verify_chain

from careid_devkit.card_profile import KeyAlgorithm, load_profile
from careid_devkit.pki import Pki

UUID = "555000000001"


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    status, out, err = run_cli(["pki", "init", str(directory)])
    assert status == 0, err
    assert "DEMO/TEST MATERIAL" in out
    return directory


def _issue(pki_dir: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        [
            "pki", "issue-card", str(pki_dir), "--uuid", UUID, "--name", "Alex Morgan",
            "--pin", "246810", "--out", str(out), *extra,
        ]
    )  # fmt: skip


@pytest.mark.parametrize("alg", ["p256", "p384", "rsa2048"])
def test_init_then_issue_card_writes_a_valid_profile(
    pki_dir: Path, tmp_path: Path, alg: str
) -> None:
    out = tmp_path / "card.json"
    status, stdout, stderr = _issue(pki_dir, out, "--alg", alg, "--puk", "12345678")
    assert status == 0, stderr
    assert "246810" not in stdout and "12345678" not in stdout  # no secrets on screen
    profile = load_profile(out)
    assert profile.algorithm is KeyAlgorithm(alg)
    assert (profile.uuid, profile.name, profile.pin, profile.puk) == (
        UUID, "Alex Morgan", "246810", "12345678",
    )  # fmt: skip
    pki = Pki.open(pki_dir)
    cert = card_cert(profile)
    verify_chain(pki, cert, datetime.now(UTC))
    assert pki.state().find_issued(cert.serial_number) is not None


def test_init_base_url_is_written_into_cards(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    assert run_cli(["pki", "init", str(directory), "--base-url", "http://127.0.0.1:6001"])[0] == 0
    assert _issue(directory, tmp_path / "c.json")[0] == 0
    cert = card_cert(load_profile(tmp_path / "c.json"))
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [
        x509.UniformResourceIdentifier("http://127.0.0.1:6001/crl/issuing-ca.crl")
    ]


def test_bad_card_options(pki_dir: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    pki = Pki.open(pki_dir)
    assert _issue(pki_dir, tmp_path / "expired.json", "--expired")[0] == 0
    expired = card_cert(load_profile(tmp_path / "expired.json"))
    assert expired.not_valid_after_utc < now
    assert _issue(pki_dir, tmp_path / "future.json", "--not-yet-valid")[0] == 0
    future = card_cert(load_profile(tmp_path / "future.json"))
    assert future.not_valid_before_utc > now
    assert _issue(pki_dir, tmp_path / "mail.json", "--no-client-auth")[0] == 0
    mail = card_cert(load_profile(tmp_path / "mail.json"))
    eku = mail.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in eku
    for cert in (expired, future, mail):
        with pytest.raises(VerificationError):
            verify_chain(pki, cert, now)


def test_cards_signed_by_another_ca_made_with_pki_init(pki_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    assert run_cli(["pki", "init", str(other)])[0] == 0
    key, cert = other / "issuing-ca.key", other / "issuing-ca.pem"
    status, stdout, stderr = _issue(
        pki_dir, tmp_path / "other.json", "--issuer-key", str(key), "--issuer-cert", str(cert)
    )
    assert status == 0, stderr
    assert "not recorded" in stdout
    assert _issue(pki_dir, tmp_path / "forged.json", "--issuer-key", str(key))[0] == 0
    pki, other_pki = Pki.open(pki_dir), Pki.open(other)
    from_other = card_cert(load_profile(tmp_path / "other.json"))
    forged = card_cert(load_profile(tmp_path / "forged.json"))
    assert from_other.issuer == other_pki.issuing_certificate.subject
    assert forged.issuer == pki.issuing_certificate.subject
    now = datetime.now(UTC)
    for bad in (from_other, forged):
        with pytest.raises(VerificationError):
            verify_chain(pki, bad, now)
    verify_chain(other_pki, from_other, now)
    assert pki.state().issued == ()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--uuid", "55500000001"], "devkit_invalid_argument"),
        (["--uuid", "55500000000x"], "devkit_invalid_argument"),
        (["--name", " "], "devkit_invalid_argument"),
        (["--pin", "123"], "devkit_invalid_argument"),
        (["--puk", "123"], "devkit_invalid_argument"),
        (["--issuer-cert", "/nonexistent.pem"], "devkit_invalid_argument"),
        (["--issuer-key", "/nonexistent.key"], "devkit_key_unusable"),
    ],
)
def test_issue_card_refusals_exit_2_with_code(
    pki_dir: Path, tmp_path: Path, args: list[str], code: str
) -> None:
    out = tmp_path / "card.json"
    argv = ["pki", "issue-card", str(pki_dir), "--uuid", UUID, "--name", "Alex", "--pin", "246810"]
    status, stdout, stderr = run_cli([*argv, "--out", str(out), *args])
    assert status == 2
    assert f"[{code}]" in stderr
    assert not out.exists()


def test_issue_card_into_a_missing_folder_or_pki(pki_dir: Path, tmp_path: Path) -> None:
    status, _, stderr = _issue(pki_dir, tmp_path / "no" / "such" / "card.json")
    assert status == 2 and "[devkit_invalid_argument]" in stderr
    status, _, stderr = _issue(tmp_path / "no-pki", tmp_path / "card.json")
    assert status == 2 and "[devkit_pki_not_found]" in stderr
    assert "careid-devkit pki init" in stderr  # the message says what to do


def test_usage_errors_exit_2(pki_dir: Path, tmp_path: Path) -> None:
    status, _, stderr = run_cli(["pki", "issue-card", str(pki_dir), "--name", "A"])
    assert status == 2 and "--uuid" in stderr
    assert run_cli([*"pki issue-card".split(), str(pki_dir), "--alg", "p521"])[0] == 2
    assert run_cli(["pki", "revoke", str(pki_dir), "--uuid", UUID, "--reason", "bored"])[0] == 2
    status, _, stderr = _issue(pki_dir, tmp_path / "c.json", "--expired", "--not-yet-valid")
    assert status == 2


def test_init_refuses_an_existing_pki_unless_forced(pki_dir: Path) -> None:
    root = (pki_dir / "root-ca.pem").read_bytes()
    status, _, stderr = run_cli(["pki", "init", str(pki_dir)])
    assert status == 2 and "[devkit_pki_exists]" in stderr and "--force" in stderr
    assert (pki_dir / "root-ca.pem").read_bytes() == root
    assert run_cli(["pki", "init", str(pki_dir), "--force"])[0] == 0
    assert (pki_dir / "root-ca.pem").read_bytes() != root


def test_revoke_and_crl_commands(pki_dir: Path, tmp_path: Path) -> None:
    assert _issue(pki_dir, tmp_path / "a.json")[0] == 0
    assert _issue(pki_dir, tmp_path / "b.json")[0] == 0
    a = card_cert(load_profile(tmp_path / "a.json"))
    b = card_cert(load_profile(tmp_path / "b.json"))
    colon_serial = ":".join(f"{b.serial_number:040X}"[i : i + 2] for i in range(0, 40, 2))
    status, out, err = run_cli(
        ["pki", "revoke", str(pki_dir), "--uuid", UUID, "--serial", colon_serial,
         "--reason", "keyCompromise"]
    )  # fmt: skip
    assert status == 0, err
    assert f"{b.serial_number:X}" in out
    crl = x509.load_der_x509_crl((pki_dir / "crl" / "issuing-ca.crl").read_bytes())
    assert [entry.serial_number for entry in crl] == [b.serial_number]
    assert run_cli(["pki", "revoke", str(pki_dir), "--uuid", UUID])[0] == 0
    status, out, _ = run_cli(["pki", "crl", str(pki_dir), "--next-update-hours", "2"])
    assert status == 0
    crl = x509.load_der_x509_crl((pki_dir / "crl" / "issuing-ca.crl").read_bytes())
    assert {entry.serial_number for entry in crl} == {a.serial_number, b.serial_number}
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert (crl.next_update_utc - crl.last_update_utc).total_seconds() == 2 * 3600
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert f"CRL number {number}" in out
    assert json.loads((pki_dir / "ca.json").read_text())["crlNumber"] == number


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--uuid", "555000000077"], "devkit_card_not_found"),
        (["--uuid", UUID, "--serial", "zz"], "devkit_invalid_argument"),
        (["--uuid", "1"], "devkit_invalid_argument"),
    ],
)
def test_revoke_refusals(pki_dir: Path, args: list[str], code: str) -> None:
    status, _, stderr = run_cli(["pki", "revoke", str(pki_dir), *args])
    assert status == 2 and f"[{code}]" in stderr


def test_crl_and_responder_need_a_pki(tmp_path: Path) -> None:
    for argv in (["pki", "crl", str(tmp_path)], ["ocsp-responder", str(tmp_path), "--port", "0"]):
        status, _, stderr = run_cli(argv)
        assert status == 2 and "[devkit_pki_not_found]" in stderr


@pytest.mark.parametrize(
    "extra",
    [["--port", "70000"], ["--response-validity-minutes", "0"], ["--crl-next-update-hours", "nan"]],
)
def test_ocsp_responder_refuses_bad_settings(pki_dir: Path, extra: list[str]) -> None:
    status, _, stderr = run_cli(["ocsp-responder", str(pki_dir), "--port", "0", *extra])
    assert status == 2 and "[devkit_invalid_argument]" in stderr


def test_ocsp_responder_command_serves_until_sigterm(pki_dir: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "careid_devkit.cli", "ocsp-responder", str(pki_dir),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the responder printed nothing"
        first = process.stdout.readline()
        assert first.startswith("Development PKI served at http://127.0.0.1:"), first
        found = re.search(r"http://127\.0\.0\.1:[0-9]+", first)
        assert found is not None
        base = found.group(0)
        with urllib.request.urlopen(base + "/healthz", timeout=5) as reply:  # noqa: S310
            assert reply.read() == b"ok\n"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Stopped after 1 requests." in stdout
    assert "GET /healthz -> 200" in stderr  # one log line per request


def test_revoke_issuing_ca_lists_it_on_the_root_crl(pki_dir: Path) -> None:
    issuing = x509.load_pem_x509_certificate((pki_dir / "issuing-ca.pem").read_bytes())
    points = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [url] = [name.value for point in points for name in point.full_name or ()]
    assert url.endswith("/crl/root-ca.crl")
    root_crl = pki_dir / "crl" / "root-ca.crl"
    assert len(x509.load_der_x509_crl(root_crl.read_bytes())) == 0  # published at init

    status, out, err = run_cli(["pki", "revoke-issuing-ca", str(pki_dir)])
    assert status == 0, err
    assert f"{issuing.serial_number:X}" in out
    crl = x509.load_der_x509_crl(root_crl.read_bytes())
    root = x509.load_pem_x509_certificate((pki_dir / "root-ca.pem").read_bytes())
    assert crl.issuer == root.subject
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    [entry] = list(crl)
    assert entry.serial_number == issuing.serial_number
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.ca_compromise
    state = json.loads((pki_dir / "ca.json").read_text())
    assert state["rootCrlNumber"] == 2 and state["caRevocations"][0]["reason"] == "cACompromise"

    status, out, _ = run_cli(["pki", "revoke-issuing-ca", str(pki_dir)])
    assert status == 0 and "already revoked" in out
    status, out, _ = run_cli(["pki", "crl", str(pki_dir), "--root"])
    assert status == 0 and "root-ca.crl" in out
    assert [e.serial_number for e in x509.load_der_x509_crl(root_crl.read_bytes())] == [
        issuing.serial_number
    ]


def test_a_pki_folder_from_before_the_root_crl_keeps_working(pki_dir: Path, tmp_path: Path) -> None:
    # What `pki init` wrote before the root published a CRL: no root CRL, and no
    # rootCrlNumber nor caRevocations in ca.json.
    state = json.loads((pki_dir / "ca.json").read_text())
    del state["rootCrlNumber"], state["caRevocations"]
    (pki_dir / "ca.json").write_text(json.dumps(state))
    for name in ("root-ca.crl", "root-ca.crl.pem"):
        (pki_dir / "crl" / name).unlink()
    assert _issue(pki_dir, tmp_path / "a.json")[0] == 0
    assert run_cli(["pki", "revoke", str(pki_dir), "--uuid", UUID])[0] == 0
    assert run_cli(["pki", "crl", str(pki_dir)])[0] == 0
    assert Pki.open(pki_dir).current_root_crl() is not None  # served on demand
    status, _, err = run_cli(["pki", "revoke-issuing-ca", str(pki_dir)])
    assert status == 0, err
    assert len(json.loads((pki_dir / "ca.json").read_text())["revocations"]) == 1
