#!/usr/bin/env python3
"""Keeps infra/ honest against the code (Python 3.11, standard library only).

Checks, each printing one line per problem:

  security  checkov (its Bicep checks plus scripts/checkov_policies/) parses
            every Bicep file under infra/ and reports no failed check; every inline `checkov:skip` suppression is listed (ID,
            resource, reason) in README.md's deploy section and vice versa,
            and each one still suppresses a check checkov runs.
  settings  the settings registered `deployed: true` in
            shared/core/src/settings.rs are exactly the app settings of the
            Function App in infra/main.bicep; no Platform setting is set there;
            README.md's settings table lists exactly the registry; no Rust file
            under functions/ or shared/ reads the environment directly.
  roles     the actions of the custom ARM role in infra/ are exactly
            ARM_ACTIONS from shared/azure/src/actions.rs.

The registry and the action list are read at run time, never copied here.

Usage: check_infra.py [REPO_ROOT] [--only security,settings,roles]
                      [--checkov PATH] [--write-readme-settings]
REPO_ROOT defaults to the parent of this script's directory. Exit status is
non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SETTINGS_RS = Path("shared/core/src/settings.rs")
ACTIONS_RS = Path("shared/azure/src/actions.rs")
MAIN_BICEP = Path("infra/main.bicep")
README = Path("README.md")
# flotilla's own checkov policies (checks checkov's Bicep set lacks), next to this script.
POLICIES = Path(__file__).resolve().parent / "checkov_policies"

SETTINGS_START = "<!-- settings:start -->"
SETTINGS_END = "<!-- settings:end -->"
DEPLOY_START = "<!-- deploy:start -->"
DEPLOY_END = "<!-- deploy:end -->"

READ_BY_TEXT = {
    "Flotilla": "flotilla",
    "Host": "Functions host",
    "Platform": "Azure platform",
}


class CheckError(Exception):
    """An input could not be read or parsed at all."""


# ---------------------------------------------------------------------------
# Reading the Rust sources
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str
    read_by: str  # Flotilla | Host | Platform
    deployed: bool
    doc: str


_RUST_STR = r'"((?:[^"\\]|\\.)*)"'
_SETTING_RE = re.compile(
    r"\bs\(\s*" + _RUST_STR + r"\s*,\s*(?:ReadBy::)?(Flotilla|Host|Platform)\s*,\s*(true|false)\s*,\s*"
    + _RUST_STR + r"\s*,?\s*\)",
    re.S,
)


def strip_rust_comments(text: str) -> str:
    """Removes // and /* */ comments outside string literals."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _unescape_rust(s: str) -> str:
    return s.replace('\\"', '"').replace("\\\\", "\\")


