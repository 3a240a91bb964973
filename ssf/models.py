"""Shared helpers for the wire models: strict parsing that raises the core's own errors."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, PlainSerializer, ValidationError

from ssf.errors import ModelError, SSFError
from ssf.subjects import Subject, parse_subject

M = TypeVar("M", bound=BaseModel)


def _to_subject(value: object) -> Subject:
    if isinstance(value, Subject):
        return value
    try:
        return parse_subject(value)
    except SSFError as exc:
        raise ValueError(exc.description) from None


#: A subject identifier member of a wire model: validated on input, SSF 1.0 form on output.
SubjectField = Annotated[Subject, BeforeValidator(_to_subject), PlainSerializer(lambda s: s.to_dict())]


def parse_model(model: type[M], data: object) -> M:
    """Validate decoded JSON against a model; every failure is a :class:`ModelError`."""
    if not isinstance(data, dict):
        raise ModelError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ModelError(describe_validation_error(exc)) from None


def parse_json_model(model: type[M], body: bytes | str) -> M:
    """Decode JSON text, then :func:`parse_model`."""
    return parse_model(model, load_json(body))


def load_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelError("the request body is not valid JSON") from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
