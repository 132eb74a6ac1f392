"""OpenSC's own PIV driver against the virtual card: the independent faithfulness check.

pkcs15-tool and pkcs11-tool go through pcscd and vpcd to the card in reader 00 00; if
OpenSC lists, reads and signs with it, the card speaks PIV as real cards do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cardsim_profiles import make_test_profile
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from careid_devkit.card_profile import KeyAlgorithm
from careid_devkit.cardsim import ApduLogEntry, Direction, PivApplet, VpcdCardClient
from careid_devkit.pcscd import Pcscd

pytestmark = [pytest.mark.pcsc, pytest.mark.opensc]

READER = "Virtual PCD 00 00"
PORT = 35963
PKCS11_MODULE = Path("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")


@dataclass
class OpenscCard:
    client: VpcdCardClient
    log: list[ApduLogEntry]
    certificate: x509.Certificate

    def commands(self) -> list[ApduLogEntry]:
        return [e for e in self.log if e.direction is Direction.COMMAND]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{command[0]} failed: {result.stderr}"
    return result


@pytest.fixture(scope="module", params=list(KeyAlgorithm), ids=str)
def opensc_card(request: pytest.FixtureRequest, pcscd: Pcscd) -> Iterator[OpenscCard]:
    """One card per key type in reader 00 00, removed before the next one goes in."""
    for tool in ("pkcs15-tool", "pkcs11-tool"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs OpenSC's {tool} (Debian package opensc)")
    if not PKCS11_MODULE.exists():
        pytest.skip(f"needs OpenSC's PKCS#11 module {PKCS11_MODULE} (Debian package opensc)")
    profile = make_test_profile(request.param)
    log: list[ApduLogEntry] = []
    client = VpcdCardClient(PivApplet(profile, apdu_log=log.append), port=PORT)
    client.start()
    try:
        if not client.wait_inserted(timeout=15):
            pytest.fail(f"vpcd never asked the card for its ATR on port {PORT}")
        cert = x509.load_pem_x509_certificate(profile.certificate_pem.encode())
        yield OpenscCard(client=client, log=log, certificate=cert)
    finally:
        client.stop()


def test_pkcs15_tool_lists_the_certificate(opensc_card: OpenscCard) -> None:
    out = run("pkcs15-tool", "--reader", READER, "--list-certificates").stdout
    assert "Certificate for PIV Authentication" in out
    assert "ID             : 01" in out
    serial = opensc_card.certificate.serial_number
    assert f"{serial:X}" in out.replace(" ", "").upper()


def test_pkcs15_tool_reads_the_certificate_byte_identical(opensc_card: OpenscCard) -> None:
    out = run("pkcs15-tool", "--reader", READER, "--read-certificate", "01").stdout
    read = x509.load_pem_x509_certificate(out.encode())
    expected = opensc_card.certificate.public_bytes(serialization.Encoding.DER)
    assert read.public_bytes(serialization.Encoding.DER) == expected


def test_pkcs11_tool_signs_and_the_signature_verifies(
    opensc_card: OpenscCard, tmp_path: Path
) -> None:
    key = opensc_card.certificate.public_key()
    message = b"careid-auth:1 test challenge"
    if isinstance(key, rsa.RSAPublicKey):
        mechanism, data = "SHA256-RSA-PKCS", message
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        # Mechanism ECDSA signs what it is given: hand it the digest.
        hash_algorithm: hashes.HashAlgorithm = (
            hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()
        )
        mechanism = "ECDSA"
        data = hashlib.new(hash_algorithm.name, message).digest()
    (tmp_path / "in").write_bytes(data)
    opensc_card.log.clear()
    before = opensc_card.client.counters.commands
    run(
        "pkcs11-tool",
        "--module",
        str(PKCS11_MODULE),
        "--slot-description",
        READER,
        "--login",
        "--pin",
        "246810",
        "--sign",
        "--id",
        "01",
        "--mechanism",
        mechanism,
        "--input-file",
        str(tmp_path / "in"),
        "--output-file",
        str(tmp_path / "sig"),
    )
    signature = (tmp_path / "sig").read_bytes()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        half = len(signature) // 2  # PKCS#11 ECDSA output is raw r || s
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
        key.verify(der, data, ec.ECDSA(Prehashed(hash_algorithm)))

    commands = opensc_card.commands()
    # One PIN presentation and one signing operation (two chained blocks for RSA).
    pin_verifications = [c for c in commands if c.data[1] == 0x20 and c.redacted]
    signings = [c for c in commands if c.data[1] == 0x87]
    assert len(pin_verifications) == 1
    assert len(signings) == (2 if isinstance(key, rsa.RSAPublicKey) else 1)
    count = opensc_card.client.counters.commands - before
    print(f"pkcs11-tool --sign ({mechanism}, {key.__class__.__name__}): {count} APDUs")
