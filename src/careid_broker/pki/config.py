"""The `[pki]` settings: trust anchors, policies, revocation (OCSP, CRL) and identity.

`PkiConfig.from_mapping` reads the parsed TOML table, loads the certificates it names
and raises one `PkiConfigError` naming every problem, so `careid-broker check-config`
can list them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum, unique
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from careid_broker.errors import PkiConfigError
from careid_broker.pki.certfiles import load_certificate_paths, parse_crl
from careid_broker.settings import SettingsReader
from careid_protocol.identity import DEFAULT_RULE, IdentityRule, attribute_oid

_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")


@unique
class RevocationMode(StrEnum):
    """How revocation is checked: one source, or OCSP with the CRL behind it."""

    OCSP = "ocsp"
    CRL = "crl"
    OCSP_THEN_CRL = "ocsp-then-crl"


@unique
class PolicyMatch(StrEnum):
    """Whether one of the required policies is enough, or all of them are needed."""

    ANY = "any"
    ALL = "all"


def normalise_url(url: str) -> str:
    """A URL for comparison: scheme and host lower-case, no trailing slash."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}{query}"


def url_problem(url: str) -> str | None:
    """Why a URL cannot be fetched from (http/https with a host only), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must be an http:// or https:// URL"
    if not parts.hostname:
        return f"{url!r} names no host"
    if parts.username or parts.password or parts.fragment:
        return f"{url!r} must not hold a user name, password or fragment"
    return None


@dataclass(frozen=True, kw_only=True)
class OcspResponderSettings:
    """Settings for one responder, by URL (e.g. one that serves pre-signed answers)."""

    url: str
    require_nonce: bool


@dataclass(frozen=True, kw_only=True)
class OcspSettings:
    """`[pki.ocsp]`."""

    responder_url: str | None = None
    """Ask this responder instead of the certificate's AIA OCSP URL."""
    require_nonce: bool = True
    responders: tuple[OcspResponderSettings, ...] = ()
    timeout_seconds: float = 5.0
    max_response_age: timedelta = timedelta(hours=1)
    """How old a response without nextUpdate may be (its thisUpdate)."""
    cache_max_entries: int = 10_000
    max_good_age: timedelta = timedelta(minutes=5)
    """A cached "good" answer is used for at most this long, whatever its nextUpdate:
    a card a Registration Authority revokes is refused within this time."""
    failure_backoff: timedelta = timedelta(seconds=30)
    """After a responder fails (timeout, connection error, no usable answer), skip it
    for this long and go straight to the fallback; zero: always ask it."""

    def nonce_required_for(self, url: str) -> bool:
        """Whether a response from this responder must echo our nonce."""
        wanted = normalise_url(url)
        for responder in self.responders:
            if normalise_url(responder.url) == wanted:
                return responder.require_nonce
        return self.require_nonce


@dataclass(frozen=True, kw_only=True)
class CrlSettings:
    """`[pki.crl]`."""

    files: tuple[Path, ...] = ()
    use_distribution_points: bool = True
    refresh_interval: timedelta = timedelta(hours=1)
    """A cached CRL is fetched afresh this long after it was fetched, or this long
    before its nextUpdate, whichever comes first (by the background refresher)."""
    timeout_seconds: float = 10.0


