"""`careid-broker`: serve, check the configuration, migrate the database, rotate keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from careid_broker.codes import message_for
from careid_broker.commands import admin as admin_commands
from careid_broker.commands import check_config as check_config_command
from careid_broker.commands import oidc as oidc_commands
from careid_broker.commands import subjects as subjects_commands
from careid_broker.commands.database import (
    EXIT_DATABASE,
    UNUSABLE_EXIT,
    DatabaseUnusableError,
    sqlite_file_missing,
    unusable,
    using_database,
)
from careid_broker.commands.parsing import CONFIG_HELP, CommandParser, documented, resolve_config
from careid_broker.config import (
    MOST_THREADS,
    MOST_WORKERS,
    BrokerConfig,
    BrokerConfigError,
    bind_problem,
    default_config_path,
    load_config,
)
from careid_broker.logging_setup import configure_logging
from careid_broker.server import serve
from careid_broker.store import (
    KeyAlgorithm,
    Outcome,
    Repositories,
    RotationResult,
    SigningKeyUnavailableError,
    Store,
    StoreUnavailableError,
    create_store,
    current_revision,
    head_revision,
    shown_url,
    sqlite_file,
    upgrade,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def load_cli_config(args: argparse.Namespace) -> BrokerConfig:
    """The configuration named by `--config` (or `$CAREID_CONFIG`, or the default)."""
    return load_config(args.config)


def _config_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.config
    return path or default_config_path()


def _report_config_error(exc: BrokerConfigError) -> int:
    print(f"careid-broker: {message_for(exc.code)}", file=sys.stderr)
    for problem in exc.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    path = _config_path(args)
    try:
        config = load_config(path)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    configure_logging(config.logging)
    serve(path, bind=args.bind, workers=args.workers, threads=args.threads)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    try:
        config = load_cli_config(args)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    with using_database(config.database.url, needs_schema=False):
        _make_sqlite_folder(config.database.url)
        upgrade(config.database.url)
        revision = current_revision(config.database.url)
    print(f"database schema at revision {revision}")
    return 0


def _make_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file, so a first upgrade just works."""
    database = sqlite_file(url)
    if database:
        folder = Path(database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnusableError(
                f"database {shown_url(url)}: cannot create its folder {folder}: {exc.strerror}"
            ) from exc


def _db_current(args: argparse.Namespace) -> int:
    try:
        config = load_cli_config(args)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    current, head = None, head_revision()
    # A SQLite file that is not there has no schema: say so without creating it.
    if sqlite_file_missing(config.database.url) is None:
        with using_database(config.database.url, needs_schema=False):
            current = current_revision(config.database.url)
    print(f"database schema at revision {current or 'none'}; this broker ships {head}")
    return 0 if current == head else 1


def _repositories(config: BrokerConfig) -> tuple[Store, Repositories]:
    store = create_store(config.database.url)
    return store, Repositories.build(
        store,
        key_passphrase=config.oidc.key_passphrase,
        key_previous_passphrase=config.oidc.key_previous_passphrase,
    )


def _keys_rotate(args: argparse.Namespace) -> int:
    try:
        config = load_cli_config(args)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    with using_database(config.database.url):
        try:
            results = _rotate(config, args.if_current)
        except SigningKeyUnavailableError as exc:
            print(
                f"careid-broker: keys rotate: not rotated, nothing changed: {exc.detail}."
                " While the passphrase changes, set the old one as"
                " CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE.",
                file=sys.stderr,
            )
            return EXIT_CONFIG
    status = 0
    for alg, result in results:
        if not result.rotated:
            print(f"{alg}: not rotated: the current key is {result.current_kid}")
            status = 1
            continue
        print(f"{alg}: current signing key: {result.current_kid}")
        print(f"{alg}: next signing key (published, not yet used): {result.next_kid}")
        for kid in result.retired_kids:
            print(f"{alg}: retired: {kid}")
    return status


_ROTATED = "keys.rotated"
_ROTATE_ACTOR = "careid-broker keys rotate"


def _rotate(
    config: BrokerConfig, if_current: str | None
) -> list[tuple[KeyAlgorithm, RotationResult]]:
    store, repos = _repositories(config)
    try:
        # Every algorithm in use rotates together (RS256 always; ES256 once a client asked
        # for it), so no key lives longer than the rotation schedule says.
        published = repos.keys.publishable()
        in_use = {key.alg for key in published} | {KeyAlgorithm.RS256}
        # --if-current guards the whole rotation: the named key's algorithm is asked
        # first, under the keys' lock, and if that key is no longer current (another
        # host has rotated) nothing else rotates either.
        guarded = next((key.alg for key in published if key.kid == if_current), None)
        if if_current and guarded is None:
            guarded = KeyAlgorithm.RS256  # an unknown kid: refused by RS256's own check
        # All algorithms or none: one refused leaves the others as they were.
        with _audited_key_change(store, repos, _ROTATED, _ROTATE_ACTOR) as audited:
            results: list[tuple[KeyAlgorithm, RotationResult]] = []
            for alg in sorted(in_use, key=lambda alg: (alg is not guarded, alg.value)):
                expected = if_current if alg is guarded else None
                result = repos.keys.for_alg(alg).rotate(expected_current_kid=expected)
                results.append((alg, result))
                if not result.rotated:
                    break
            rotated = [_rotated(alg, result) for alg, result in results if result.rotated]
            if rotated:
                audited["rotated"] = rotated
        return results
    finally:
        store.dispose()


@contextmanager
def _audited_key_change(
    store: Store, repos: Repositories, event: str, actor: str
) -> Iterator[dict[str, object]]:
    """One transaction changing the signing keys, audited as `event`: a success with the
    details the block fills in (no entry when it leaves them empty), in the same
    transaction; a failure, then raised, when the passphrase does not open the keys."""
    try:
        with store.transaction():
            details: dict[str, object] = {}
            yield details
            if details:
                repos.audit.append(event, Outcome.SUCCESS, actor=actor, details=details)
    except SigningKeyUnavailableError as exc:
        repos.audit.append(
            event,
            Outcome.FAILURE,
            error_code=exc.code.value,
            actor=actor,
            details={"detail": exc.detail or ""},
        )
        raise


def _rotated(alg: KeyAlgorithm, result: RotationResult) -> dict[str, object]:
    return {
        "alg": alg.value,
        "current": result.current_kid,
        "next": result.next_kid,
        "retired": list(result.retired_kids),
    }


_REENCRYPTED = "keys.reencrypted"
_REENCRYPT_ACTOR = "careid-broker keys reencrypt"


def _keys_reencrypt(args: argparse.Namespace) -> int:
    try:
        config = load_cli_config(args)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    if config.oidc.key_passphrase is None:
        print(
            "careid-broker: keys reencrypt: no passphrase to encrypt the keys under. Set the"
            " new one as CAREID_OIDC_SIGNING_KEY_PASSPHRASE and the one the keys were made"
            " with as CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    with using_database(config.database.url):
        return _reencrypt(config)


def _reencrypt(config: BrokerConfig) -> int:
    store, repos = _repositories(config)
    try:
        try:
            with _audited_key_change(store, repos, _REENCRYPTED, _REENCRYPT_ACTOR) as audited:
                kids = repos.keys.reencrypt()
                audited["kids"] = kids
        except SigningKeyUnavailableError as exc:
            print(
                f"careid-broker: keys reencrypt: nothing changed: {exc.detail}. Set"
                " CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE to the passphrase it was"
                " made with.",
                file=sys.stderr,
            )
            return EXIT_FAILED
    finally:
        store.dispose()
    for kid in kids:
        print(f"re-encrypted: {kid}")
    print(f"{len(kids)} private keys are now encrypted under the configured passphrase")
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    try:
        config = load_cli_config(args)
    except BrokerConfigError as exc:
        return _report_config_error(exc)
    with using_database(config.database.url):
        store, repos = _repositories(config)
        try:
            keys = repos.keys.publishable()
        finally:
            store.dispose()
    for key in keys:
        created = f"{key.created_at:%Y-%m-%d %H:%M}Z"
        print(f"{key.state.value:8} {key.alg.value} {key.kid} created {created}")
    return 0


def _bind(text: str) -> str:
    """`serve --bind`, checked as `[server] bind` is."""
    problem = bind_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _count(most: int) -> Callable[[str], int]:
    """`serve --workers` / `--threads`: a whole number in the range `[server]` allows."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or not 1 <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {most}")
        return int(text)

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: the broker's own commands, the OpenID Provider's and the
    local administrators'."""
    parser = argparse.ArgumentParser(
        prog="careid-broker",
        description="The Care Identity federation broker.",
        epilog="Every COMMAND has its own --help, with what it does and its exit statuses.",
    )
    parser.add_argument(
        "--config", action="append", type=Path, default=None, metavar="FILE", help=CONFIG_HELP
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )

    serve = sub.add_parser(
        "serve",
        help="run the broker under gunicorn",
        **documented(
            "Run the broker under gunicorn on [server] bind, with its workers and threads,"
            " until stopped (SIGTERM or Ctrl+C). Put TLS in front at a reverse proxy.",
            {
                EXIT_OK: "stopped cleanly",
                EXIT_FAILED: "gunicorn stopped with an error (e.g. the address is in use)",
                EXIT_CONFIG: "the configuration is not valid (check-config names each problem)",
                3: "a worker could not boot (gunicorn's own status)",
                4: "the application could not be loaded (gunicorn's own status)",
            },
        ),
    )
    serve.add_argument("--bind", type=_bind, help="HOST:PORT (default: [server] bind)")
    serve.add_argument(
        "--workers",
        type=_count(MOST_WORKERS),
        help=f"worker processes, 1-{MOST_WORKERS} (default: [server] workers)",
    )
    serve.add_argument(
        "--threads",
        type=_count(MOST_THREADS),
        help=f"threads per worker, 1-{MOST_THREADS} (default: [server] threads)",
    )
    serve.set_defaults(func=_serve)

    check_config_command.register(sub)

    db = sub.add_parser(
        "db",
        help="the database schema",
        **documented(
            "Create, upgrade or show the database schema ([database] url).",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser(
        "upgrade",
        help="apply the schema migrations",
        **documented(
            "Create the schema, or bring it up to this broker's revision. Safe to run"
            " again: a current schema is left as it is.",
            {
                EXIT_OK: "the schema is at this broker's revision",
                EXIT_CONFIG: "the configuration is not valid",
                EXIT_DATABASE: "the database cannot be reached, or a SQLite file's folder"
                " cannot be created",
            },
        ),
    ).set_defaults(func=_db_upgrade)
    db_sub.add_parser(
        "current",
        help="show the schema revision",
        **documented(
            "Show the database's schema revision beside the one this broker ships.",
            {
                EXIT_OK: "the schema is current",
                EXIT_FAILED: "the schema is older (or newer), or there is none: run db upgrade",
                EXIT_CONFIG: "the configuration is not valid",
                EXIT_DATABASE: "the database cannot be reached",
            },
        ),
    ).set_defaults(func=_db_current)

    keys = sub.add_parser(
        "keys",
        help="the OpenID Provider's signing keys",
        **documented(
            "Rotate, re-encrypt or list the OpenID Provider's signing keys.",
            {EXIT_CONFIG: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    rotate = keys_sub.add_parser(
        "rotate",
        help="next key becomes current, a new next key is published, oldest retired",
        **documented(
            "The published next key becomes current, a new next key is published before"
            " it signs anything, and the oldest key is retired; every algorithm in use"
            " rotates together. Refused unless the configured passphrase"
            " (CAREID_OIDC_SIGNING_KEY_PASSPHRASE) opens the current and next keys;"
            " audited as keys.rotated.",
            {
                EXIT_OK: "rotated",
                EXIT_FAILED: "not rotated: --if-current named a key that is no longer current",
                EXIT_CONFIG: (
                    "the configuration is not valid, or its signing key passphrase does not"
                    " open the current and next keys: nothing changed"
                ),
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    )
    rotate.add_argument(
        "--if-current",
        metavar="KID",
        help="rotate (every algorithm) only if KID is still current: a schedule run from"
        " several hosts rotates once",
    )
    rotate.set_defaults(func=_keys_rotate)
    keys_sub.add_parser(
        "reencrypt",
        help="store every private key encrypted under the configured passphrase",
        **documented(
            "Re-encrypt every stored private signing key under the configured passphrase"
            " (CAREID_OIDC_SIGNING_KEY_PASSPHRASE), reading each with it, with"
            " CAREID_OIDC_SIGNING_KEY_PREVIOUS_PASSPHRASE, or in clear. All or nothing;"
            " audited as keys.reencrypted.",
            {
                EXIT_OK: "every key re-encrypted",
                EXIT_FAILED: "a key could not be read: nothing changed",
                EXIT_CONFIG: "the configuration is not valid, or no passphrase is set",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    ).set_defaults(func=_keys_reencrypt)
    keys_sub.add_parser(
        "list",
        help="the published keys",
        **documented(
            "List the published signing keys: state, algorithm, key id, creation time.",
            {
                EXIT_OK: "listed",
                EXIT_CONFIG: "the configuration is not valid",
                EXIT_DATABASE: UNUSABLE_EXIT,
            },
        ),
    ).set_defaults(func=_keys_list)

    oidc_commands.register(sub)
    admin_commands.register(sub)
    subjects_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_config(parser, args)
    try:
        status: int = args.func(args)
    except DatabaseUnusableError as exc:
        print(f"careid-broker: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except (StoreUnavailableError, DBAPIError) as exc:
        # The database failed half-way through a command that had found it usable.
        print(
            f"careid-broker: {unusable(load_config(args.config).database.url, exc)}",
            file=sys.stderr,
        )
        return EXIT_DATABASE
    return status


if __name__ == "__main__":
    sys.exit(main())
