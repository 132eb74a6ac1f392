"""The `careid-auth:1` contract shared by the agent and the broker. Pure: no I/O."""

from __future__ import annotations

from careid_protocol.errors import ErrorCode, message_for

__all__ = ["ErrorCode", "message_for"]
