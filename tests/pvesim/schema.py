"""PVE's API schema: routes, parameter validation and property strings, as pve-common does them.

The validation is a line-by-line port of ``PVE::JSONSchema::check_prop``/``check_object``/
``check_type``/``parse_property_string`` so that error paths and messages are PVE's own:

    errors = API.validate(endpoint, {"node": "pve", "vmid": "100", "net0": "virtio=zz"})
    # {"net0": "invalid format - format error\\nnet0.macaddr: invalid format - value does not
    #   look like a valid unicast MAC address\\n\\n"}

Values arrive as strings (form encoding) or as JSON values; ``bool`` stands for a JSON boolean.
"""

from __future__ import annotations

import json
import lzma
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.pvesim import formats
from tests.pvesim.formats import FormatError

DATA = Path(__file__).resolve().parent / "data"


def perl_str(value: Any) -> str:
    """How Perl prints a JSON scalar (numbers without a trailing ``.0``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.15g}"
    return str(value)


def perl_regex(pattern: str) -> str:
    """A Perl pattern from the schema as a Python one: ``(?^:…)`` / ``(?^i:…)`` become groups."""
    return re.sub(r"\(\?\^([a-z]*):", lambda m: f"(?{m.group(1)}:" if m.group(1) else "(?:", pattern)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # PVE: $value =~ m/^$pattern$/ (no group around the pattern, exactly like Perl).
    return re.compile("^" + perl_regex(pattern) + "$")


def add_error(errors: dict[str, str], path: str, msg: str) -> None:
    path = path or "_root"
    errors[path] = errors[path] + "\n" + msg if path in errors else msg


def is_number(value: str) -> bool:
    return re.match(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$", value) is not None


def is_integer(value: str) -> bool:
    return re.match(r"^[+-]?\d+$", value) is not None


def _perl_ref(value: Any) -> str:
    if isinstance(value, bool):
        return "JSON::PP::Boolean"
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        return "HASH"
    return ""


def check_type(path: str, typ: Any, value: Any, errors: dict[str, str]) -> bool:
    if not typ or typ == "any":
        return True
    vt = _perl_ref(value)
    if typ == "null":
        add_error(errors, path, f"type check ('{typ}') failed - value is not null")
        return False
    if typ == "array":
        if vt != "ARRAY":
            add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if typ == "object":
        if vt != "HASH":
            add_error(errors, path, f"type check ('{typ}') failed")
            return False
        return True
    if vt:
        if typ == "boolean" and vt == "JSON::PP::Boolean":
            return True
        add_error(errors, path, f"type check ('{typ}') failed - got {vt}")
        return False
    text = perl_str(value)
    if typ == "boolean" and text not in ("0", "1"):
        add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
        return False
    if typ == "integer" and not is_integer(text):
        add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
        return False
    if typ == "number" and not is_number(text):
        add_error(errors, path, f"type check ('{typ}') failed - got '{text}'")
        return False
    return True


def check_prop(value: Any, schema: dict[str, Any], path: str, errors: dict[str, str]) -> None:
    if value is None:
        if schema.get("type") == "null":
            return
        if not schema.get("optional") and not schema.get("alias") and not schema.get("group"):
            add_error(errors, path, "property is missing and it is not optional")
        return
    if not check_type(path, schema.get("type"), value, errors):
        return
    vt = _perl_ref(value)
    if vt:
        if vt == "ARRAY":
            if isinstance(schema.get("items"), dict):
                for i, item in enumerate(value):
                    check_prop(item, schema["items"], f"{path}[{i}]", errors)
            return
        if vt == "HASH" and (schema.get("properties") or schema.get("additionalProperties")):
            check_object(path, schema.get("properties") or {}, value, schema.get("additionalProperties"), errors)
        return
    text = perl_str(value)
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, text, path)
        except FormatError as exc:
            add_error(errors, path, "invalid format - " + exc.stringify())
            return
    pattern = schema.get("pattern")
    if pattern and not _compiled(pattern).search(text):
        add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(text) > schema["maxLength"]:
        add_error(errors, path, f"value may only be {perl_str(schema['maxLength'])} characters long")
        return
    if schema.get("minLength") is not None and len(text) < schema["minLength"]:
        add_error(errors, path, f"value must be at least {perl_str(schema['minLength'])} characters long")
        return
    if is_number(text):
        if schema.get("maximum") is not None and float(text) > float(schema["maximum"]):
            add_error(errors, path, f"value must have a maximum value of {perl_str(schema['maximum'])}")
            return
        if schema.get("minimum") is not None and float(text) < float(schema["minimum"]):
            add_error(errors, path, f"value must have a minimum value of {perl_str(schema['minimum'])}")
            return
    enum = schema.get("enum")
    if enum and text not in [perl_str(e) for e in enum]:
        add_error(
            errors, path, f"value '{text}' does not have a value in the enumeration '{', '.join(map(perl_str, enum))}'"
        )


def check_object(
    path: str, props: dict[str, Any], value: dict[str, Any], additional: Any, errors: dict[str, str]
) -> None:
    for key in sorted(props):
        check_prop(value.get(key), props[key], f"{path}.{key}" if path else key, errors)
    for key in sorted(value):
        newpath = f"{path}.{key}" if path else key
        sub = props.get(key)
        if sub is not None:
            requires = sub.get("requires")
            if isinstance(requires, dict):
                check_prop(value, requires, path, errors)
            elif requires and value.get(requires) is None:
                add_error(
                    errors, f"{path}.{requires}" if path else requires, f"missing property - '{newpath}' requires this property"
                )
            continue
        if additional is not None and not additional:
            add_error(errors, newpath, "property is not defined in schema and the schema does not allow additional properties")
            continue
        if isinstance(additional, dict):
            check_prop(value[key], additional, newpath, errors)


def parse_boolean(text: str) -> int | None:
    if re.match(r"^(1|on|yes|true)$", text, re.I):
        return 1
    if re.match(r"^(0|off|no|false)$", text, re.I):
        return 0
    return None


def parse_property_string(fmt: dict[str, Any] | str, data: str, path: str = "") -> dict[str, Any]:
    """``PVE::JSONSchema::parse_property_string``: ``virtio=BC:..,bridge=vmbr0`` -> dict.

    Raises FormatError with PVE's message (and per-key errors) when the string is invalid.
    """
    validator = None
    if isinstance(fmt, str):
        validator = formats.HASH_VALIDATORS.get(fmt)
        fmt = hash_format(fmt)
    res: dict[str, Any] = {}
    default_key: str | None = None
    for part in data.split(","):
        if re.match(r"^\s*$", part):
            continue
        m = re.match(r"^([^=]+)=(.+)$", part, re.S)
        if m:
            key, val = m.group(1), m.group(2)
            if res.get(key) is not None:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            schema = fmt.get(key)
            if schema and schema.get("alias"):
                key_alias = schema.get("keyAlias")
                if key_alias:
                    if res.get(key_alias) is not None:
                        raise FormatError(f"key alias '{key_alias}' is already defined\n")
                    res[key_alias] = key
                key = schema["alias"]
                schema = fmt.get(key)
            if not schema:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if schema.get("type") == "boolean":
                parsed = parse_boolean(val)
                val = str(parsed) if parsed is not None else val
            res[key] = val
        elif "=" not in part:
            if default_key:
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            for key in fmt:
                if fmt[key].get("default_key"):
                    default_key = key
                    if not res.get(key):
                        res[key] = part
                        break
                    raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            if not default_key:
                raise FormatError("value without key, but schema does not define a default key\n")
        else:
            raise FormatError("missing key in comma-separated list property\n")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, 0, errors)
    if errors:
        raise FormatError("format error\n", errors)
    if validator:
        validator(res)
    return res


def hash_format(name: str) -> dict[str, Any]:
    fmt = formats.HASH_FORMATS.get(name)
    if fmt is None:
        raise FormatError(f"unknown format: {name}\n")
    return fmt


def check_format(fmt: Any, value: str, path: str) -> Any:
    """``PVE::JSONSchema::check_format``: raises FormatError, returns the parsed value."""
    if isinstance(fmt, dict):
        return parse_property_string(fmt, value, path)
    if fmt == "regex":
        return value
    m = re.match(r"^(.*?)(?:-(list|opt))?$", fmt)
    assert m
    name, kind = m.group(1), m.group(2) or "none"
    if name in formats.NOT_SIMULATED:
        raise FormatError(f"format '{name}' is not simulated (pvesim): do not send '{path}'\n")
    if name in formats.HASH_FORMATS:
        if kind != "none":
            raise FormatError(f"'-{kind}' format must have code ref, not hash\n")
        return parse_property_string(name, value, path)
    code = formats.CODE_FORMATS.get(name)
    if code is None:
        raise FormatError(f"undefined format '{fmt}'\n")
    if kind == "list":
        for item in formats.split_list(value):
            code(item)
    elif kind == "opt":
        if value:
            code(value)
    else:
        code(value)
    return value


def print_property_string(data: dict[str, Any], fmt: dict[str, Any] | str) -> str:
    """``PVE::JSONSchema::print_property_string``: default key first, then required, then the rest."""
    if isinstance(fmt, str):
        fmt = hash_format(fmt)
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    key_alias_props = {s["keyAlias"]: s["alias"] for s in fmt.values() if s.get("alias") and s.get("keyAlias")}
    out: list[str] = []
    done: set[str] = set()

    def value_str(key: str, value: Any) -> str:
        schema = fmt.get(key) or {}
        if schema.get("format") == "disk-size":
            size = formats.parse_size(perl_str(value))
            return formats.format_size(size) if size is not None else perl_str(value)
        return perl_str(value)

    def add(key: str, is_default: bool = False) -> None:
        if key in done:
            return
        done.add(key)
        value = data.get(key)
        if value is None:
            return
        combine = key_alias_props.get(key)
        if combine and data.get(combine) is not None:
            out.append(f"{value_str(key, value)}={value_str(combine, data[combine])}")
            done.add(combine)
            return
        out.append(value_str(key, value) if is_default else f"{key}={value_str(key, value)}")

    if default_key:
        add(default_key, True)
    for key in sorted(data):
        if fmt.get(key) and not fmt[key].get("optional"):
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(out)


# --- routes ---------------------------------------------------------------------------------


def _expand_numbered(props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, schema in props.items():
        m = re.match(r"^([a-z]+)\[n\]$", key)
        if m:
            for i in range(formats.NUMBERED[m.group(1)]):
                out[f"{m.group(1)}{i}"] = schema
        else:
            out[key] = schema
    return out


@dataclass
class Endpoint:
    method: str
    path: str
    info: dict[str, Any]
    regex: re.Pattern[str]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def properties(self) -> dict[str, Any]:
        return self.parameters.get("properties") or {}


def _path_regex(template: str) -> re.Pattern[str]:
    parts = []
    for segment in template.strip("/").split("/"):
        m = re.fullmatch(r"\{(\w+)\}", segment)
        if m:
            # {volume} takes the rest of the URI (fragmentDelimiter '' in PVE::API2::Storage::Content)
            parts.append(f"(?P<{m.group(1)}>.+)" if m.group(1) == "volume" else f"(?P<{m.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "/*$")


SUPPORTED_VERSIONS = ("8.4", "9.1")
DEFAULT_VERSION = "9.1"


def schema_file(version: str) -> Path:
    return DATA / f"pve-{version}-apidoc.json.xz"


def _inline_named_hash_formats(node: Any, formats_by_name: dict[str, dict[str, Any]]) -> Any:
    """The schema with ``format: "pve-qm-ide"`` (a hash format qemu-server registers from its own ide[n]
    drive schema) replaced by that drive schema, so each version's schema carries its own."""
    if isinstance(node, dict):
        out = {k: _inline_named_hash_formats(v, formats_by_name) for k, v in node.items()}
        if isinstance(out.get("format"), str) and out["format"] in formats_by_name:
            out["format"] = formats_by_name[out["format"]]
        return out
    if isinstance(node, list):
        return [_inline_named_hash_formats(v, formats_by_name) for v in node]
    return node


