"""Helpers every test folder shares, importable as `support` (pytest's `pythonpath`)."""
