"""The registrations API described in OpenAPI 3.1 (served at `/api/v1/openapi.json`).

Kept true by tests/admin: every `/api/v1` route of the app must be here with its
methods (and nothing else), and real responses are checked against these schemas.
"""

from __future__ import annotations

from typing import Any

from careid_broker.admin.config import ApiScope
from careid_broker.admin.reasons import MAX_REASON_TEXT, RemovalReason
from careid_broker.store import LinkMode

API_VERSION = "1.0.0"
_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *, challenge: bool = False) -> dict[str, Any]:
    response = _json(_ref("Error"), description)
    if challenge:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "RFC 6750 §3 challenge (realm, and error/scope when known)",
                "schema": {"type": "string"},
            }
        }
    return response


def _secured(scope: ApiScope) -> list[dict[str, list[str]]]:
    return [{"oauth2": [scope.value]}]


_UUID_PARAMETER = {
    "name": "card_uuid",
    "in": "path",
    "required": True,
    "description": "The Care Identity UUID of the registered card holder",
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
}

_AUTH_ERRORS = {
    "401": _error("No access token, or one that is not valid (expired, revoked)", challenge=True),
    "403": _error("The token lacks the scope this operation needs", challenge=True),
    "503": _error("The directory or the database cannot be reached: retry after Retry-After"),
}


