"""Generic OpenAPI 3.0 request (and response) validator over a JSON or YAML spec, for emulators.

Usage::

    spec = OpenAPISpec.load(specs_dir() / "hetzner-cloud.spec.json")   # cached per process
    op = spec.validate_request("POST", "/servers", query={}, body=b'{"name": "x"}',
                               content_type="application/json")    # raises SpecViolation
    errors = spec.response_errors(op, 201, {"server": {...}})      # list of strings

Paths given to the validator are relative to the spec's first server URL (``/v1/servers`` at
Hetzner is ``/servers`` here; DigitalOcean's and Scaleway's servers have no path, so their paths
are used as they are; ``OpenAPISpec.base_path`` tells which prefix to strip).

What is checked for a request:
- the path matches a path template (literal segments win over ``{params}``) and the method exists;
- path parameters match their schema (integers are converted first);
- query parameters: required ones present, no unknown ones, each value converted to the
  declared type (integer, number, boolean, arrays as repeated keys or comma lists) and checked
  against its schema (enum, minimum, …);
- the body: required when the spec says so, absent when the operation takes none, a declared
  content type, and JSON bodies valid against the schema (OpenAPI 3.0 dialect: ``nullable``,
  ``readOnly`` properties not required in requests; ``$ref`` anywhere in the document);
- ``format`` (uuid, date-time, email, ipv4/ipv6, int32/int64…), in bodies and parameters;
- closed objects: a property the schema does not define is a violation (the real API would
  silently ignore a misspelt ``user_dat``), unless the schema allows extra properties
  (``additionalProperties`` true or a schema, ``patternProperties``, a free-form object).
Responses (the emulators' own answers) are checked the same way against the response schema.

It needs the test-only packages ``referencing`` and ``openapi-schema-validator`` (with
``rfc3339-validator`` for date-time); ``validation_available()`` says whether they are there.

Specs are big (Hetzner's is 3.4 MB): ``load`` parses each file once per process and builds
validators lazily per operation.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

try:  # test-only packages (.[test]): without them the emulators run, unvalidated
    import referencing
    import referencing.jsonschema
    from openapi_schema_validator import (
        OAS30ReadValidator,
        OAS30Validator,
        OAS30WriteValidator,
        oas30_format_checker,
    )
except ImportError as _exc:  # pragma: no cover - exercised in an app-only venv
    _MISSING: ImportError | None = _exc
else:
    _MISSING = None

__all__ = ["REQUIRED_FORMATS", "OpenAPISpec", "Operation", "SpecViolation", "validation_available"]

#: ``format`` values the validators must check (the ones our providers' specs use on fields we
#: send or read); loading a spec fails if the installed checker lacks one (date-time needs the
#: rfc3339-validator package, which openapi-schema-validator depends on).
REQUIRED_FORMATS = frozenset({"uuid", "date-time", "email", "ipv4", "ipv6", "int32", "int64"})


def validation_available() -> str | None:
    """None when spec validation can run, else why not (a missing test-only package)."""
    if _MISSING is not None:
        return f"{_MISSING} (install the test extras: pip install -e '.[test]')"
    missing = REQUIRED_FORMATS - set(oas30_format_checker.checkers)
    if missing:
        return f"the format checker cannot check {', '.join(sorted(missing))}"
    return None


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_SPEC_URI = "urn:bivy-openapi-spec"


class SpecViolation(AssertionError):
    """A request (or an emulator's response) the OpenAPI spec rejects.

    It is an ``AssertionError`` so that, raised inside a test, it fails the test.

    Attributes:
        method, path: the offending request.
        errors: one line per problem found.
    """

    def __init__(self, method: str, path: str, errors: Sequence[str]) -> None:
        self.method = method
        self.path = path
        self.errors = list(errors)
        super().__init__(f"{method} {path} violates the spec: " + "; ".join(self.errors))


@dataclass
class Operation:
    """One method on one path template of the spec.

    Attributes:
        method: upper-case HTTP method.
        template: the spec's path template ("/servers/{id}").
        pointer: JSON pointer of the operation object in the spec.
        parameters: dereferenced parameter objects (path-level merged with operation-level).
        request_body: the dereferenced requestBody object, or None.
        responses: the operation's responses object (entries may be references).
        path_params: values of the template's parameters in the matched request, as sent.
        body_pointer: JSON pointer of the requestBody object (followed through a ``$ref``).
    """

    method: str
    template: str
    pointer: str
    parameters: list[dict[str, Any]]
    request_body: dict[str, Any] | None
    responses: dict[str, Any]
    path_params: dict[str, str] = field(default_factory=dict)
    body_pointer: str = ""


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _segments(path: str) -> list[str]:
    return [s for s in path.strip("/").split("/") if s != ""] if path.strip("/") else []


_PARAM = re.compile(r"^\{([^{}]+)\}$")


def drop_dangling_discriminators(node: Any) -> int:
    """Remove every ``discriminator`` whose ``mapping`` names another file (returns how many).

    DigitalOcean's bundled spec keeps file references in discriminator mappings
    (``models/droplet_actions.yml#/droplet_action``) that bundling did not inline; a validator
    following them fails on any droplet action. A discriminator only picks which ``anyOf``/
    ``oneOf`` branch to report, so without it the same branches still validate the body.
    """
    dropped = 0
    if isinstance(node, dict):
        mapping = (node.get("discriminator") or {}).get("mapping") or {}
        if any(not str(ref).startswith("#") for ref in mapping.values()):
            del node["discriminator"]
            dropped += 1
        for value in node.values():
            dropped += drop_dangling_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            dropped += drop_dangling_discriminators(value)
    return dropped


class OpenAPISpec:
    """A parsed OpenAPI 3.0 document that validates requests and responses.

    Attributes:
        path: the file it was loaded from.
        document: the parsed document (do not mutate: it is shared across the session).
        base_path: the path of the first server URL ("/v1" for Hetzner, "" for the others).
    """

    _cache: dict[Path, OpenAPISpec] = {}  # noqa: RUF012 - process-wide cache by design
    _cache_lock = threading.Lock()

    def __init__(self, document: dict[str, Any], path: Path | None = None) -> None:
        problem = validation_available()
        if problem is not None:
            raise ImportError(f"OpenAPI validation is unavailable: {problem}")
        self.path = path
        self.document = document
        servers = document.get("servers") or [{"url": ""}]
        self.base_path = urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
        self._registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            _SPEC_URI,
            referencing.Resource.from_contents(
                document, default_specification=referencing.jsonschema.DRAFT4
            ),
        )
        self._templates: list[tuple[str, list[str]]] = [
            (t, _segments(t)) for t in document.get("paths", {})
        ]
        self._validators: dict[tuple[str, bool | None], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> OpenAPISpec:
        """Parse ``path`` (JSON or YAML) once per process and return the shared instance."""
        key = Path(path).resolve()
        with cls._cache_lock:
            spec = cls._cache.get(key)
            if spec is None:
                text = key.read_text(encoding="utf-8")
                if key.suffix == ".json":
                    document = json.loads(text)
                else:
                    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
                    document = yaml.load(text, Loader=loader)
                drop_dangling_discriminators(document)
                spec = cls(document, key)
                cls._cache[key] = spec
            return spec

    # -- lookup ------------------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """Follow ``$ref``s (local ones) until a non-reference node."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            node = self.pointer(str(node["$ref"]))
            seen += 1
            if seen > 50:
                raise ValueError("reference cycle in spec")
        return node

    def pointer(self, ref: str) -> Any:
        """The node at a local reference ("#/components/schemas/X")."""
        if not ref.startswith("#"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        node: Any = self.document
        for raw in ref[1:].split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def strip_base(self, path: str) -> str:
        """``path`` without the spec's base path ("/v1/servers" → "/servers")."""
        if self.base_path and (path == self.base_path or path.startswith(self.base_path + "/")):
            return path[len(self.base_path) :] or "/"
        return path

    def match(self, path: str) -> list[tuple[str, dict[str, str]]]:
        """Path templates matching ``path`` (relative to the base), most specific first."""
        segs = _segments(path)
        found: list[tuple[int, str, dict[str, str]]] = []
        for template, tsegs in self._templates:
            if len(tsegs) != len(segs):
                continue
            params: dict[str, str] = {}
            literals = 0
            for tseg, seg in zip(tsegs, segs, strict=True):
                m = _PARAM.match(tseg)
                if m:
                    params[m.group(1)] = seg
                elif tseg == seg:
                    literals += 1
                else:
                    break
            else:
                found.append((literals, template, params))
        found.sort(key=lambda item: -item[0])
        return [(t, p) for _, t, p in found]

    def operation(self, method: str, path: str) -> Operation:
        """The operation for ``method`` on ``path``; raises ``SpecViolation`` when there is none."""
        method = method.upper()
        matches = self.match(path)
        if not matches:
            raise SpecViolation(method, path, ["no such path in the spec"])
        for template, params in matches:
            item = self.resolve(self.document["paths"][template])
            op = item.get(method.lower())
            if op is None:
                continue
            merged: dict[tuple[str, str], dict[str, Any]] = {}
            for raw in list(item.get("parameters", [])) + list(op.get("parameters", [])):
                param = self.resolve(raw)
                merged[(param["name"], param["in"])] = param
            body = self.resolve(op["requestBody"]) if "requestBody" in op else None
            pointer = f"#/paths/{_escape(template)}/{method.lower()}"
            body_pointer = f"{pointer}/requestBody"
            raw_body = op.get("requestBody")
            while isinstance(raw_body, dict) and "$ref" in raw_body:
                body_pointer = str(raw_body["$ref"])
                raw_body = self.pointer(body_pointer)
            return Operation(
                method=method,
                template=template,
                pointer=pointer,
                parameters=list(merged.values()),
                request_body=body,
                responses=op.get("responses", {}),
                path_params=params,
                body_pointer=body_pointer,
            )
        allowed = sorted(
            {m.upper() for t, _ in matches for m in self.document["paths"][t] if m in _METHODS}
        )
        raise SpecViolation(method, path, [f"method not allowed (spec has {', '.join(allowed)})"])

    # -- validation --------------------------------------------------------------------------

    def _validator(self, pointer: str, *, write: bool | None) -> Any:
        """The validator of the schema at ``pointer`` (write: request, False: response, None:
        plain OAS 3.0, for parameters), with ``format`` checked."""
        key = (pointer, write)
        with self._lock:
            validator = self._validators.get(key)
            if validator is None:
                cls = {True: OAS30WriteValidator, False: OAS30ReadValidator}.get(
                    write, OAS30Validator
                )
                validator = cls(
                    {"$ref": _SPEC_URI + pointer},
                    registry=self._registry,
                    format_checker=oas30_format_checker,
                )
                self._validators[key] = validator
            return validator

    def schema_errors(
        self, pointer: str, instance: Any, *, write: bool, closed: bool = True
    ) -> list[str]:
        """Problems of ``instance`` against the schema at ``pointer`` (a "#/…" JSON pointer).

        With ``closed`` an object property the schema does not define is a problem too, unless
        the schema allows extra properties (``additionalProperties`` true or a schema,
        ``patternProperties``, or a free-form object that declares no properties): the real
        APIs ignore a misspelt field, which would hide our bug.
        """
        validator = self._validator(pointer, write=write)
        errors = []
        for error in validator.iter_errors(instance):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{where}: {error.message}")
        if closed and not errors:
            errors += _Closed(self, write).errors(pointer, instance, "")
        return errors

    def _value_errors(self, name: str, schema: Any, raw: Sequence[str], explode: bool) -> list[str]:
        schema = self.resolve(schema or {})
        try:
            value = _coerce(self, schema, raw, explode)
        except ValueError as exc:
            return [f"parameter {name!r}: {exc}"]
        # Parameters are not request bodies: ``readOnly`` (DigitalOcean marks the ssh key
        # identifier so) must not reject them, hence the plain OAS 3.0 validator.
        validator = OAS30Validator(
            schema, registry=self._registry, format_checker=oas30_format_checker
        )
        return [f"parameter {name!r}: {e.message}" for e in validator.iter_errors(value)]

    def validate_request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Sequence[str]] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Operation:
        """Check one request (``path`` relative to ``base_path``); raise ``SpecViolation``."""
        op = self.operation(method, path)
        errors: list[str] = []
        query = dict(query or {})
        declared = set()
        for param in op.parameters:
            name, where = param["name"], param["in"]
            schema = param.get("schema", {})
            if where == "path":
                errors += self._value_errors(name, schema, [op.path_params.get(name, "")], False)
            elif where == "query":
                declared.add(name)
                values = query.get(name)
                if not values:
                    if param.get("required"):
                        errors.append(f"missing required query parameter {name!r}")
                    continue
                explode = bool(param.get("explode", param.get("style", "form") == "form"))
                errors += self._value_errors(name, schema, list(values), explode)
        for name in query:
            if name not in declared:
                errors.append(f"unknown query parameter {name!r}")
        errors += self._body_errors(op, body, content_type)
        if errors:
            raise SpecViolation(op.method, path, errors)
        return op

    def _body_errors(
        self, op: Operation, body: bytes | None, content_type: str | None
    ) -> list[str]:
        spec_body = op.request_body
        if not body:
            if spec_body and spec_body.get("required"):
                return ["a request body is required"]
            return []
        if spec_body is None:
            return ["the operation takes no request body"]
        ctype = (content_type or "application/json").split(";")[0].strip().lower()
        content = spec_body.get("content", {})
        if ctype not in content and "*/*" not in content:
            return [f"content type {ctype!r} not accepted (spec: {', '.join(content)})"]
        if "json" not in ctype:
            return []
        try:
            instance = json.loads(body)
        except ValueError as exc:
            return [f"body is not JSON: {exc}"]
        key = ctype if ctype in content else "*/*"
        if "schema" not in content[key]:
            return []
        pointer = f"{op.body_pointer}/content/{_escape(key)}/schema"
        return self.schema_errors(pointer, instance, write=True)

    def response_errors(self, op: Operation, status: int, body: Any) -> list[str]:
        """Problems of a JSON response ``body`` for ``op`` and ``status`` (emulator self-checks)."""
        responses = op.responses
        candidates = [str(status), f"{str(status)[0]}XX", f"{str(status)[0]}xx", "default"]
        key = next((c for c in candidates if c in responses), "")
        if not key:
            return [f"status {status} is not documented"]
        raw = responses[key]
        base = f"{op.pointer}/responses/{_escape(key)}"
        if "$ref" in raw:
            base = raw["$ref"]
        resolved = self.resolve(raw)
        content = resolved.get("content") or {}
        if body is None:
            return []
        if "application/json" not in content or "schema" not in content["application/json"]:
            return []
        return self.schema_errors(f"{base}/content/application~1json/schema", body, write=False)


def _coerce(spec: OpenAPISpec, schema: Mapping[str, Any], raw: Sequence[str], explode: bool) -> Any:
    """Convert query/path strings to the schema's type (raises ValueError when impossible)."""
    kind = schema.get("type")
    if kind == "array":
        items = spec.resolve(schema.get("items", {}))
        parts = list(raw) if explode else [p for r in raw for p in r.split(",")]
        return [_scalar(items.get("type"), p) for p in parts]
    if len(raw) > 1:
        raise ValueError("given more than once")
    return _scalar(kind, raw[0])


def _scalar(kind: Any, text: str) -> Any:
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return text == "true"
    return text


class _Closed:
    """Finds object properties a schema does not define (see ``OpenAPISpec.schema_errors``).

    Walks the schema by JSON pointer alongside the instance: ``allOf`` members add up, of
    ``oneOf``/``anyOf`` only the branches the instance matches count (all of them if none does).
    """

    def __init__(self, spec: OpenAPISpec, write: bool) -> None:
        self.spec = spec
        self.write = write

    def _deref(self, pointer: str) -> tuple[str, Any]:
        node = self.spec.pointer(pointer)
        for _ in range(50):
            if not (isinstance(node, dict) and "$ref" in node):
                return pointer, node
            pointer = str(node["$ref"])
            node = self.spec.pointer(pointer)
        raise ValueError("reference cycle in spec")

    def _branches(self, pointer: str, node: dict[str, Any], instance: Any) -> list[str]:
        found = [f"{pointer}/allOf/{i}" for i in range(len(node.get("allOf", [])))]
        for keyword in ("oneOf", "anyOf"):
            options = [f"{pointer}/{keyword}/{i}" for i in range(len(node.get(keyword, [])))]
            matching = [
                o for o in options if self.spec._validator(o, write=self.write).is_valid(instance)
            ]
            found += matching or options
        return found

    def _object(
        self, pointer: str, instance: dict[str, Any], info: _ObjectInfo, depth: int
    ) -> None:
        if depth > 30:
            return
        pointer, node = self._deref(pointer)
        if not isinstance(node, dict):
            info.open = True
            return
        for name in node.get("properties") or {}:
            info.props.setdefault(name, []).append(f"{pointer}/properties/{_escape(name)}")
            info.constrained = True
        extra = node.get("additionalProperties")
        if extra is False:
            info.constrained = True
        elif extra is True or isinstance(extra, dict):
            info.open = True
            if isinstance(extra, dict):
                info.extra.append(f"{pointer}/additionalProperties")
        if "patternProperties" in node:
            info.open = True
        for branch in self._branches(pointer, node, instance):
            self._object(branch, instance, info, depth + 1)

    def _items(self, pointer: str, instance: list[Any], depth: int) -> list[str]:
        if depth > 30:
            return []
        pointer, node = self._deref(pointer)
        if not isinstance(node, dict):
            return []
        found = [f"{pointer}/items"] if isinstance(node.get("items"), dict) else []
        for branch in self._branches(pointer, node, instance):
            found += self._items(branch, instance, depth + 1)
        return found

    def errors(self, pointer: str, instance: Any, where: str) -> list[str]:
        problems: list[str] = []
        if isinstance(instance, dict):
            info = _ObjectInfo()
            self._object(pointer, instance, info, 0)
            for key, value in instance.items():
                here = f"{where}/{key}" if where else str(key)
                schemas = info.props.get(key)
                if schemas is None:
                    if info.constrained and not info.open:
                        problems.append(
                            f"{where or '(root)'}: property {key!r} is not defined by the spec"
                        )
                        continue
                    schemas = info.extra
                for sub in schemas:
                    problems += self.errors(sub, value, here)
        elif isinstance(instance, list):
            for sub in self._items(pointer, instance, 0):
                for i, value in enumerate(instance):
                    problems += self.errors(sub, value, f"{where}/{i}" if where else str(i))
        return list(dict.fromkeys(problems))


@dataclass
class _ObjectInfo:
    """What the schemas that apply to one object say about its property names."""

    props: dict[str, list[str]] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    open: bool = False
    constrained: bool = False
