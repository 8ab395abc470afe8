"""Schema evolution checks: FULL_TRANSITIVE compatibility, by the Avro specification's resolution rules.

FULL_TRANSITIVE (as Confluent Schema Registry defines it): the latest version can read data
written with every earlier version (backward), and every earlier version can read data written
with the latest (forward). Checking "can reader R read what writer W wrote" follows the spec's
"Schema Resolution" section:

- records: same name (or the writer's name among the reader's aliases); each reader field is
  found in the writer by name or by one of its aliases, or has a default; writer fields the
  reader lacks are skipped;
- enums: same name; every writer symbol is a reader symbol, unless the reader has a default;
- arrays, maps: items, values resolve; fixed: same name and size;
- unions: every branch the writer may use resolves to the reader (its union's first match);
- primitives: the same type, or a promotion: int -> long, float, double; long -> float, double;
  float -> double; string <-> bytes.

Beyond the spec, a change of logical type (timestamp-millis to timestamp-micros, ...) is reported:
the bytes still resolve, but their meaning changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import AVRO_ROOT, FILE_NAME, check_contract, load_schema_file
from .errors import CatalogueError

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
NAMED = {"record", "enum", "fixed", "error"}
MISSING = "the reader has this field without a default, and the writer does not write it"


@dataclass(frozen=True)
class Incompatibility:
    """One reason a version pair is not compatible."""

    event_type: str
    latest: int          # the latest version's number
    other: int           # the earlier version's number
    direction: str       # "backward" (latest reads other) or "forward" (other reads latest)
    path: str            # the field, e.g. "tool_nodes[].node_id", or "" for the record itself
    reason: str

    def __str__(self) -> str:
        reader, writer = ((self.latest, self.other) if self.direction == "backward" else (self.other, self.latest))
        where = f"field {self.path!r}" if self.path else "the record"
        return (f"{self.event_type}: v{self.latest} is not {self.direction} compatible with v{self.other} "
                f"(v{reader} cannot read what v{writer} wrote): {where}: {self.reason}")


# -- normalising: named references expanded, names made full ---------------------------------
def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def normalise(schema: Any, namespace: str | None = None, names: dict[str, Any] | None = None) -> Any:
    """The schema with every named reference replaced by its definition and every name full."""
    names = {} if names is None else names
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return {"type": schema}
        full = _fullname(schema, namespace)
        for candidate in (full, schema):
            if candidate in names:
                return names[candidate]
        raise CatalogueError(f"unknown type name {schema!r}")
    if isinstance(schema, list):
        return {"type": "union", "branches": [normalise(b, namespace, names) for b in schema]}
    kind = schema["type"]
    if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in PRIMITIVES | NAMED | {"array", "map"}):
        return normalise(kind, namespace, names)  # {"type": {...}} or {"type": "SomeName"}
    out = {k: v for k, v in schema.items() if k not in ("fields", "items", "values", "doc")}
    if kind in NAMED:
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        ns = full.rpartition(".")[0] or None
        out["name"] = full
        out["aliases"] = {_fullname(a, ns) for a in schema.get("aliases", ())} | set(schema.get("aliases", ()))
        names[full] = out
        if kind in ("record", "error"):
            out["fields"] = [
                {"name": f["name"], "aliases": set(f.get("aliases", ())), "has_default": "default" in f,
                 "type": normalise(f["type"], ns, names)}
                for f in schema["fields"]
            ]
    elif kind == "array":
        out["items"] = normalise(schema["items"], namespace, names)
    elif kind == "map":
        out["values"] = normalise(schema["values"], namespace, names)
    return out


# -- resolution -------------------------------------------------------------------------------
def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _describe(schema: dict[str, Any]) -> str:
    kind = schema["type"]
    if kind in NAMED:
        return f"{kind} {_short(schema['name'])}"
    if kind == "array":
        return f"array<{_describe(schema['items'])}>"
    if kind == "map":
        return f"map<{_describe(schema['values'])}>"
    if kind == "union":
        return "[" + ", ".join(_describe(b) for b in schema["branches"]) + "]"
    return kind + (f" ({schema['logicalType']})" if "logicalType" in schema else "")


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    return (_short(reader["name"]) == _short(writer["name"]) or writer["name"] in reader["aliases"]
            or _short(writer["name"]) in {_short(a) for a in reader["aliases"]})


def _matches(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Whether a reader (non-union) branch is the one the spec picks for this writer schema."""
    r, w = reader["type"], writer["type"]
    if r in NAMED or w in NAMED:
        return r == w and _names_match(reader, writer)
    return r == w or r in PROMOTIONS.get(w, ())


