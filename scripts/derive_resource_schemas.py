#!/usr/bin/env python3
"""Derives infra/schema/resource-properties.json from the published resource schemas.

For every `resource x 'Type@api-version'` declared under infra/, this writes the
list of writable property paths that Type has at that api-version, as published
in Azure/bicep-types-az (types generated from Azure/azure-rest-api-specs). The
infra check (`check_infra.py --only schema`) then fails on any property that
infra/ sets but the api-version does not have: ARM silently drops such a
property (e.g. `minimumTlsVersion` on a Service Bus namespace at 2021-11-01).

Run it after changing an api-version or adding a resource type, with a local
clone of Azure/bicep-types-az (a bare clone is enough):

    python3 scripts/derive_resource_schemas.py --types-repo /path/to/bicep-types-az

Standard library only. Path syntax: `a.b` nests objects, `a[]` is an array's
items, `*` any key of a dictionary, `**` anything below (schema type `any`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "infra" / "schema" / "resource-properties.json"
_RESOURCE_RE = re.compile(r"^\s*resource\s+\w+\s+'([^'@]+)@([^']+)'", re.M)

READ_ONLY = 2
MAX_DEPTH = 12


class Repo:
    """Reads files of a bicep-types-az clone (bare or not) through git."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commit = self._git("rev-parse", "HEAD").strip()
        self.files = [f for f in self._git("ls-tree", "-r", "--name-only", "HEAD", "generated").splitlines()
                      if f.endswith("/types.json")]

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.path), *args] if (self.path / "HEAD").is_file()
                              else ["git", "-C", str(self.path), *args],
                              check=True, capture_output=True, text=True).stdout

    def read(self, rel: str) -> list:
        return json.loads(self._git("show", f"HEAD:{rel}"))

    def candidates(self, type_name: str, api: str) -> list[str]:
        provider = type_name.split("/")[0].lower()
        return [f for f in self.files if f.split("/")[-3] == provider and f.split("/")[-2] == api]


def used_types(root: Path) -> list[tuple[str, str]]:
    found = set()
    for path in sorted((root / "infra").rglob("*.bicep")):
        for m in _RESOURCE_RE.finditer(path.read_text(encoding="utf-8")):
            found.add((m[1], m[2]))
    return sorted(found, key=lambda t: (t[0].lower(), t[1]))


def ref(r: dict) -> int:
    return int(r["$ref"].split("/")[-1])


def walk(types: list, idx: int, prefix: str, out: set[str], stack: tuple[int, ...]) -> None:
    """Adds every writable path below type `idx` (reached at `prefix`) to out."""
    t = types[idx]
    kind = t["$type"]
    if len(stack) > MAX_DEPTH or idx in stack:
        out.add(prefix + ".**" if prefix else "**")
        return
    stack = stack + (idx,)
    if kind == "AnyType":
        out.add(prefix + ".**" if prefix else "**")
    elif kind == "ArrayType":
        walk(types, ref(t["itemType"]), prefix + "[]", out, stack)
    elif kind == "UnionType":
        for e in t["elements"]:
            walk(types, ref(e), prefix, out, stack)
    elif kind == "ObjectType":
        for name, prop in t.get("properties", {}).items():
            if prop.get("flags", 0) & READ_ONLY:
                continue
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            walk(types, ref(prop["type"]), path, out, stack)
        if "additionalProperties" in t:
            path = f"{prefix}.*" if prefix else "*"
            out.add(path)
            walk(types, ref(t["additionalProperties"]), path, out, stack)
    elif kind == "DiscriminatedObjectType":
        disc = t["discriminator"]
        out.add(f"{prefix}.{disc}" if prefix else disc)
        for name, prop in t.get("baseProperties", {}).items():
            if prop.get("flags", 0) & READ_ONLY:
                continue
            path = f"{prefix}.{name}" if prefix else name
            out.add(path)
            walk(types, ref(prop["type"]), path, out, stack)
        for element in t.get("elements", {}).values():
            walk(types, ref(element), prefix, out, stack)
    # String, integer, boolean, literal and null types end a path.


def derive(repo: Repo, type_name: str, api: str) -> tuple[str, list[str]]:
    wanted = f"{type_name}@{api}".lower()
    for rel in repo.candidates(type_name, api):
        types = repo.read(rel)
        for t in types:
            if t.get("$type") == "ResourceType" and t["name"].lower() == wanted:
                paths: set[str] = set()
                walk(types, ref(t["body"]), "", paths, ())
                paths -= {"id", "type", "apiVersion"}
                return rel, sorted(paths)
    raise SystemExit(f"error: {type_name}@{api} is not in {repo.path} (no such type at that api-version)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types-repo", required=True, type=Path, help="clone of Azure/bicep-types-az")
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    repo = Repo(args.types_repo)
    table: dict[str, dict] = {}
    for type_name, api in used_types(args.root):
        rel, paths = derive(repo, type_name, api)
        table[f"{type_name}@{api}"] = {"schema": rel, "paths": paths}
        print(f"{type_name}@{api}: {len(paths)} writable paths ({rel})")
    out = args.root / "infra" / "schema" / "resource-properties.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": "Writable property paths per resource type and api-version used under infra/, derived by "
                 "scripts/derive_resource_schemas.py from Azure/bicep-types-az (generated from "
                 "Azure/azure-rest-api-specs). Checked by scripts/check_infra.py --only schema.",
        "source": f"Azure/bicep-types-az@{repo.commit}",
        "types": table,
    }
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
