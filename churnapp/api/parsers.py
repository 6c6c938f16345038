"""The API's JSON parser: DRF's, refusing bodies nested deeper than JSON_MAX_DEPTH or
holding NUL characters with a 400, instead of a RecursionError or a database error (500)."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from churnapp.normalize import JSON_MAX_DEPTH, json_value_check


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels")
        try:
            json_value_check(data)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")
        return data
