"""The federation broker: OpenID Provider for web apps, card sign-in, registration.

`careid_broker.app.create_app` builds the web app; `careid_broker.broker.build_broker`
the same services without Flask (the CLI).
"""