def read_settings(root: Path) -> list[Setting]:
    path = root / SETTINGS_RS
    try:
        text = strip_rust_comments(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckError(f"cannot read {SETTINGS_RS}: {e}") from e
    start = text.find("SETTINGS")
    body = text[start:] if start >= 0 else text
    settings = [
        Setting(_unescape_rust(m[1]), m[2], m[3] == "true", _unescape_rust(m[4]))
        for m in _SETTING_RE.finditer(body)
    ]
    if not settings:
        raise CheckError(f"found no s(\"NAME\", ReadBy, deployed, \"doc\") entries in {SETTINGS_RS}")
    return settings


def read_arm_actions(root: Path) -> list[str]:
    path = root / ACTIONS_RS
    try:
        text = strip_rust_comments(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckError(f"cannot read {ACTIONS_RS}: {e}") from e
    m = re.search(r"\bARM_ACTIONS\b[^=]*=\s*&?\s*\[(.*?)\]\s*;", text, re.S)
    if not m:
        raise CheckError(f"found no `ARM_ACTIONS: &[&str] = &[...];` in {ACTIONS_RS}")
    return [_unescape_rust(s) for s in re.findall(_RUST_STR, m[1])]


# ---------------------------------------------------------------------------
# Reading Bicep
# ---------------------------------------------------------------------------


def strip_bicep_comments(text: str) -> str:
    """Removes // and /* */ comments outside '...' strings (keeps line breaks)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("'''", i):
            j = text.find("'''", i + 3)
            j = n if j < 0 else j + 3
            out.append(text[i:j])
            i = j
        elif c == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            seg = text[i : (n if j < 0 else j + 2)]
            out.append("\n" * seg.count("\n"))
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_close(text: str, open_at: int) -> int:
    """Index of the bracket closing the one at open_at (text has no comments)."""
    pairs = {"[": "]", "{": "}", "(": ")"}
    stack = [pairs[text[open_at]]]
    i = open_at + 1
    while i < len(text):
        c = text[i]
        if c == "'":
            j = i + 1
            while j < len(text) and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                break
            if not stack:
                return i
        i += 1
    raise CheckError("unbalanced brackets in Bicep")


_RESOURCE_RE = re.compile(r"^\s*resource\s+(\w+)\s+'([^'@]+)@[^']*'", re.M)


def resource_blocks(text: str, type_name: str) -> list[tuple[str, str]]:
    """(symbolic name, body) of every resource of a type (comment-free text)."""
    blocks = []
    for m in _RESOURCE_RE.finditer(text):
        if m[2].lower() != type_name.lower():
            continue
        brace = text.find("{", m.end())
        if brace < 0:
            continue
        blocks.append((m[1], text[brace : matching_close(text, brace) + 1]))
    return blocks


def bracket_list_after(body: str, key: str) -> str | None:
    m = re.search(r"\b" + re.escape(key) + r"\s*:\s*\[", body)
    if not m:
        return None
    start = m.end() - 1
    return body[start : matching_close(body, start) + 1]


def bicep_files(root: Path) -> list[Path]:
    return sorted((root / "infra").rglob("*.bicep"))


def read_app_settings(root: Path) -> list[str]:
    path = root / MAIN_BICEP
    try:
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckError(f"cannot read {MAIN_BICEP}: {e}") from e
    sites = resource_blocks(text, "Microsoft.Web/sites")
    if not sites:
        raise CheckError(f"no Microsoft.Web/sites resource (the Function App) in {MAIN_BICEP}")
    names: list[str] = []
    found = False
    for _, body in sites:
        block = bracket_list_after(body, "appSettings")
        if block is None:
            continue
        found = True
        names += re.findall(r"\bname\s*:\s*'([^']*)'", block)
    if not found:
        raise CheckError(f"the Function App in {MAIN_BICEP} has no siteConfig.appSettings list")
    return names


def read_role_actions(root: Path) -> tuple[list[str], list[str]]:
    """Actions of the custom role(s) in infra/, and where they were found."""
    actions: list[str] = []
    where: list[str] = []
    for path in bicep_files(root):
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
        for name, body in resource_blocks(text, "Microsoft.Authorization/roleDefinitions"):
            block = bracket_list_after(body, "actions")
            where.append(f"{path.relative_to(root)}:{name}")
            if block:
                actions += re.findall(r"'([^']*)'", block)
    return actions, where


# ---------------------------------------------------------------------------
# README regions
# ---------------------------------------------------------------------------


def region(text: str, start: str, end: str) -> tuple[int, int] | None:
    a = text.find(start)
    b = text.find(end, a + len(start)) if a >= 0 else -1
    if a < 0 or b < 0:
        return None
    return a + len(start), b


def table_first_cells(md: str) -> list[str]:
    names = []
    for line in md.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        first = cells[0].strip("`").strip()
        if not first or set(first) <= set("-: ") or first.lower() in ("setting", "name"):
            continue
        names.append(first)
    return names


def settings_table(settings: list[Setting]) -> str:
    lines = [
        "",
        "<!-- Generated by `python3 scripts/check_infra.py --write-readme-settings` from shared/core/src/settings.rs; do not edit by hand. -->",
        "",
        "| Setting | Read by | Set on Azure | Meaning |",
        "| --- | --- | --- | --- |",
    ]
    for s in settings:
        if s.read_by == "Platform":
            on_azure = "by the platform"
        else:
            on_azure = "yes (infra/main.bicep)" if s.deployed else "no"
        doc = s.doc.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{s.name}` | {READ_BY_TEXT[s.read_by]} | {on_azure} | {doc} |")
    lines.append("")
    return "\n".join(lines)


def write_readme_settings(root: Path) -> None:
    path = root / README
    text = path.read_text(encoding="utf-8")
    span = region(text, SETTINGS_START, SETTINGS_END)
    if span is None:
        raise CheckError(f"{README} has no {SETTINGS_START} ... {SETTINGS_END} region")
    new = text[: span[0]] + settings_table(read_settings(root)) + text[span[1] :]
    path.write_text(new, encoding="utf-8")


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def check_settings(root: Path) -> list[str]:
    problems: list[str] = []
    registry = read_settings(root)
    by_name = {s.name: s for s in registry}
    seen: set[str] = set()
    for s in registry:
        if s.name in seen:
            problems.append(f"setting {s.name} is registered twice in {SETTINGS_RS}")
        seen.add(s.name)
        if s.read_by == "Platform" and s.deployed:
            problems.append(f"setting {s.name} is provided by the platform but registered with deployed: true")

    app = read_app_settings(root)
    app_set = set(app)
    for name in sorted({n for n in app if app.count(n) > 1}):
        problems.append(f"app setting {name} is set more than once in {MAIN_BICEP}")
    for s in registry:
        if s.deployed and s.read_by != "Platform" and s.name not in app_set:
            who = "the code" if s.read_by == "Flotilla" else "the Functions host"
            problems.append(f"setting {s.name} is read by {who} but not set in {MAIN_BICEP}")
    for name in sorted(app_set):
        s = by_name.get(name)
        if s is None:
            problems.append(f"app setting {name} in {MAIN_BICEP} is not registered in {SETTINGS_RS}")
        elif s.read_by == "Platform":
            problems.append(f"app setting {name} in {MAIN_BICEP} is provided by the Azure platform and must not be set by the template")
        elif not s.deployed:
            problems.append(f"app setting {name} in {MAIN_BICEP} is registered with deployed: false in {SETTINGS_RS}")

    readme_path = root / README
    try:
        readme = readme_path.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"cannot read {README}: {e}") from e
    span = region(readme, SETTINGS_START, SETTINGS_END)
    if span is None:
        problems.append(f"{README} has no {SETTINGS_START} ... {SETTINGS_END} region")
    else:
        listed = table_first_cells(readme[span[0] : span[1]])
        for s in registry:
            if s.name not in listed:
                problems.append(f"setting {s.name} is missing from the settings table in {README} (run scripts/check_infra.py --write-readme-settings)")
        for name in listed:
            if name not in by_name:
                problems.append(f"the settings table in {README} lists {name}, which is not registered in {SETTINGS_RS}")

    env_re = re.compile(r"\benv::var(?:_os)?\s*\(|\bvar_os\s*\(|\benv::vars(?:_os)?\s*\(")
    for top in ("functions", "shared"):
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.rs")):
            rel = path.relative_to(root)
            if rel == SETTINGS_RS or "target" in rel.parts:
                continue
            text = strip_rust_comments(path.read_text(encoding="utf-8", errors="replace"))
            for m in env_re.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{rel}:{line} reads the environment directly ({m[0].strip()}...); use settings::get with a registered name")
    return problems


def check_roles(root: Path) -> list[str]:
    problems: list[str] = []
    code = read_arm_actions(root)
    granted, where = read_role_actions(root)
    if not where:
        return [f"no custom role (Microsoft.Authorization/roleDefinitions) found under infra/; ARM actions cannot be granted"]
    if len(where) > 1:
        problems.append(f"more than one custom role definition under infra/ ({', '.join(where)}); expected exactly one")
    if any("*" in a for a in granted):
        problems.append("the flotilla custom role grants a wildcard action; grant exactly ARM_ACTIONS")
    granted_l = {a.lower(): a for a in granted}  # ARM action names are case-insensitive
    code_l = {a.lower(): a for a in code}
    for low, a in sorted(code_l.items()):
        if low not in granted_l:
            problems.append(f"ARM action {a} is called by the client but not granted by the flotilla custom role")
    for low, a in sorted(granted_l.items()):
        if low not in code_l:
            problems.append(f"ARM action {a} is granted by the flotilla custom role but the client never calls it (not in ARM_ACTIONS)")
    for a in sorted({a for a in granted if granted.count(a) > 1}):
        problems.append(f"ARM action {a} is listed twice in the flotilla custom role")
    return problems


_SKIP_RE = re.compile(r"checkov:skip=([A-Za-z0-9_]+)(?::([^\n]*))?")


def inline_suppressions(root: Path) -> dict[tuple[str, str], str]:
    """(check id, resource symbolic name) -> reason, for every inline skip in infra/."""
    found: dict[tuple[str, str], str] = {}
    for path in bicep_files(root):
        current = "?"
        for line in path.read_text(encoding="utf-8").splitlines():
            rm = re.match(r"\s*resource\s+(\w+)\s", line)
            if rm:
                current = rm[1]
            sm = _SKIP_RE.search(line)
            if sm:
                found[(sm[1], current)] = (sm[2] or "").strip()
    return found


def readme_suppressions(readme: str) -> dict[tuple[str, str], str] | None:
    span = region(readme, DEPLOY_START, DEPLOY_END)
    if span is None:
        return None
    listed: dict[tuple[str, str], str] = {}
    for line in readme[span[0] : span[1]].splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 3:
            continue
        check = cells[0].strip("`").strip()
        if not re.fullmatch(r"CKV2?_[A-Z0-9_]+", check):
            continue
        listed[(check, cells[1].strip("`").strip())] = cells[2]
    return listed


def find_checkov(explicit: str | None, root: Path) -> str | None:
    for cand in (explicit, os.environ.get("CHECKOV"), str(root / "target/venv-checkov/bin/checkov"),
                 str(Path(__file__).resolve().parent.parent / "target/venv-checkov/bin/checkov")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return shutil.which("checkov")


def check_security(root: Path, checkov: str | None) -> list[str]:
    problems: list[str] = []
    files = bicep_files(root)
    if not files:
        return ["no Bicep files under infra/"]

    # Suppressions must be documented, and documentation must match the code.
    inline = inline_suppressions(root)
    try:
        readme = (root / README).read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"cannot read {README}: {e}") from e
    listed = readme_suppressions(readme)
    if listed is None:
        problems.append(f"{README} has no {DEPLOY_START} ... {DEPLOY_END} region to list the checkov suppressions")
        listed = {}
    for (check, res), reason in sorted(inline.items()):
        if not reason:
            problems.append(f"checkov suppression {check} on {res} has no reason (write `checkov:skip={check}: why`)")
        if (check, res) not in listed:
            problems.append(f"checkov suppression {check} on resource {res} in infra/ is not listed in the deploy section of {README}")
    for (check, res), reason in sorted(listed.items()):
        if (check, res) not in inline:
            problems.append(f"{README} lists checkov suppression {check} on {res}, but infra/ has no such inline skip")
        elif not reason.strip():
            problems.append(f"{README} lists checkov suppression {check} on {res} without a reason")

    if checkov is None:
        problems.append("checkov is not installed (scripts/infra_checks.sh installs it into target/venv-checkov)")
        return problems
    proc = subprocess.run(
        [checkov, "-d", str(root / "infra"), "--framework", "bicep", "--skip-download",
         "--external-checks-dir", str(POLICIES), "-o", "json"],
        capture_output=True, text=True,
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return problems + [f"checkov produced no JSON report (exit {proc.returncode}): " + " / ".join(tail)]
    reports = data if isinstance(data, list) else [data]
    failed, skipped, parsing_errors, seen_files = [], [], 0, set()
    for rep in reports:
        if not isinstance(rep, dict):
            continue
        summary = rep.get("summary", {})
        parsing_errors += int(summary.get("parsing_errors", 0) or 0)
        results = rep.get("results", {})
        for rec in results.get("failed_checks", []):
            failed.append(rec)
        for rec in results.get("skipped_checks", []):
            skipped.append(rec)
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            for rec in results.get(kind, []):
                seen_files.add(Path(rec.get("file_path", "")).name)
    if parsing_errors:
        problems.append(f"checkov could not parse {parsing_errors} file(s) under infra/ (Bicep syntax it does not understand)")
    for path in files:
        if path.name not in seen_files:
            problems.append(f"checkov reported nothing for {path.relative_to(root)} (not parsed, or no resource it checks)")
    for rec in failed:
        res = rec.get("resource", "?")
        problems.append(
            f"checkov {rec.get('check_id')} failed on {res} ({Path(rec.get('file_path', '')).name}"
            f":{(rec.get('file_line_range') or ['?'])[0]}): {rec.get('check_name')}"
        )
    used = {(r.get("check_id"), str(r.get("resource", "")).split(".")[-1]) for r in skipped}
    for key in sorted(inline):
        if key not in used:
            problems.append(f"checkov suppression {key[0]} on {key[1]} suppresses nothing (checkov runs no such check there); remove it")
    return problems


CHECKS = {
    "security": "checkov scan and suppressions",
    "settings": "app settings vs settings.rs and README",
    "roles": "custom ARM role vs ARM_ACTIONS",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks to run: " + ", ".join(CHECKS))
    ap.add_argument("--checkov", help="path of the checkov executable (default: target/venv-checkov/bin/checkov, then PATH)")
    ap.add_argument("--write-readme-settings", action="store_true", help="regenerate README.md's settings table from settings.rs and exit")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()

    if args.write_readme_settings:
        try:
            write_readme_settings(root)
        except CheckError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote the settings table in {root / README}")
        return 0

    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        ap.error(f"unknown check(s): {', '.join(unknown)}")
    failed = 0
    for name in wanted:
        try:
            if name == "security":
                problems = check_security(root, find_checkov(args.checkov, root))
            elif name == "settings":
                problems = check_settings(root)
            else:
                problems = check_roles(root)
        except CheckError as e:
            problems = [str(e)]
        if problems:
            failed += 1
            print(f"FAIL {name}: {CHECKS[name]}")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok   {name}: {CHECKS[name]}")
    print(f"check_infra: {len(wanted) - failed} of {len(wanted)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
