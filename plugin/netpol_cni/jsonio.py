"""JSON through CPython's C accelerator (`_json`) alone.

`import json` pulls in `re` (and with it enum and functools): about 5 ms of a plugin run whose
whole budget is ~10 ms. The scanner and encoder the `json` package uses are C objects that can
be built directly; this module does exactly that and behaves like `json.loads`/`json.dumps`
(compact separators) for the documents a runtime exchanges with a plugin. `NaN`/`Infinity` are
refused, as strict JSON requires."""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _ScannerContext:
    """The attributes `_json.make_scanner` reads from a `json.JSONDecoder`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_refuse_constant)


def _refuse_object(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# typeshed types the first argument as a `make_scanner` (it is duck-typed: any object with
# JSONDecoder's attributes does).
_scan_once = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
_encode = _json.make_encoder(None, _refuse_object, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, False)


def loads(text: str) -> Any:
    """The JSON value `text` holds; ValueError (with the offset) when it is not one."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan_once(text, start)
    except (StopIteration, SystemError, ValueError):
        # The C scanner builds its error from `json.decoder`, which it expects to be imported
        # already (SystemError when it is not). Only on this path: let `json` say what is wrong.
        return _loads_reporting_errors(text)
    if text[end:].strip(_WHITESPACE):
        return _loads_reporting_errors(text)  # extra data after the value
    return value


def _loads_reporting_errors(text: str) -> Any:
    import json  # noqa: PLC0415 - the error path only; see loads

    return json.loads(text, parse_constant=_refuse_constant)


def dumps(value: object) -> str:
    """Compact JSON (ASCII, `,` and `:` without spaces)."""
    return "".join(_encode(value, 0))
