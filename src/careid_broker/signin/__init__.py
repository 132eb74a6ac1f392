"""Sign-in services: what a sign-in method checks, below the web views, above the adapters."""