def _schemas() -> dict[str, Any]:
    nullable_string = {"type": ["string", "null"]}
    return {
        "Registration": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "card_uuid",
                "account_mail",
                "org_code",
                "link_mode",
                "cert_issuer_dn",
                "cert_serial",
                "cert_fingerprint",
                "registered_at",
                "how",
            ],
            "properties": {
                "card_uuid": {"type": "string", "description": "Care Identity UUID"},
                "account_mail": {"type": "string", "description": "The linked mail account"},
                "org_code": {"type": "string", "description": "Organisation (ODS) code"},
                "link_mode": {"type": "string", "enum": [m.value for m in LinkMode]},
                "cert_issuer_dn": {"type": "string"},
                "cert_serial": {"type": "string", "description": "Hexadecimal"},
                "cert_fingerprint": {"type": "string", "description": "SHA-256, hexadecimal"},
                "registered_at": {"type": "string", "format": "date-time"},
                "how": {"type": "string", "description": "How it was registered"},
            },
        },
        "RegistrationPage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["items", "total", "offset", "limit", "next_offset"],
            "properties": {
                "items": {"type": "array", "items": _ref("Registration")},
                "total": {"type": "integer", "minimum": 0},
                "offset": {"type": "integer", "minimum": 0},
                "limit": {"type": "integer", "minimum": 1, "maximum": 200},
                "next_offset": {
                    "type": ["integer", "null"],
                    "description": "The offset of the next page, or null on the last page",
                },
            },
        },
        "RemovalRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "enum": [r.value for r in RemovalReason]},
                "reason_text": {
                    "type": ["string", "null"],
                    "maxLength": MAX_REASON_TEXT,
                    "description": "Required (and only kept) when reason is 'other'",
                },
            },
        },
        "Removal": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "removed",
                "reason",
                "reason_text",
                "sessions_ended",
                "relying_parties_notified",
            ],
            "properties": {
                "removed": _ref("Registration"),
                "reason": {"type": "string", "enum": [r.value for r in RemovalReason]},
                "reason_text": nullable_string,
                "sessions_ended": {"type": "integer", "minimum": 0},
                "relying_parties_notified": {"type": "array", "items": {"type": "string"}},
            },
        },
        "RevocationCheck": {
            "type": "object",
            "additionalProperties": False,
            "required": ["card_uuid", "result", "code", "sessions_ended"],
            "properties": {
                "card_uuid": {"type": "string"},
                "result": {
                    "type": "string",
                    "enum": [
                        "good",
                        "revoked",
                        "unavailable",
                        "invalid",
                        "no_certificate",
                        "not_configured",
                    ],
                },
                "code": nullable_string,
                "sessions_ended": {"type": "integer", "minimum": 0},
            },
        },
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "message", "request_id"],
            "properties": {
                "error": {"type": "string", "description": "A stable error code"},
                "message": {"type": "string", "description": "What to do, in plain words"},
                "request_id": nullable_string,
            },
        },
        "TokenResponse": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "scope"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer", "minimum": 1},
                "scope": {"type": "string"},
            },
        },
        "OAuthError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "RFC 6749 §5.2 error code"},
                "error_description": {"type": "string"},
            },
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/token": {
            "post": {
                "operationId": "getToken",
                "summary": "Get an access token (OAuth 2.0 client credentials grant)",
                "description": "Authenticate with HTTP Basic (client_secret_basic) or with"
                " client_id and client_secret in the form (client_secret_post), not both:"
                " a request with both is refused invalid_request (RFC 6749 section 2.3).",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["grant_type"],
                                "properties": {
                                    "grant_type": {
                                        "type": "string",
                                        "enum": ["client_credentials"],
                                    },
                                    "scope": {"type": "string"},
                                    "client_id": {"type": "string"},
                                    "client_secret": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("TokenResponse"), "A bearer token"),
                    "400": _json(_ref("OAuthError"), "Invalid request, grant or scope"),
                    "401": _json(_ref("OAuthError"), "Client authentication failed"),
                },
            }
        },
        "/api/v1/registrations": {
            "get": {
                "operationId": "listRegistrations",
                "summary": "List the registrations of the client's organisations",
                "security": _secured(ApiScope.READ),
                "parameters": [
                    {
                        "name": "org",
                        "in": "query",
                        "description": "Only this organisation (one of the client's)",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,32}$"},
                    },
                    {
                        "name": "uuid",
                        "in": "query",
                        "description": "Only this Care Identity UUID",
                        "schema": {"type": "string", "maxLength": 64},
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "description": "Part of the mail address, directory DN or UUID",
                        "schema": {"type": "string", "maxLength": 128},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {
                    "200": _json(_ref("RegistrationPage"), "A page, newest first"),
                    "400": _error("A parameter is not valid"),
                    **_AUTH_ERRORS,
                    "404": _error("The organisation is not one of the client's"),
                },
            }
        },
        "/api/v1/registrations/{card_uuid}": {
            "get": {
                "operationId": "getRegistration",
                "summary": "One registration",
                "security": _secured(ApiScope.READ),
                "parameters": [_UUID_PARAMETER],
                "responses": {
                    "200": _json(_ref("Registration"), "The registration"),
                    **_AUTH_ERRORS,
                    "404": _error("No such registration in the client's organisations"),
                },
            }
        },
        "/api/v1/registrations/{card_uuid}/remove": {
            "post": {
                "operationId": "removeRegistration",
                "summary": "Remove a registration: the person's sessions end, their"
                " services are told, and they may register again",
                "security": _secured(ApiScope.WRITE),
                "parameters": [_UUID_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RemovalRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Removal"), "Removed"),
                    "400": _error("No usable reason, or not a JSON body"),
                    **_AUTH_ERRORS,
                    "404": _error("No such registration in the client's organisations"),
                    "409": _error("The registration changed during the removal"),
                },
            }
        },
        "/api/v1/registrations/{card_uuid}/check-revocation": {
            "post": {
                "operationId": "checkRevocation",
                "summary": "Ask now whether the registered card is revoked (no cached"
                " answer); if it is, the person's sessions end and their services are told",
                "security": _secured(ApiScope.WRITE),
                "parameters": [_UUID_PARAMETER],
                "responses": {
                    "200": _json(_ref("RevocationCheck"), "What the check found"),
                    **_AUTH_ERRORS,
                    "404": _error("No such registration in the client's organisations"),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document"}},
            }
        },
    }


def openapi_document(issuer: str) -> dict[str, Any]:
    """The whole document, with the token URL under this broker's issuer."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Care Identity broker: registrations API",
            "version": API_VERSION,
            "description": "For an organisation's own systems (joiners and leavers, service"
            " desk tools): list and remove smartcard registrations of the organisations"
            " the client is configured for. Errors carry a stable code and a plain message.",
        },
        "servers": [{"url": issuer}],
        "security": [{"oauth2": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": f"{issuer}/api/v1/token",
                            "scopes": {
                                ApiScope.READ.value: "List and read registrations",
                                ApiScope.WRITE.value: "Remove registrations",
                            },
                        }
                    },
                }
            },
        },
    }