class ApiSchema:
    """Every method of one PVE version's API (pve-docs apidata.js), with its parameter schema.

    ``version`` is "8.4" or "9.1" (the files in data/); build it with ``ApiSchema.load(version)``, which
    parses each version once per process (the objects are read-only)."""

    def __init__(self, version: str = DEFAULT_VERSION) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"no PVE API schema for version {version!r} (have: {', '.join(SUPPORTED_VERSIONS)})")
        self.version = version
        tree = json.loads(lzma.decompress(schema_file(version).read_bytes()))
        found: list[tuple[str, str, dict[str, Any]]] = []

        def walk(node: dict[str, Any]) -> None:
            for method, info in (node.get("info") or {}).items():
                found.append((method, node["path"], info))
            for child in node.get("children") or []:
                walk(child)

        for top in tree:
            walk(top)
        create = next(info for m, p, info in found if (m, p) == ("POST", "/nodes/{node}/qemu"))
        named = {"pve-qm-ide": create["parameters"]["properties"]["ide[n]"]["format"]}
        self.endpoints: list[Endpoint] = []
        self._by_method: dict[str, list[Endpoint]] = {}
        for method, path, info in found:
            params = _inline_named_hash_formats(dict(info.get("parameters") or {}), named)
            if "properties" in params:
                params["properties"] = _expand_numbered(params["properties"])
            ep = Endpoint(method, path, info, _path_regex(path), params)
            self.endpoints.append(ep)
            self._by_method.setdefault(method, []).append(ep)
        # literal segments before {placeholders}: /cluster/sdn/vnets must win over /cluster/sdn/{x} ...
        for eps in self._by_method.values():
            eps.sort(key=lambda e: [(1, "") if s.startswith("{") else (0, s) for s in e.path.split("/")])

    @staticmethod
    @cache
    def load(version: str = DEFAULT_VERSION) -> ApiSchema:
        return ApiSchema(version)

    def find(self, method: str, template: str) -> Endpoint:
        for ep in self._by_method.get(method, []):
            if ep.path == template:
                return ep
        raise KeyError((method, template))

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        for ep in self._by_method.get(method, []):
            m = ep.regex.match(path)
            if m:
                return ep, m.groupdict()
        return None

    @staticmethod
    def normalize(endpoint: Endpoint, params: dict[str, Any]) -> None:
        """pve-common src/PVE/RESTHandler.pm $normalize_legacy_param_formats (before validation): a single
        form value of an array parameter becomes a one-element array (repeated form keys arrive joined by
        NUL: each is an element); an array given for a ``-list`` string is joined with commas."""
        for key, value in list(params.items()):
            schema = endpoint.properties.get(key)
            if not schema or value in (None, ""):
                continue
            fmt = schema.get("format") if isinstance(schema.get("format"), str) else ""
            if isinstance(value, list) and schema.get("type") == "string" and str(fmt).endswith("-list"):
                params[key] = ",".join(map(str, value))
            elif not isinstance(value, list) and schema.get("type") == "array":
                params[key] = str(value).split("\0") if isinstance(value, str) else [value]

    @staticmethod
    def validate(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        check_prop(params, endpoint.parameters, "", errors)
        return errors
