"""`careid-broker clients …`: make client secret hashes, list the declared clients.

A secret is never taken on the command line (shell history, `ps`): it is generated, or
read from standard input, or asked for without echo.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from careid_broker.commands.parsing import documented
from careid_broker.oidc.client_secrets import hash_secret, new_client_secret
from careid_broker.oidc.clients import load_clients
from careid_broker.oidc.errors import OidcConfigError

MIN_SECRET_LENGTH = 16


def _read_secret() -> str | None:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Client secret: ")
    if getpass.getpass("Again: ") != first:
        print("the two entries differ", file=sys.stderr)
        return None
    return first


def _hash_secret(args: argparse.Namespace) -> int:
    if args.generate:
        secret = new_client_secret()
        # Shown once, for the RP's configuration; only the hash goes in clients.toml.
        print(f"# client secret (give it to the relying party; it is not stored): {secret}")
    else:
        read = _read_secret()
        if read is None:
            return 1
        secret = read
    if len(secret) < MIN_SECRET_LENGTH:
        print(f"a client secret must be at least {MIN_SECRET_LENGTH} characters", file=sys.stderr)
        return 1
    print(f'secret_hash = "{hash_secret(secret)}"')
    return 0


def _list_clients(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        registry = load_clients(path)
    except OidcConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for client in registry:
        methods = ",".join(m.value for m in client.auth_methods)
        backchannel = client.backchannel_logout_uri or "-"
        print(
            f"{client.client_id}\t{methods}\tpkce={'required' if client.require_pkce else 'off'}"
            f"\talg={client.id_token_alg.value}\tbackchannel={backchannel}"
        )
        for uri in client.redirect_uris:
            print(f"  redirect {uri}")
    return 0


def register(sub: Any) -> None:
    """Add the `clients` command group to the broker's CLI."""
    clients = sub.add_parser(
        "clients",
        help="the OpenID Provider's relying parties",
        **documented(
            "Make client secret hashes for clients.toml, or check and list its clients.",
            {2: "no ACTION given; otherwise as the ACTION's --help says"},
        ),
    )
    actions = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    hashing = actions.add_parser(
        "hash-secret",
        help="print a secret_hash line for clients.toml (secret read from stdin or a prompt)",
        **documented(
            "Print a secret_hash line for clients.toml. The secret is read from standard"
            " input or asked for twice without echo (never taken on the command line),"
            " or made with --generate and shown once.",
            {
                0: "printed",
                1: f"the two entries differ, or the secret is under {MIN_SECRET_LENGTH} characters",
            },
        ),
    )
    hashing.add_argument(
        "--generate", action="store_true", help="make a new random secret and print it once"
    )
    hashing.set_defaults(func=_hash_secret)
    listing = actions.add_parser(
        "list",
        help="check a clients file and list its clients",
        **documented(
            "Check a clients file and list its clients: authentication methods, PKCE,"
            " ID token algorithm, back-channel logout URI and redirect URIs.",
            {0: "the file is valid (its clients listed)", 1: "it is not (each problem named)"},
        ),
    )
    listing.add_argument(
        "file", type=Path, nargs="?", default=Path("config/clients.toml"), help="clients file"
    )
    listing.set_defaults(func=_list_clients)
