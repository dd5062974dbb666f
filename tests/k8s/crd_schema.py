"""CRD schemas as an API server applies them: prune unknown fields, apply defaults, validate.

Translates the OpenAPI v3 dialect of CRDs (nullable, x-kubernetes-int-or-string,
x-kubernetes-preserve-unknown-fields) into JSON Schema for ``jsonschema``. CEL rules
(x-kubernetes-validations), ``format`` and list-type uniqueness are NOT enforced: see gaps().
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
EMBEDDED = "x-kubernetes-embedded-resource"
# What a real server enforces and this emulator does not: tests must not rely on these.
GAPS = (
    "CEL rules (x-kubernetes-validations)",
    "string formats (date-time, int32...)",
    "x-kubernetes-list-type set/map uniqueness",
)


@dataclass(frozen=True)
class Cause:
    field: str
    reason: str  # FieldValueInvalid | FieldValueRequired | FieldValueNotSupported ...
    message: str

    def to_status(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def to_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 (CRD dialect) schema node as JSON Schema (draft 7)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_jsonschema(sub) for sub in value]
        elif key in ("description", "default", "example", "format", "nullable") or key.startswith(
            "x-kubernetes-"
        ):
            continue
        else:
            out[key] = value
    if schema.get(INT_OR_STRING):
        out["type"] = ["integer", "string"]
    if schema.get(PRESERVE) and "type" not in out and "properties" not in schema:
        out.pop("type", None)
    if schema.get("nullable"):
        kinds = out.get("type")
        if isinstance(kinds, str):
            out["type"] = [kinds, "null"]
        elif isinstance(kinds, list):
            out["type"] = [*kinds, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def prune(value: Any, schema: dict[str, Any], path: str, removed: list[str]) -> None:
    """Drop fields the structural schema does not specify, as the server does (in place)."""
    if isinstance(value, dict):
        keep = {"apiVersion", "kind", "metadata"} if schema.get(EMBEDDED) else set()
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(value):
            child = _join(path, key)
            if properties is not None and key in properties:
                prune(value[key], properties[key], child, removed)
            elif isinstance(extra, dict):
                prune(value[key], extra, child, removed)
            elif schema.get(PRESERVE) or extra is True or key in keep:
                continue
            elif _is_object_schema(schema) or properties is not None:
                del value[key]
                removed.append(child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            prune(item, schema["items"], _join(path, index), removed)


def apply_defaults(value: Any, schema: dict[str, Any]) -> None:
    """Fill ``default`` values and drop nulls of non-nullable fields, like server defaulting."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key in value and value[key] is None and not sub.get("nullable"):
                if "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                else:
                    del value[key]
            elif key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(properties):
                apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


_JSON_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
    "NoneType": "null",
}


def _causes(errors: Iterator[jsonschema.ValidationError]) -> list[Cause]:
    causes = []
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        path = ""
        for key in error.absolute_path:
            path = _join(path, key)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else "?"
            field_path = _join(path, missing)
            causes.append(Cause(field_path, "FieldValueRequired", f"{field_path}: Required value"))
            continue
        shown = json.dumps(error.instance)[:120]
        if error.validator == "enum":
            allowed = ", ".join(json.dumps(v) for v in error.validator_value)
            message = f"{path}: Unsupported value: {shown}: supported values: {allowed}"
            causes.append(Cause(path, "FieldValueNotSupported", message))
            continue
        if error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            actual = _JSON_TYPES.get(type(error.instance).__name__, "unknown")
            detail = f'must be of type {expected}: "{actual}"'
        else:
            detail = error.message
        message = f"{path}: Invalid value: {shown}: {path} in body {detail}"
        causes.append(Cause(path, "FieldValueInvalid", message))
    return causes


@dataclass
class VersionSchema:
    """The openAPIV3Schema of one served version; the validator is built on first use."""

    openapi: dict[str, Any]
    _validator: jsonschema.Draft7Validator | None = field(default=None, repr=False)

    def admit(self, obj: dict[str, Any]) -> tuple[list[str], list[Cause]]:
        """Prune, default and validate ``obj`` in place: (pruned field paths, causes)."""
        removed: list[str] = []
        # The server never prunes the type and object metadata at the root.
        kept = {key: obj.pop(key) for key in ("apiVersion", "kind", "metadata") if key in obj}
        prune(obj, self.openapi, "", removed)
        apply_defaults(obj, self.openapi)
        if self._validator is None:
            self._validator = jsonschema.Draft7Validator(to_jsonschema(self.openapi))
        obj.update(kept)
        return removed, _causes(self._validator.iter_errors(obj))


@dataclass(frozen=True)
class CrdVersion:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status_subresource: bool
    schema: VersionSchema | None


def load_crds(directory: Path) -> list[CrdVersion]:
    """Every served version of every CRD in ``directory/*.yaml``."""
    found: list[CrdVersion] = []
    for path in sorted(directory.glob("*.yaml")):
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for doc in yaml.load_all(path.read_text(), Loader=loader):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                openapi = (version.get("schema") or {}).get("openAPIV3Schema")
                found.append(
                    CrdVersion(
                        group=spec["group"],
                        version=version["name"],
                        plural=names["plural"],
                        singular=names.get("singular", names["kind"].lower()),
                        kind=names["kind"],
                        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                        status_subresource="status" in (version.get("subresources") or {}),
                        schema=VersionSchema(openapi) if openapi else None,
                    )
                )
    return found