def resolve(reader: dict[str, Any], writer: dict[str, Any], path: str = "",
            seen: set[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Why the reader cannot read what the writer wrote: a list of (field path, reason)."""
    seen = set() if seen is None else seen
    r, w = reader["type"], writer["type"]
    if w == "union":
        problems: list[tuple[str, str]] = []
        for branch in writer["branches"]:
            problems += resolve(reader, branch, path, seen)
        return problems
    if r == "union":
        for branch in reader["branches"]:
            if _matches(branch, writer):
                return resolve(branch, writer, path, seen)
        return [(path, f"the writer's {_describe(writer)} matches no branch of the reader's {_describe(reader)}")]
    if not _matches(reader, writer):
        if r in NAMED and r == w:
            return [(path, f"{r} name changed from {_short(writer['name'])} to {_short(reader['name'])} "
                           f"without an alias")]
        return [(path, f"type changed from {_describe(writer)} to {_describe(reader)}, which Avro cannot promote")]
    problems = []
    if reader.get("logicalType") != writer.get("logicalType"):
        problems.append((path, f"logical type changed from {writer.get('logicalType') or 'none'} to "
                               f"{reader.get('logicalType') or 'none'}: same bytes, another meaning"))
    if r in ("record", "error"):
        pair = (reader["name"], writer["name"])
        if pair in seen:  # a recursive type already under check
            return problems
        seen.add(pair)
        try:
            problems += _resolve_fields(reader, writer, path, seen)
        finally:
            seen.discard(pair)
    elif r == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            problems.append((path, f"enum symbols {', '.join(missing)} are unknown to the reader, "
                                   "which has no default symbol"))
    elif r == "fixed" and reader["size"] != writer["size"]:
        problems.append((path, f"fixed size changed from {writer['size']} to {reader['size']}"))
    elif r == "array":
        problems += resolve(reader["items"], writer["items"], f"{path}[]", seen)
    elif r == "map":
        problems += resolve(reader["values"], writer["values"], f"{path}{{}}", seen)
    return problems


def _resolve_fields(reader: dict[str, Any], writer: dict[str, Any], path: str,
                    seen: set[tuple[str, str]]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    by_name = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        sub = f"{path}.{field['name']}" if path else field["name"]
        match = by_name.get(field["name"]) or next((by_name[a] for a in field["aliases"] if a in by_name), None)
        if match is not None:
            problems += resolve(field["type"], match["type"], sub, seen)
        elif not field["has_default"]:
            writer_only = sorted(set(by_name) - {f["name"] for f in reader["fields"]}
                                 - {a for f in reader["fields"] for a in f["aliases"]})
            hint = (f" (if it and {' or '.join(writer_only)} are one field renamed: give the new name the old "
                    "one in its aliases, and a default, so both versions can read each other)") if writer_only else ""
            problems.append((sub, MISSING + hint))
    return problems


def check_versions(event_type: str, versions: dict[int, dict[str, Any]]) -> list[Incompatibility]:
    """FULL_TRANSITIVE: the latest against every earlier version, both ways."""
    if not versions:
        return []
    latest_number = max(versions)
    latest = normalise(versions[latest_number])
    found: list[Incompatibility] = []
    for number in sorted(versions):
        if number == latest_number:
            continue
        other = normalise(versions[number])
        for path, reason in resolve(latest, other):
            reason = reason.replace(MISSING,
                                    f"added in v{latest_number} without a default, and v{number} data lacks it")
            found.append(Incompatibility(event_type, latest_number, number, "backward", path, reason))
        for path, reason in resolve(other, latest):
            reason = reason.replace(MISSING, f"v{number} has it without a default, and v{latest_number} no longer "
                                             "writes it (removed or renamed)")
            found.append(Incompatibility(event_type, latest_number, number, "forward", path, reason))
    return found


@dataclass(frozen=True)
class CheckReport:
    event_versions: dict[str, list[int]]
    problems: list[str]            # files that break the contract (names, envelope, docs, JSON)
    incompatibilities: list[Incompatibility]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.incompatibilities


def scan(root: Path) -> tuple[dict[str, dict[int, dict[str, Any]]], list[str]]:
    """Every ``<domain>/<event_type>.v<N>.avsc`` under root, as raw JSON, and the contract problems."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    problems: list[str] = []
    for path in sorted(Path(root).glob("*/*.avsc")):
        match = FILE_NAME.match(path.name)
        if not match:
            problems.append(f"{path}: schema files are named <event_type>.v<N>.avsc")
            continue
        try:
            raw, *_ = load_schema_file(path)
            check_contract(path, raw, match["event_type"], path.parent.name)
        except CatalogueError as exc:
            problems.append(str(exc))
            continue
        found.setdefault(match["event_type"], {})[int(match["version"])] = raw
    for event_type, versions in found.items():
        if sorted(versions) != list(range(1, len(versions) + 1)):
            problems.append(f"{event_type}: versions must run 1..N without gaps, found "
                            f"{', '.join(f'v{n}' for n in sorted(versions))}")
    return found, problems


def check_folder(root: Path = AVRO_ROOT, event_types: Iterable[str] | None = None) -> CheckReport:
    """Checks every event type's schemas under root (or only the named ones)."""
    found, problems = scan(root)
    wanted = set(event_types) if event_types is not None else set(found)
    incompatibilities: list[Incompatibility] = []
    for event_type in sorted(wanted & set(found)):
        incompatibilities += check_versions(event_type, found[event_type])
    for event_type in sorted(wanted - set(found)):
        problems.append(f"{event_type}: no schema under {root}")
    return CheckReport({t: sorted(v) for t, v in sorted(found.items()) if t in wanted}, problems, incompatibilities)
