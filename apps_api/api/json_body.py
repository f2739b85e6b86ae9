"""The device API's JSON body parser: DRF's, but a body that would take the agent's memory
is refused (413) before it is parsed. A 10 MB body (the most a request may carry) of empty
lists is 240 MB of Python objects; a target of a thousand services holds a few tens of
thousands of arrays and objects, so MAX_JSON_CONTAINERS refuses no real document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_CONTAINERS = 100_000


class BodyTooComplex(APIException):
    status_code = 413
    default_detail = f"Request body holds more than {MAX_JSON_CONTAINERS} JSON arrays and objects"


class BoundedJSONParser(JSONParser):
    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", "utf-8")
        raw = stream.read() if stream is not None else b""
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_CONTAINERS:
            raise BodyTooComplex()
        try:
            return json.loads(raw.decode(encoding), parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
