"""End-to-end tests: the whole chain in Chromium (a package, so the chain stops after them)."""
