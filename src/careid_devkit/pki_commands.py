"""`careid-devkit pki …` and `careid-devkit ocsp-responder`: the development PKI's CLI.

DEMO/TEST MATERIAL: every key, PIN and certificate these commands make is for
development machines only.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

from cryptography import x509

from careid_devkit.card_profile import KeyAlgorithm, save_profile
from careid_devkit.codes import DevkitCode
from careid_devkit.ocsp_responder import DEFAULT_RESPONSE_VALIDITY, start_pki_server
from careid_devkit.pki import (
    CARD_LIFETIME,
    DEFAULT_BASE_URL,
    DEFAULT_CRL_HOURS,
    REVOCATION_REASONS,
    Pki,
    PkiError,
    expired_validity,
    init_pki,
    load_certificate,
    load_issuer_key,
    not_yet_valid_validity,
)
from careid_devkit.pki.authority import now_utc

#: Exit status for refused input and refused operations (argparse uses 2 as well).
EXIT_REFUSED = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pki` (init, issue-card, revoke, revoke-issuing-ca, crl) and `ocsp-responder`
    to the CLI."""
    pki = sub.add_parser("pki", help="the development PKI (DEMO/TEST MATERIAL)")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True, metavar="PKI_COMMAND")

    init = pki_sub.add_parser("init", help="create a root CA, issuing CA and OCSP signer")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="where the PKI server will run; written into certificates (default %(default)s)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing PKI in DIR")
    init.set_defaults(func=_init)

    issue = pki_sub.add_parser("issue-card", help="issue a card: key, certificate, CHUID, PIN")
    issue.add_argument("directory", type=Path, metavar="DIR")
    issue.add_argument("--uuid", required=True, help="Care Identity UUID (12 digits)")
    issue.add_argument("--name", required=True, help="card holder's name")
    issue.add_argument(
        "--alg",
        default=str(KeyAlgorithm.P256),
        choices=[str(alg) for alg in KeyAlgorithm],
        help="card key type (default %(default)s)",
    )
    issue.add_argument("--pin", required=True, help="card PIN, 6 to 8 digits")
    issue.add_argument("--puk", help="card PUK, 8 digits (default: random)")
    issue.add_argument("--out", required=True, type=Path, help="card profile to write")
    window = issue.add_mutually_exclusive_group()
    window.add_argument("--expired", action="store_true", help="validity ended yesterday")
    window.add_argument("--not-yet-valid", action="store_true", help="validity starts tomorrow")
    issue.add_argument(
        "--no-client-auth", action="store_true", help="EKU emailProtection only, no clientAuth"
    )
    issue.add_argument("--issuer-key", type=Path, help="sign with another CA's key (PEM) instead")
    issue.add_argument(
        "--issuer-cert",
        type=Path,
        help="that CA's certificate; without it the card is a forgery in this CA's name",
    )
    issue.set_defaults(func=_issue_card)

    revoke = pki_sub.add_parser("revoke", help="revoke a card's certificates, rewrite the CRL")
    revoke.add_argument("directory", type=Path, metavar="DIR")
    revoke.add_argument("--uuid", required=True, help="Care Identity UUID (12 digits)")
    revoke.add_argument("--serial", help="only the certificate with this serial (hex)")
    revoke.add_argument(
        "--reason",
        default=x509.ReasonFlags.unspecified.value,
        choices=REVOCATION_REASONS,
        help="RFC 5280 reason code (default %(default)s: no reason code is written)",
    )
    revoke.add_argument("--next-update-hours", type=float, default=DEFAULT_CRL_HOURS)
    revoke.set_defaults(func=_revoke)

    revoke_ca = pki_sub.add_parser(
        "revoke-issuing-ca",
        help="revoke the issuing CA on the root CA's CRL (every card of it is then refused)",
    )
    revoke_ca.add_argument("directory", type=Path, metavar="DIR")
    revoke_ca.add_argument(
        "--reason",
        default=x509.ReasonFlags.ca_compromise.value,
        choices=REVOCATION_REASONS,
        help="RFC 5280 reason code (default %(default)s)",
    )
    revoke_ca.add_argument("--next-update-hours", type=float, default=DEFAULT_CRL_HOURS)
    revoke_ca.set_defaults(func=_revoke_issuing_ca)

    crl = pki_sub.add_parser("crl", help="sign and write a new CRL")
    crl.add_argument("directory", type=Path, metavar="DIR")
    crl.add_argument("--next-update-hours", type=float, default=DEFAULT_CRL_HOURS)
    crl.add_argument(
        "--root", action="store_true", help="the root CA's CRL instead of the issuing CA's"
    )
    crl.set_defaults(func=_crl)

    serve = sub.add_parser(
        "ocsp-responder", help="serve OCSP, the CRL and CA certificates over HTTP"
    )
    serve.add_argument("directory", type=Path, metavar="DIR")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5080, help="0 picks a free port")
    serve.add_argument(
        "--response-validity-minutes",
        type=float,
        default=DEFAULT_RESPONSE_VALIDITY.total_seconds() / 60,
        help="OCSP nextUpdate after thisUpdate (default %(default)s)",
    )
    serve.add_argument("--crl-next-update-hours", type=float, default=DEFAULT_CRL_HOURS)
    serve.set_defaults(func=_serve)


