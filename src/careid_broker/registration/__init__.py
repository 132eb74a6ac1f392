"""One-time smartcard registration: password, card, confirmation (three steps).

`service.RegistrationService` holds the steps (no Flask); `web` is the blueprint
(`/register…`). Importing this package loads neither Flask nor the views.
"""
