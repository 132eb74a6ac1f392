"""The development PKI's folder: files, permissions, state, profiles, refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pki_fixtures import NOW, PIN, card_cert

from careid_devkit.card_profile import KeyAlgorithm, load_profile, save_profile
from careid_devkit.codes import DevkitCode
from careid_devkit.pki import Pki, PkiError, init_pki, load_issuer_key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", base_url="http://127.0.0.1:5081", now=NOW)


def test_init_writes_demo_labelled_files_with_private_keys_0600(pki: Pki) -> None:
    directory = pki.directory
    for name in ("root-ca.key", "issuing-ca.key", "ocsp-signer.key"):
        mode = stat.S_IMODE((directory / name).stat().st_mode)
        assert mode == 0o600, name
        text = (directory / name).read_text()
        assert text.startswith("# DEMO/TEST MATERIAL")
        load_issuer_key(text.encode(), source=name)
    for name in ("root-ca.pem", "issuing-ca.pem", "ocsp-signer.pem", "chain.pem"):
        assert (directory / name).read_text().startswith("# DEMO/TEST MATERIAL")
    assert "DEMO/TEST MATERIAL" in (directory / "README.txt").read_text()
    chain = x509.load_pem_x509_certificates((directory / "chain.pem").read_bytes())
    assert chain == [pki.issuing_certificate, pki.root_certificate]
    assert (directory / "crl" / "issuing-ca.crl").is_file()


def test_keys_on_disk_belong_to_the_certificates(pki: Pki) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    root_key = load_issuer_key(pki.paths.root_key.read_bytes(), source="root")
    assert root_key.public_key().public_bytes(*spki) == (
        pki.root_certificate.public_key().public_bytes(*spki)
    )
    assert pki.ocsp_key.public_key().public_bytes(*spki) == (
        pki.ocsp_certificate.public_key().public_bytes(*spki)
    )


def test_state_file_indexes_issued_certificates_by_uuid(pki: Pki) -> None:
    first = pki.issue_card(uuid="555000000001", name="Alex Morgan", algorithm="p256", pin=PIN)
    second = pki.issue_card(uuid="555000000001", name="Alex Morgan", algorithm="p384", pin=PIN)
    other = pki.issue_card(uuid="555000000002", name="Sam Patel", algorithm="p256", pin=PIN)
    data = json.loads(pki.paths.state.read_text())
    assert data["demoMaterial"] is True
    assert data["baseUrl"] == "http://127.0.0.1:5081"
    serials = {uuid: [item["serial"] for item in items] for uuid, items in data["issued"].items()}
    assert serials == {
        "555000000001": [
            f"{card_cert(first).serial_number:X}",
            f"{card_cert(second).serial_number:X}",
        ],
        "555000000002": [f"{card_cert(other).serial_number:X}"],
    }
    state = Pki.open(pki.directory).state()
    assert [c.serial for c in state.issued_to("555000000001")] == [
        card_cert(first).serial_number,
        card_cert(second).serial_number,
    ]
    record = state.find_issued(card_cert(other).serial_number)
    assert record is not None and record.name == "Sam Patel"
    assert record.algorithm is KeyAlgorithm.P256 and record.client_auth
    # A copy of each issued certificate (no key) is kept for operators.
    kept = pki.paths.issued_certificate(card_cert(other).serial_number)
    assert x509.load_pem_x509_certificate(kept.read_bytes()) == card_cert(other)
    assert "PRIVATE KEY" not in kept.read_text()


def test_card_profile_saves_and_loads_back(pki: Pki, tmp_path: Path) -> None:
    profile = pki.issue_card(
        uuid="555000000001", name="Alex Morgan", algorithm="rsa2048", pin=PIN, puk="11223344"
    )
    path = tmp_path / "card.json"
    save_profile(profile, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile(path) == profile
    assert json.loads(path.read_text())["demoMaterial"] is True


def test_init_refuses_an_existing_pki_unless_forced(pki: Pki) -> None:
    old_root = pki.root_certificate
    card = pki.issue_card(uuid="555000000001", name="Alex", algorithm="p256", pin=PIN)
    with pytest.raises(PkiError) as caught:
        init_pki(pki.directory)
    assert caught.value.code is DevkitCode.DEVKIT_PKI_EXISTS
    assert Pki.open(pki.directory).root_certificate == old_root
    fresh = init_pki(pki.directory, force=True)
    assert fresh.root_certificate != old_root
    assert fresh.state().issued == ()
    assert not pki.paths.issued_certificate(card_cert(card).serial_number).exists()


def test_open_refuses_missing_and_damaged_pki(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(PkiError) as caught:
        Pki.open(tmp_path / "nothing-here")
    assert caught.value.code is DevkitCode.DEVKIT_PKI_NOT_FOUND
    pki.paths.state.write_text("{not json")
    with pytest.raises(PkiError) as caught:
        Pki.open(pki.directory)
    assert caught.value.code is DevkitCode.DEVKIT_PKI_DAMAGED


def test_open_refuses_a_pki_with_a_missing_key(pki: Pki) -> None:
    pki.paths.issuing_key.unlink()
    with pytest.raises(PkiError) as caught:
        Pki.open(pki.directory)
    assert caught.value.code is DevkitCode.DEVKIT_PKI_DAMAGED


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1", "127.0.0.1:5080", "http://", "http://h/?q=1", "http://u:p@h"]
)
def test_init_refuses_a_bad_base_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(PkiError) as caught:
        init_pki(tmp_path / "pki", base_url=url)
    assert caught.value.code is DevkitCode.DEVKIT_INVALID_ARGUMENT
    assert not (tmp_path / "pki" / "ca.json").exists()


def test_issuer_key_loader_refuses_junk_and_encrypted_keys(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as caught:
        load_issuer_key(b"not a key", source="junk.pem")
    assert caught.value.code is DevkitCode.DEVKIT_KEY_UNUSABLE
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(PkiError) as caught:
        load_issuer_key(encrypted, source="enc.pem")
    assert caught.value.code is DevkitCode.DEVKIT_KEY_UNUSABLE
