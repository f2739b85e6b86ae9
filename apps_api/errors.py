"""Errors of the device API's actions and reads; `apps_api.api.errors` turns them into
answers (status code from the class, body as text or `{"status":"failed","message"}`)."""

from __future__ import annotations


class DeviceApiError(Exception):
    status = 503

    def __init__(self, message: str, *, text: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        """Answer in plain text instead of the JSON failure shape (docs/api.md "Error shapes")."""


class BadRequest(DeviceApiError):
    status = 400


class NotInScope(DeviceApiError):
    """The caller's key does not cover this app (never 403: docs/api.md "API keys")."""

    status = 401


class NotFound(DeviceApiError):
    status = 404


class Conflict(DeviceApiError):
    status = 409


class Locked(DeviceApiError):
    """An update lock refused the action, for the endpoints that say so in text."""

    status = 423


class ActionFailed(DeviceApiError):
    status = 503


class InternalFailure(DeviceApiError):
    """The few endpoints whose contract says 500 for an unexpected failure."""

    status = 500


class PowerActionRefused(Exception):
    """Reboot or shutdown did not start: 423 when an update lock (or a host OS update) stopped
    it, else 500; the body is `{"Data": "", "Error": <message>}` (docs/api.md "Error shapes")."""

    def __init__(self, message: str, *, locked: bool) -> None:
        super().__init__(message)
        self.locked = locked
