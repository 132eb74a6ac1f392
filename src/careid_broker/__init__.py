"""The federation broker: OpenID Provider for web apps, card sign-in, registration."""
