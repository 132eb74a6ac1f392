"""Local administrators: a web console (`/admin`), a JSON API (`/api/v1`) and a CLI.

Administrators are defined by the directory (a mail account's administered
organisations) and act only on accounts and registrations of those organisations.
Kept import-light: broker.toml's `[admin]`/`[api]` sections are read from
`careid_broker.admin.config` before Flask or the OpenID Provider are loaded.
"""
