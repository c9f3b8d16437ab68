"""Every FHIR resource pgx-cds writes is validated with fhir.resources (R4B, i.e. FHIR R4) first.

A resource we build that does not validate is our bug and raises `InvalidResource`; where part of it
came from a request (a suggestion keeps the draft order's encounter), the caller decides what to drop.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODELS: dict[str, Any] = {}


class InvalidResource(Exception):
    """A resource we built does not validate as FHIR R4: a bug here, never the user's input."""


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource`, after fhir.resources (R4B) has validated it; InvalidResource with pydantic's message
    otherwise."""
    from pydantic import ValidationError

    rtype = resource["resourceType"]
    model = _MODELS.get(rtype)
    if model is None:
        model = _MODELS[rtype] = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    try:
        model.model_validate(resource)
    except ValidationError as err:
        raise InvalidResource(f"{rtype}/{resource.get('id')}: {err}") from None
    return resource