@dataclass(frozen=True, kw_only=True)
class PkiConfig:
    """Everything certificate validation needs, with the certificates already loaded."""

    trust_anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    max_clock_skew: timedelta = timedelta(seconds=300)
    require_policies: tuple[x509.ObjectIdentifier, ...] = ()
    policy_match: PolicyMatch = PolicyMatch.ANY
    disallowed_policies: tuple[x509.ObjectIdentifier, ...] = ()
    revocation: RevocationMode = RevocationMode.OCSP_THEN_CRL
    soft_fail: bool = False
    ocsp: OcspSettings = field(default_factory=OcspSettings)
    crl: CrlSettings = field(default_factory=CrlSettings)
    identity: IdentityRule = DEFAULT_RULE

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], *, base_dir: Path, where: str = "pki"
    ) -> PkiConfig:
        """From the parsed `[pki]` table; paths are relative to `base_dir`."""
        problems: list[str] = []
        reader = _Reader(data, where, problems)
        anchors = _certificates(reader, "trust_anchors", base_dir, required=True)
        intermediates = _certificates(reader, "intermediates", base_dir, required=False)
        skew = reader.integer("max_clock_skew_seconds", 300, minimum=0, maximum=3600)
        required = _oids(reader, "require_policies")
        disallowed = _oids(reader, "disallowed_policies")
        for oid in sorted(set(required) & set(disallowed), key=lambda o: o.dotted_string):
            reader.problem("disallowed_policies", f"{oid.dotted_string} is also required")
        policy_match = reader.choice("policy_match", PolicyMatch, PolicyMatch.ANY)
        revocation = reader.choice("revocation", RevocationMode, RevocationMode.OCSP_THEN_CRL)
        soft_fail = reader.boolean("soft_fail", False)
        ocsp = _ocsp(reader.table("ocsp"))
        crl = _crl(reader.table("crl"), base_dir)
        if (
            revocation is not RevocationMode.OCSP
            and not crl.files
            and not crl.use_distribution_points
        ):
            reader.problem("crl", "has no source: give files or set use_distribution_points = true")
        identity = _identity(reader.table("identity"))
        reader.finish()
        if problems:
            raise PkiConfigError(problems)
        return cls(
            trust_anchors=anchors,
            intermediates=intermediates,
            max_clock_skew=timedelta(seconds=skew),
            require_policies=required,
            policy_match=policy_match,
            disallowed_policies=disallowed,
            revocation=revocation,
            soft_fail=soft_fail,
            ocsp=ocsp,
            crl=crl,
            identity=identity,
        )


class _Reader(SettingsReader):
    """The shared settings reader, plus lists that may be empty."""

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(item, str) and item.strip() for item in value
        ):
            self.problem(key, "must be a list of non-empty strings")
            return ()
        return tuple(str(item).strip() for item in value)

    def has_problem(self, key: str) -> bool:
        """Whether a problem was already recorded for this key."""
        prefix = f"{self.path(key)}:"
        return any(problem.startswith(prefix) for problem in self._problems)

    def table_list(self, key: str) -> list[_Reader]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, "must be a list of tables ([[...]] in TOML)")
            return []
        return [
            _Reader(item, f"{self.path(key)}[{index}]", self._problems)
            for index, item in enumerate(value)
        ]

    def table(self, key: str) -> _Reader:
        value = self._get(key)
        return _Reader({} if value is None else value, self.path(key), self._problems)


def _certificates(
    reader: _Reader, key: str, base_dir: Path, *, required: bool
) -> tuple[x509.Certificate, ...]:
    names = reader.string_list(key)
    if required and not names and not reader.has(key):
        reader.problem(key, "is required (PEM files, or a folder of them)")
    elif required and not names:
        reader.problem(key, "must name at least one file or folder")
    found: list[x509.Certificate] = []
    for index, name in enumerate(names):
        label = f"{key}[{index}]"
        path = base_dir / name
        try:
            loaded = load_certificate_paths(path)
        except OSError as exc:
            reader.problem(label, f"cannot read {str(path)!r}: {exc.strerror or exc}")
            continue
        except ValueError as exc:
            reader.problem(label, str(exc))
            continue
        for file, certificates in loaded:
            for certificate in certificates:
                if not _is_ca(certificate):
                    subject = certificate.subject.rfc4514_string()
                    reader.problem(label, f"{file}: {subject!r} is not a CA certificate")
                found.append(certificate)
    return tuple(found)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _oids(reader: _Reader, key: str) -> tuple[x509.ObjectIdentifier, ...]:
    oids: list[x509.ObjectIdentifier] = []
    for text in reader.string_list(key):
        if not _OID.fullmatch(text):
            reader.problem(key, f"{text!r} is not a dotted OID such as 2.16.840.1.101.3.2.1.3.13")
            continue
        oids.append(x509.ObjectIdentifier(text))
    return tuple(dict.fromkeys(oids))