def _refused(exc: PkiError) -> int:
    detail = f"{exc.detail}\n  " if exc.detail else ""
    print(f"careid-devkit: error [{exc.code}]: {detail}{exc.message}", file=sys.stderr)
    return EXIT_REFUSED


def _init(args: argparse.Namespace) -> int:
    try:
        pki = init_pki(args.directory, base_url=args.base_url, force=args.force)
    except PkiError as exc:
        return _refused(exc)
    print(f"Created development PKI in {pki.directory} (DEMO/TEST MATERIAL).")
    print(f"  root CA:    {pki.paths.root_certificate}")
    print(f"  issuing CA: {pki.paths.issuing_certificate}")
    print(f"  OCSP:       {pki.urls.ocsp}   CRL: {pki.urls.crl}")
    print(f"  root CRL:   {pki.urls.root_crl} (the issuing CA's distribution point)")
    return 0


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(
            DevkitCode.DEVKIT_KEY_UNUSABLE, f"cannot read the {what} {path}: {exc.strerror}"
        ) from exc


def _issue_card(args: argparse.Namespace) -> int:
    try:
        if args.issuer_cert is not None and args.issuer_key is None:
            raise PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, "--issuer-cert needs --issuer-key")
        if not args.out.parent.is_dir():
            raise PkiError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT, f"the folder of {args.out} does not exist"
            )
        pki = Pki.open(args.directory)
        now = now_utc(None)
        not_before = not_after = None
        if args.expired:
            not_before, not_after = expired_validity(now)
        elif args.not_yet_valid:
            not_before, not_after = not_yet_valid_validity(now, CARD_LIFETIME)
        issuer_key = issuer_cert = None
        if args.issuer_key is not None:
            issuer_key = load_issuer_key(
                _read(args.issuer_key, "issuer key"), source=str(args.issuer_key)
            )
        if args.issuer_cert is not None:
            issuer_cert = load_certificate(
                _read(args.issuer_cert, "issuer certificate"), source=str(args.issuer_cert)
            )
        profile = pki.issue_card(
            uuid=args.uuid,
            name=args.name,
            algorithm=args.alg,
            pin=args.pin,
            puk=args.puk,
            not_before=not_before,
            not_after=not_after,
            client_auth=not args.no_client_auth,
            issuer_key=issuer_key,
            issuer_cert=issuer_cert,
            now=now,
        )
        save_profile(profile, args.out)
    except PkiError as exc:
        return _refused(exc)
    except OSError as exc:
        detail = f"cannot write {args.out}: {exc.strerror}"
        return _refused(PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, detail))
    cert = x509.load_pem_x509_certificate(profile.certificate_pem.encode("ascii"))
    print(f"Issued a {profile.algorithm} card for {profile.name} (UUID {profile.uuid}).")
    print(f"  serial {cert.serial_number:X}, issuer {cert.issuer.rfc4514_string()}")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    print(f"  valid {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    if issuer_key is not None:
        print("  signed by another key: not recorded in this PKI (its OCSP says unknown)")
    # The PIN and PUK are secrets even here: they stay in the profile, not on screen.
    print(f"  card profile (PIN and PUK inside): {args.out}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        serial = None
        if args.serial is not None:
            text = args.serial.replace(":", "").removeprefix("0x").removeprefix("0X")
            try:
                serial = int(text, 16)
            except ValueError:
                raise PkiError(
                    DevkitCode.DEVKIT_INVALID_ARGUMENT, f"--serial {args.serial!r} is not hex"
                ) from None
        pki = Pki.open(args.directory)
        revoked = pki.revoke(
            uuid=args.uuid,
            serial=serial,
            reason=args.reason,
            next_update_hours=args.next_update_hours,
        )
    except PkiError as exc:
        return _refused(exc)
    for revocation in revoked:
        print(f"Revoked serial {revocation.serial:X} (UUID {revocation.uuid}, {args.reason}).")
    if not revoked:
        print(f"Nothing new to revoke: UUID {args.uuid}'s certificates were already revoked.")
    print(f"CRL rewritten: {pki.paths.crl_der}")
    return 0


def _revoke_issuing_ca(args: argparse.Namespace) -> int:
    try:
        pki = Pki.open(args.directory)
        revoked = pki.revoke_issuing_ca(
            reason=args.reason, next_update_hours=args.next_update_hours
        )
    except PkiError as exc:
        return _refused(exc)
    serial = pki.issuing_certificate.serial_number
    if revoked is None:
        print(f"Nothing new to revoke: the issuing CA (serial {serial:X}) was already revoked.")
    else:
        print(f"Revoked the issuing CA, serial {serial:X} ({args.reason}).")
    print(f"Root CRL rewritten: {pki.paths.root_crl_der}")
    if not _names_root_crl(pki.issuing_certificate):
        # A folder made before the root published a CRL: nothing points a broker at it.
        print(
            "  note: this issuing CA names no CRL distribution point, so brokers do not"
            " check it unless they are configured with the root CRL file"
        )
    return 0


def _names_root_crl(issuing: x509.Certificate) -> bool:
    try:
        issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return False
    return True


def _crl(args: argparse.Namespace) -> int:
    try:
        pki = Pki.open(args.directory)
        if args.root:
            crl = pki.write_root_crl(next_update_hours=args.next_update_hours)
            written = pki.paths.root_crl_der
        else:
            crl = pki.write_crl(next_update_hours=args.next_update_hours)
            written = pki.paths.crl_der
    except PkiError as exc:
        return _refused(exc)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(f"Wrote CRL number {number} ({len(crl)} revoked) to {written}")
    print(f"  next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC")
    return 0


def _serve(args: argparse.Namespace) -> int:
    responder_log = logging.getLogger("careid_devkit.ocsp_responder")
    if responder_log.getEffectiveLevel() > logging.INFO:
        # One line per request is the point of running a responder by hand.
        responder_log.setLevel(logging.INFO)
    minutes = args.response_validity_minutes
    if not (0 <= args.port <= 65535):
        return _refused(PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, "--port must be 0 to 65535"))
    if not (math.isfinite(minutes) and 0 < minutes <= 7 * 24 * 60):
        detail = "--response-validity-minutes must be more than 0 and at most a week"
        return _refused(PkiError(DevkitCode.DEVKIT_INVALID_ARGUMENT, detail))
    try:
        server = start_pki_server(
            args.directory,
            args.host,
            args.port,
            response_validity=timedelta(minutes=minutes),
            crl_next_update_hours=args.crl_next_update_hours,
        )
    except PkiError as exc:
        return _refused(exc)
    except OSError as exc:
        return _refused(
            PkiError(
                DevkitCode.DEVKIT_INVALID_ARGUMENT,
                f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port",
            )
        )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = server.url
        print(f"Development PKI served at {url}: OCSP {url}/ocsp, CRL {url}/crl/issuing-ca.crl")
        print(f"  root CA CRL {url}/crl/root-ca.crl")
        base_url = server.responder.pki.base_url
        if base_url != url:
            print(f"  note: certificates point at {base_url}, not at this address")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
    print(f"Stopped after {server.requests_served} requests.", flush=True)
    return 0
