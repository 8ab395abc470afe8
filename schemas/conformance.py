"""Do a pydantic model and its Avro schema agree, field for field?

Names and order, types (``str`` <-> string, ``int`` <-> long, ``datetime`` <-> long
timestamp-millis, ``X | None`` <-> ``["null", X]``, ``tuple[X, ...]`` <-> array, ``dict[str, X]``
<-> map, a nested model <-> a record of the same name), optionality and defaults. Fields with a
``default_factory`` (the envelope's ``event_id`` and ``occurred_at``) are required on the wire.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .compat import normalise

_SCALARS = {str: "string", int: "long", bool: "boolean", float: "double", bytes: "bytes"}


def describe_python(annotation: Any) -> str:
    """A type annotation as a short Avro-like text: ``union<null,string>``, ``array<string>``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return describe_python(args[0])
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == len(args) - 1 and len(rest) == 1:
            return f"union<null,{describe_python(rest[0])}>"
        return "union<" + ",".join(describe_python(a) for a in args) + ">"
    if origin is Literal:
        kinds = {type(a) for a in args}
        return _SCALARS[kinds.pop()] if len(kinds) == 1 else f"unsupported {annotation!r}"
    if origin in (tuple, list) and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        return f"array<{describe_python(args[0])}>"
    if origin is dict and args and args[0] is str:
        return f"map<{describe_python(args[1])}>"
    if annotation is datetime:
        return "long(timestamp-millis)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        inner = ",".join(f"{n}:{describe_python(f.annotation)}" for n, f in annotation.model_fields.items())
        return f"record {annotation.__name__}{{{inner}}}"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    return f"unsupported {annotation!r}"


def describe_avro(schema: dict[str, Any]) -> str:
    """A normalised Avro schema (``compat.normalise``) in the same text."""
    kind = schema["type"]
    if kind == "union":
        return "union<" + ",".join(describe_avro(b) for b in schema["branches"]) + ">"
    if kind == "array":
        return f"array<{describe_avro(schema['items'])}>"
    if kind == "map":
        return f"map<{describe_avro(schema['values'])}>"
    if kind == "record":
        inner = ",".join(f"{f['name']}:{describe_avro(f['type'])}" for f in schema["fields"])
        return f"record {schema['name'].rpartition('.')[2]}{{{inner}}}"
    if kind == "enum":
        return "string"  # an Avro enum reads as a str
    return kind + (f"({schema['logicalType']})" if "logicalType" in schema else "")


def _wire_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_wire_default(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def mismatches(model: type[BaseModel], raw_schema: dict[str, Any]) -> list[str]:
    """Every way the model and the (raw JSON) record schema disagree; empty when they agree."""
    name = getattr(model, "event_type", model.__name__)
    schema = normalise(raw_schema)
    raw_fields = {f["name"]: f for f in raw_schema["fields"]}
    model_names, schema_names = list(model.model_fields), [f["name"] for f in schema["fields"]]
    found: list[str] = []
    if model_names != schema_names:
        found.append(f"{name}: the model's fields {model_names} differ from the schema's {schema_names} "
                     "(names and order must match)")
    for field in schema["fields"]:
        info = model.model_fields.get(field["name"])
        if info is None:
            continue
        py, av = describe_python(info.annotation), describe_avro(field["type"])
        if py != av:
            found.append(f"{name}.{field['name']}: the model has {py}, the schema {av}")
        raw = raw_fields[field["name"]]
        if info.default_factory is not None or info.is_required():
            if "default" in raw:
                found.append(f"{name}.{field['name']}: required in the model (or generated), "
                             f"but the schema gives the default {raw['default']!r}")
        elif "default" not in raw:
            found.append(f"{name}.{field['name']}: the model defaults to {info.default!r}, the schema has no default")
        elif info.default is not PydanticUndefined and _wire_default(info.default) != raw["default"]:
            found.append(f"{name}.{field['name']}: the model defaults to {info.default!r}, "
                         f"the schema to {raw['default']!r}")
    return found
