"""Card profiles for tests, made with cryptography directly (no dev PKI needed).

`make_test_profile` keeps its name and signature so it can later be switched to the
development PKI (`careid-devkit pki issue-card`). Keys are generated once per algorithm
per test session: RSA key generation is the slow part.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import socket
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from careid_devkit.card_profile import CardProfile, KeyAlgorithm
from careid_devkit.cardsim import InProcessConnection, PivApplet
from careid_protocol import tlv

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@functools.cache
def session_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """One key per algorithm for the whole test session."""
    if algorithm is KeyAlgorithm.P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# FASC-N characters (SP 800-73-4 Part 1 §3.1.2, TIG SCEPACS): 4-bit BCD, least
# significant bit first, plus an odd-parity bit; 40 characters of 5 bits = 25 bytes.
_START, _FIELD_SEPARATOR, _END = 0xB, 0xD, 0xF


def _fascn_char(value: int) -> str:
    bits = [(value >> i) & 1 for i in range(4)]
    parity = 1 - sum(bits) % 2
    return "".join(str(b) for b in bits) + str(parity)


def fascn(*, agency: str = "9999", system: str = "9999", credential: str = "999999") -> bytes:
    """A FASC-N. Agency 9999 makes it non-federal: it then starts D4 E7 39."""
    values = [_START, *map(int, agency), _FIELD_SEPARATOR, *map(int, system)]
    values += [_FIELD_SEPARATOR, *map(int, credential), _FIELD_SEPARATOR, 1]  # series
    values += [_FIELD_SEPARATOR, 1]  # individual credential issue
    values += [_FIELD_SEPARATOR, *map(int, "0000000000"), 1, *map(int, "0000"), 1, _END]
    lrc = 0
    for value in values:
        lrc ^= value
    bits = "".join(_fascn_char(v) for v in [*values, lrc])
    assert len(bits) == 200
    return int(bits, 2).to_bytes(25, "big")


def chuid_value(*, fasc_n: bytes, guid: bytes, expiry: datetime.date) -> bytes:
    """The CHUID body (inside tag 53): FASC-N, GUID, expiry, empty signature, EDC."""
    return (
        tlv.encode(0x30, fasc_n)
        + tlv.encode(0x34, guid)
        + tlv.encode(0x35, expiry.strftime("%Y%m%d").encode("ascii"))
        + tlv.encode(0x3E, b"")
        + tlv.encode(0xFE, b"")
    )


def self_signed_certificate(
    key: PrivateKey, *, name: str, uuid: str, now: datetime.datetime
) -> x509.Certificate:
    """A PIV Authentication-style certificate naming the holder and their UUID."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Care Identity devkit tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, uuid),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(int.from_bytes(hashlib.sha256(uuid.encode()).digest()[:8], "big"))
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_test_profile(
    algorithm: KeyAlgorithm,
    *,
    pin: str = "246810",
    uuid: str = "555000000001",
    name: str = "Alex Morgan",
    puk: str = "13579135",
) -> CardProfile:
    """A card profile with a self-signed certificate (TEST MATERIAL)."""
    key = session_key(algorithm)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = self_signed_certificate(key, name=name, uuid=uuid, now=now)
    guid = hashlib.sha256(f"card-guid:{uuid}:{algorithm}".encode()).digest()[:16]
    return CardProfile(
        uuid=uuid,
        name=name,
        algorithm=algorithm,
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        chuid_hex=chuid_value(
            fasc_n=fascn(credential=uuid[-6:]), guid=guid, expiry=cert.not_valid_after_utc.date()
        ).hex(),
        card_guid_hex=guid.hex(),
        pin=pin,
        puk=puk,
    )


def h(text: str) -> bytes:
    """Bytes from spaced hex, as APDUs are written in the specs."""
    return bytes.fromhex(text)


def exchange_all(connection: InProcessConnection, apdu: bytes) -> tuple[bytes, int]:
    """Send `apdu` and follow 61xx with GET RESPONSE (as a host on T=1 must)."""
    data, sw = connection.transmit(apdu)
    while sw >> 8 == 0x61:
        more, sw = connection.transmit(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
        data += more
    return data, sw


def new_card(
    algorithm: KeyAlgorithm = KeyAlgorithm.P256, **applet_options: Any
) -> InProcessConnection:
    """A fresh in-process card with the standard test profile."""
    return InProcessConnection(PivApplet(make_test_profile(algorithm), **applet_options))


class FakeVpcd:
    """The reader side of the vpcd protocol, speaking like Debian's vpcd."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(1)
        self.server.settimeout(5)
        self.port: int = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 30.0) -> socket.socket:
        """The card's connection. Waiting for it includes a card process starting up
        (Python and its imports), which a busy machine can stretch past the exchanges'
        five seconds."""
        if self.conn is not None:
            self.conn.close()
        self.server.settimeout(timeout)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)
        return self.conn

    def send(self, payload: bytes) -> None:
        # Length and body in two writes, as Debian's vpcd does (no TCP_NODELAY here
        # either): the case where delayed ACK on the card's side costs ~40 ms a message.
        assert self.conn is not None
        self.conn.sendall(len(payload).to_bytes(2, "big"))
        self.conn.sendall(payload)

    def receive(self) -> bytes | None:
        assert self.conn is not None
        header = self._exactly(2)
        return None if header is None else self._exactly(int.from_bytes(header, "big"))

    def _exactly(self, count: int) -> bytes | None:
        assert self.conn is not None
        data = b""
        while len(data) < count:
            chunk = self.conn.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def exchange(self, payload: bytes) -> bytes | None:
        self.send(payload)
        return self.receive()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()
