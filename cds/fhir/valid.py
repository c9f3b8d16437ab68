"""Every FHIR resource pgx-cds writes is validated with fhir.resources (R4B, i.e. FHIR R4) first.

A resource we build that does not validate is our bug and raises `InvalidResource`; where part of it
came from a request (a suggestion keeps the draft order's encounter), the caller decides what to drop.

Validation is a pure function of the resource, and the resources of a screening run differ from one
patient to the next mostly in their ids and references (measured: validating costs 90% of writing a
patient's interpretation, ~2 ms a resource). So a resource is validated once per *shape*: the resource
with every `id` and `reference` value set aside; those values are checked on their own each time (an id
against FHIR's id pattern, a reference as a non-empty string), which is all fhir.resources checks of
them. The outcome is the one validating each resource in full gives.
"""
from __future__ import annotations

import hashlib
import importlib
import re
from typing import Any

import orjson

from cds.memo import Memo

_MODELS: dict[str, Any] = {}
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_SET_ASIDE = re.compile(rb'"(id|reference)":"((?:[^"\\]|\\.)*)"')
_SHAPES: Memo[bool] = Memo(20_000)


class InvalidResource(Exception):
    """A resource we built does not validate as FHIR R4: a bug here, never the user's input."""


def validated(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource`, after fhir.resources (R4B) has validated it; InvalidResource with pydantic's message
    otherwise."""
    text = orjson.dumps(resource)
    for field, value in _SET_ASIDE.findall(text):
        if (field == b"id" and not _ID.fullmatch(value.decode())) or (field == b"reference" and not value.strip()):
            _validate(resource)            # let fhir.resources say what is wrong
    # remembered by a digest of the shape: a resource may carry a patient's results, which a memo never holds
    shape = hashlib.blake2b(_SET_ASIDE.sub(rb'"\1":"x"', text), digest_size=16).digest()
    _SHAPES.get(shape, lambda: _validate(resource))
    return resource


def _validate(resource: dict[str, Any]) -> bool:
    from pydantic import ValidationError

    rtype = resource["resourceType"]
    model = _MODELS.get(rtype)
    if model is None:
        model = _MODELS[rtype] = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    try:
        model.model_validate(resource)
    except ValidationError as err:
        raise InvalidResource(f"{rtype}/{resource.get('id')}: {err}") from None
    return True