def _ocsp(reader: _Reader) -> OcspSettings:
    responder_url = reader.optional_string("responder_url")
    if responder_url is not None and (problem := url_problem(responder_url)) is not None:
        reader.problem("responder_url", problem)
    responders: list[OcspResponderSettings] = []
    for item in reader.table_list("responders"):
        url = item.string("url")
        if url and (problem := url_problem(url)) is not None:
            item.problem("url", problem)
        responders.append(
            OcspResponderSettings(url=url, require_nonce=item.boolean("require_nonce", True))
        )
        item.finish()
    settings = OcspSettings(
        responder_url=responder_url,
        require_nonce=reader.boolean("require_nonce", True),
        responders=tuple(responders),
        timeout_seconds=reader.number("timeout_seconds", 5.0, minimum=0.1, maximum=60),
        max_response_age=timedelta(
            seconds=reader.integer(
                "max_response_age_seconds", 3600, minimum=60, maximum=7 * 24 * 3600
            )
        ),
        cache_max_entries=reader.integer("cache_max_entries", 10_000, minimum=0, maximum=1_000_000),
        max_good_age=timedelta(
            seconds=reader.integer("max_good_age_seconds", 300, minimum=0, maximum=86400)
        ),
        failure_backoff=timedelta(
            seconds=reader.integer("failure_backoff_seconds", 30, minimum=0, maximum=3600)
        ),
    )
    reader.finish()
    return settings


def _crl(reader: _Reader, base_dir: Path) -> CrlSettings:
    files: list[Path] = []
    for index, name in enumerate(reader.string_list("files")):
        path = base_dir / name
        try:
            parse_crl(path.read_bytes(), source=str(path))
        except OSError as exc:
            reader.problem(f"files[{index}]", f"cannot read {str(path)!r}: {exc.strerror}")
        except ValueError as exc:
            reader.problem(f"files[{index}]", str(exc))
        files.append(path)
    settings = CrlSettings(
        files=tuple(files),
        use_distribution_points=reader.boolean("use_distribution_points", True),
        refresh_interval=timedelta(
            seconds=reader.integer("refresh_seconds", 3600, minimum=1, maximum=7 * 24 * 3600)
        ),
        timeout_seconds=reader.number("timeout_seconds", 10.0, minimum=0.1, maximum=300),
    )
    reader.finish()
    return settings


def _identity(reader: _Reader) -> IdentityRule:
    defaults = DEFAULT_RULE
    attributes = defaults.attributes
    if reader.has("attributes"):
        names = reader.string_list("attributes")
        if not names and not reader.has_problem("attributes"):
            reader.problem("attributes", "must name at least one subject attribute")
        oids: list[x509.ObjectIdentifier] = []
        for name in names:
            try:
                oids.append(attribute_oid(name))
            except ValueError as exc:
                reader.problem("attributes", f"{exc} (use a name such as serialNumber or an OID)")
        if oids:
            attributes = tuple(oids)
    pattern = reader.optional_string("pattern") or defaults.pattern
    reader.finish()
    try:
        return IdentityRule(attributes=attributes, pattern=pattern)
    except ValueError as exc:
        reader.problem("pattern", str(exc))
        return defaults


def read_pki_config(reader: SettingsReader, *, base_dir: Path) -> PkiConfig | None:
    """`[pki]` through the shared reader; None when it named a problem."""
    try:
        return PkiConfig.from_mapping(reader.data, base_dir=base_dir, where=reader.path(None))
    except PkiConfigError as exc:
        reader.problems_found(exc.problems)
        return None
