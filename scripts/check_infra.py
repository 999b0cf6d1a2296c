#!/usr/bin/env python3
"""Keeps infra/ honest against the code (Python 3.11, standard library only).

Checks, each printing one line per problem:

  security  checkov (its Bicep checks plus scripts/checkov_policies/) parses
            every Bicep file under infra/ and reports no failed check; every inline `checkov:skip` suppression is listed (ID,
            resource, reason) in README.md's deploy section and vice versa,
            and each one still suppresses a check checkov runs.
  settings  the settings registered `deployed: true` in
            shared/core/src/settings.rs are exactly the app settings of the
            Function App in infra/main.bicep: `appSettingsAllPlans` holds all
            but DEDICATED_PLAN_ONLY, which `appSettingsDedicatedOnly` holds
            (Flex Consumption refuses FUNCTIONS_WORKER_RUNTIME and the other
            settings it replaced); no Platform setting is set there; README.md's
            settings table lists exactly the registry; no Rust file under
            functions/ or shared/ reads the environment directly.
  roles     the actions of the custom ARM role in infra/ are exactly
            ARM_ACTIONS from shared/azure/src/actions.rs, minus WITHHELD_ACTIONS
            (each named in docs/deploy.md's Known limits; listKeys only while
            every storage account refuses shared keys, and never granted then),
            plus userAssignedIdentities/assign/action exactly when a scale set
            body under shared/core/src/steps/ attaches a user-assigned identity;
            no principal but the app identity holds a data role on the Key
            Vault or the staging storage (every job's secrets and scripts).
  schema    every property a resource in infra/ sets exists at its
            api-version (infra/schema/resource-properties.json, derived from
            the published schemas by scripts/derive_resource_schemas.py); ARM
            drops unknown properties silently.
  deploy    what a first and a second `azd up` would hit: azure.yaml's custom
            language is documented with its alpha switch and minimum azd
            version, the package is deployed as the zip `flotilla package`
            wrote (execute bit kept), no hook nests azd, the Key Vault name
            changes after `azd down` (purge protection), clusters default to
            their own resource group, main.parameters.json is never passed to
            `az deployment`, diagnostic settings cover every data plane,
            Application Insights without local auth gets Entra ingestion (the
            app identity's Monitoring Metrics Publisher role and
            APPLICATIONINSIGHTS_AUTHENTICATION_STRING), and Flex Consumption is
            the default plan (FC1, runtime `custom` in functionAppConfig, the
            package read with the app identity, scale limits as parameters).

The registry and the action list are read at run time, never copied here.

Usage: check_infra.py [REPO_ROOT] [--only security,settings,roles,schema,deploy]
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
RBAC_RS = Path("shared/core/src/steps/rbac.rs")
# The seed of the cluster scaler role's name (guid(resourceGroup().id, SEED)) in infra/.
SCALER_ROLE_SEED = "flotilla-cluster-scaler"
MAIN_BICEP = Path("infra/main.bicep")
SCHEMA_TABLE = Path("infra/schema/resource-properties.json")
AZURE_YAML = Path("azure.yaml")
PARAMETERS_JSON = Path("infra/main.parameters.json")
DEPLOY_MD = Path("docs/deploy.md")
HOST_JSON = Path("host.json")
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


# The Function App's app settings live in two Bicep variables; the site uses
# exactly this expression, so Flex Consumption never gets the dedicated-only ones.
ALL_PLANS_VAR = "appSettingsAllPlans"
DEDICATED_VAR = "appSettingsDedicatedOnly"
APP_SETTINGS_EXPR = f"isFlex ? {ALL_PLANS_VAR} : concat({DEDICATED_VAR}, {ALL_PLANS_VAR})"

# App settings that Flex Consumption replaced by site properties or ignores
# ("Flex Consumption plan deprecations" in the Functions app settings reference).
FLEX_REFUSED = (
    "FUNCTIONS_WORKER_RUNTIME",  # functionAppConfig.runtime.name
    "FUNCTIONS_WORKER_RUNTIME_VERSION",  # functionAppConfig.runtime.version
    "FUNCTIONS_EXTENSION_VERSION",  # set by the platform
    "WEBSITE_RUN_FROM_PACKAGE",  # functionAppConfig.deployment
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",  # scaleAndConcurrency.maximumInstanceCount
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_NODE_DEFAULT_VERSION",
)


def var_block(text: str, name: str) -> str | None:
    """The `[...]` or `{...}` literal of `var NAME = ...` (comment-free text)."""
    m = re.search(r"^\s*var\s+" + re.escape(name) + r"\s*=\s*([\[{])", text, re.M)
    if not m:
        return None
    start = m.start(1)
    return text[start : matching_close(text, start) + 1]


def setting_names(block: str) -> list[str]:
    return re.findall(r"\bname\s*:\s*'([^']*)'", block)


@dataclass
class AppSettings:
    all_plans: list[str]
    dedicated_only: list[str]
    expression: str | None  # the site's `appSettings:` value


def read_app_settings(root: Path) -> AppSettings:
    path = root / MAIN_BICEP
    try:
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckError(f"cannot read {MAIN_BICEP}: {e}") from e
    sites = resource_blocks(text, "Microsoft.Web/sites")
    if not sites:
        raise CheckError(f"no Microsoft.Web/sites resource (the Function App) in {MAIN_BICEP}")
    all_plans = var_block(text, ALL_PLANS_VAR)
    dedicated = var_block(text, DEDICATED_VAR)
    if all_plans is None or dedicated is None:
        raise CheckError(f"{MAIN_BICEP} has no `var {ALL_PLANS_VAR} = [...]` and `var {DEDICATED_VAR} = [...]`")
    expression = None
    for _, body in sites:
        m = re.search(r"\bappSettings\s*:\s*([^\n]*)", body)
        if m:
            expression = m[1].strip()
    return AppSettings(setting_names(all_plans), setting_names(dedicated), expression)


def read_dedicated_plan_only(root: Path) -> list[str]:
    text = strip_rust_comments((root / SETTINGS_RS).read_text(encoding="utf-8"))
    m = re.search(r"\bDEDICATED_PLAN_ONLY\b[^=]*=\s*&?\s*\[(.*?)\]\s*;", text, re.S)
    if not m:
        raise CheckError(f"found no `DEDICATED_PLAN_ONLY: &[&str] = &[...];` in {SETTINGS_RS}")
    return [_unescape_rust(x) for x in re.findall(_RUST_STR, m[1])]


def read_role_actions(root: Path, scaler: bool = False) -> tuple[list[str], list[str]]:
    """Actions of the custom role(s) in infra/, and where they were found: the
    flotilla role(s), or with `scaler` the cluster scaler role (the one whose
    name is derived from SCALER_ROLE_SEED)."""
    actions: list[str] = []
    where: list[str] = []
    for path in bicep_files(root):
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
        for name, body in resource_blocks(text, "Microsoft.Authorization/roleDefinitions"):
            if (f"'{SCALER_ROLE_SEED}'" in body) != scaler:
                continue
            block = bracket_list_after(body, "actions")
            where.append(f"{path.relative_to(root)}:{name}")
            if block:
                actions += re.findall(r"'([^']*)'", block)
    return actions, where


def read_scaler_actions(root: Path) -> list[str]:
    path = root / RBAC_RS
    try:
        text = strip_rust_comments(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckError(f"cannot read {RBAC_RS}: {e}") from e
    m = re.search(r"\bSCALER_ACTIONS\b[^=]*=\s*&?\s*\[(.*?)\]\s*;", text, re.S)
    if not m:
        raise CheckError(f"found no `SCALER_ACTIONS: &[&str] = &[...];` in {RBAC_RS}")
    return [_unescape_rust(x) for x in re.findall(_RUST_STR, m[1])]


def check_scaler_role(root: Path) -> list[str]:
    """The cluster scaler role grants exactly SCALER_ACTIONS, no wildcard."""
    granted, where = read_role_actions(root, scaler=True)
    if len(where) != 1:
        return [f"expected exactly one cluster scaler role (name from '{SCALER_ROLE_SEED}') under infra/, found {len(where)}"]
    code = {a.lower(): a for a in read_scaler_actions(root)}
    have = {a.lower(): a for a in granted}
    problems = [f"the cluster scaler role lacks {a} (SCALER_ACTIONS in {RBAC_RS})" for k, a in sorted(code.items()) if k not in have]
    problems += [f"the cluster scaler role grants {a}, which SCALER_ACTIONS in {RBAC_RS} does not list" for k, a in sorted(have.items()) if k not in code]
    return problems


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


def settings_table(settings: list[Setting], dedicated_only: list[str] = ()) -> str:
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
            if s.deployed and s.name in dedicated_only:
                on_azure = "Dedicated plan only (infra/main.bicep)"
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
    new = text[: span[0]] + settings_table(read_settings(root), read_dedicated_plan_only(root)) + text[span[1] :]
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
    dedicated_only = read_dedicated_plan_only(root)
    if app.expression is None:
        problems.append(f"the Function App in {MAIN_BICEP} sets no siteConfig.appSettings")
    elif " ".join(app.expression.split()) != APP_SETTINGS_EXPR:
        problems.append(f"the Function App's appSettings in {MAIN_BICEP} must be `{APP_SETTINGS_EXPR}` "
                        f"(Flex Consumption gets only {ALL_PLANS_VAR}), not `{app.expression}`")
    both = app.all_plans + app.dedicated_only
    app_set = set(both)
    for name in sorted({n for n in both if both.count(n) > 1}):
        problems.append(f"app setting {name} is set more than once in {MAIN_BICEP}")
    for name in dedicated_only:
        s_ = by_name.get(name)
        if s_ is None:
            problems.append(f"DEDICATED_PLAN_ONLY names {name}, which is not registered in {SETTINGS_RS}")
        elif not s_.deployed:
            problems.append(f"DEDICATED_PLAN_ONLY names {name}, which is registered with deployed: false")
    for name in app.all_plans:
        if name in FLEX_REFUSED:
            problems.append(f"app setting {name} is in {ALL_PLANS_VAR} in {MAIN_BICEP}, but Flex Consumption "
                            f"refuses it as an app setting (set only on the Dedicated plan: {DEDICATED_VAR} "
                            f"and DEDICATED_PLAN_ONLY in {SETTINGS_RS})")
    for s_ in registry:
        if not s_.deployed or s_.read_by == "Platform":
            continue
        who = "the code" if s_.read_by == "Flotilla" else "the Functions host"
        if s_.name in dedicated_only:
            if s_.name not in app.dedicated_only:
                problems.append(f"setting {s_.name} is read by {who} on the Dedicated plan but not set in {DEDICATED_VAR} in {MAIN_BICEP}")
        elif s_.name not in app.all_plans:
            problems.append(f"setting {s_.name} is read by {who} but not set in {MAIN_BICEP} ({ALL_PLANS_VAR})")
    for name in app.dedicated_only:
        if name not in dedicated_only:
            problems.append(f"app setting {name} is in {DEDICATED_VAR} in {MAIN_BICEP} but not in DEDICATED_PLAN_ONLY in {SETTINGS_RS}")
    for name in sorted(app_set):
        s_ = by_name.get(name)
        if s_ is None:
            problems.append(f"app setting {name} in {MAIN_BICEP} is not registered in {SETTINGS_RS}")
        elif s_.read_by == "Platform":
            problems.append(f"app setting {name} in {MAIN_BICEP} is provided by the Azure platform and must not be set by the template")
        elif not s_.deployed:
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
                # Passing PATH on to a child process is plumbing, not configuration.
                if re.match(r'\s*"PATH"\s*\)', text[m.end():]):
                    continue
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{rel}:{line} reads the environment directly ({m[0].strip()}...); use settings::get with a registered name")
    return problems


# ARM_ACTIONS the custom role withholds on purpose, and when: a grant that
# could not work is not made. Each one must be named, with its step, in
# docs/deploy.md's "Known limits" section, so the gap stays visible.
WITHHELD_ACTIONS = {
    # `keys` reads the staging account key; the staging account refuses shared
    # keys (allowSharedKeyAccess: false), so the key would open nothing.
    "microsoft.storage/storageaccounts/listkeys/action": "shared keys disabled",
}
# Linked access: ARM checks this on a user-assigned identity that a scale set
# body attaches (the request is a scale set write, the check is on the identity).
ASSIGN_IDENTITY_ACTION = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
STEPS_DIR = Path("shared/core/src/steps")
_IDENTITY_KIND_RE = re.compile(r"\bIdentity\s*\{\s*kind\s*:\s*\"([^\"]*)\"")
# Built-in roles that read or write data in a Key Vault or a blob container.
_DATA_ROLE_KEYS = re.compile(r"keyVault\w*|storageBlobData\w*", re.I)


def known_limits(root: Path) -> str:
    """The text of docs/deploy.md's "Known limits" section ('' if none)."""
    try:
        text = (root / DEPLOY_MD).read_text(encoding="utf-8")
    except OSError:
        return ""
    m = re.search(r"^## Known limits\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return m[1] if m else ""


def shared_keys_disabled(root: Path) -> bool:
    """Whether every storage account under infra/ sets allowSharedKeyAccess: false."""
    found = False
    for path in bicep_files(root):
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
        for _, body in resource_blocks(text, "Microsoft.Storage/storageAccounts"):
            found = True
            if not re.search(r"\ballowSharedKeyAccess\s*:\s*false\b", body):
                return False
    return found


def scale_set_identity_kinds(root: Path) -> list[str]:
    """The `identity.type` values the steps put on the scale sets they create."""
    base = root / STEPS_DIR
    if not base.is_dir():
        raise CheckError(f"cannot read {STEPS_DIR} (the scale set bodies)")
    kinds: list[str] = []
    for path in sorted(base.rglob("*.rs")):
        text = strip_rust_comments(path.read_text(encoding="utf-8", errors="replace"))
        kinds += _IDENTITY_KIND_RE.findall(text)
    return kinds


def _symbols_of_type(text: str, type_name: str) -> set[str]:
    return {m[1] for m in _DECL_RE.finditer(text) if m[2].lower() == type_name.lower()}


def _with_children(text: str, roots: set[str]) -> set[str]:
    """roots and every resource whose `parent:` chain leads to one of them."""
    parent: dict[str, str] = {}
    for m in _DECL_RE.finditer(text):
        brace = text.find("{", m.end())
        if brace < 0:
            continue
        p = re.search(r"\bparent\s*:\s*(\w+)", text[brace : matching_close(text, brace) + 1])
        if p:
            parent[m[1]] = p[1]
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for child, par in parent.items():
            if par in found and child not in found:
                found.add(child)
                grew = True
    return found


def check_grants(root: Path) -> list[str]:
    """No data role on the Key Vault or the staging storage (every job's secrets
    and scripts) for any principal but the Function App's own identity."""
    problems: list[str] = []
    text = strip_bicep_comments((root / MAIN_BICEP).read_text(encoding="utf-8"))
    app_identity = None
    for _, body in resource_blocks(text, "Microsoft.Web/sites"):
        m = re.search(r"userAssignedIdentities\s*:\s*\{\s*'\$\{(\w+)\.id\}'", body)
        if m:
            app_identity = m[1]
    if app_identity is None:
        return [f"the Function App in {MAIN_BICEP} has no user-assigned identity to compare grants with"]
    stores = _symbols_of_type(text, "Microsoft.KeyVault/vaults")
    staging = re.search(r"name\s*:\s*'STAGING_BLOB_ENDPOINT'\s*value\s*:\s*'[^\n]*\$\{(\w+)\.name\}", text)
    if staging:
        stores.add(staging[1])
    stores = _with_children(text, stores)
    for name, body in resource_blocks(text, "Microsoft.Authorization/roleAssignments"):
        scope = re.search(r"\bscope\s*:\s*(\w+)", body)
        if not scope or scope[1] not in stores:
            continue
        role = re.search(r"\broleDefinitionId\s*:\s*([^\n]*)", body)
        if not role or not _DATA_ROLE_KEYS.search(role[1]):
            continue
        principal = re.search(r"\bprincipalId\s*:\s*([^\n]*)", body)
        if not principal or principal[1].strip() != f"{app_identity}.properties.principalId":
            who = principal[1].strip() if principal else "?"
            problems.append(f"{MAIN_BICEP}: {name} grants a data role on {scope[1]} (every job's secrets or scripts) to "
                            f"{who}, not the app identity {app_identity}: any node holding it could read every job's "
                            "data; grant per job, on the job's own secrets and blobs, from the steps")
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
    keys_off = shared_keys_disabled(root)
    limits = known_limits(root).lower()

    # Actions that cannot work are not granted: a storage key on accounts that refuse keys.
    if keys_off:
        for low, a in sorted(granted_l.items()):
            if low.startswith("microsoft.storage/") and low.endswith("/listkeys/action"):
                problems.append(f"the flotilla custom role grants {a}, but every storage account in infra/ refuses shared "
                                "keys (allowSharedKeyAccess: false): the key opens nothing; withhold it (WITHHELD_ACTIONS) "
                                "and read with an Entra token")

    # Linked access: a scale set that attaches a user-assigned identity needs assign/action on it.
    kinds = scale_set_identity_kinds(root)
    needs_assign = any("userassigned" in k.lower() for k in kinds)
    linked = {ASSIGN_IDENTITY_ACTION.lower(): ASSIGN_IDENTITY_ACTION} if needs_assign else {}
    if needs_assign and ASSIGN_IDENTITY_ACTION.lower() not in granted_l:
        problems.append(f"the scale sets the steps create attach a user-assigned identity ({', '.join(sorted(set(kinds)))}) "
                        f"but the flotilla custom role lacks {ASSIGN_IDENTITY_ACTION}: ARM refuses the scale set write "
                        "(LinkedAuthorizationFailed)")

    for low, a in sorted(code_l.items()):
        if low in granted_l:
            continue
        if low in WITHHELD_ACTIONS and (WITHHELD_ACTIONS[low] != "shared keys disabled" or keys_off):
            if a.lower() not in limits:
                problems.append(f"ARM action {a} is called by the client and withheld from the custom role "
                                f"({WITHHELD_ACTIONS[low]}), but the Known limits section of {DEPLOY_MD} does not name it")
            continue
        problems.append(f"ARM action {a} is called by the client but not granted by the flotilla custom role")
    for low, a in sorted(granted_l.items()):
        if low not in code_l and low not in linked:
            problems.append(f"ARM action {a} is granted by the flotilla custom role but the client never calls it (not in ARM_ACTIONS)")
    for a in sorted({a for a in granted if granted.count(a) > 1}):
        problems.append(f"ARM action {a} is listed twice in the flotilla custom role")
    return problems + check_grants(root) + check_scaler_role(root)


# Resource types checkov has no Bicep checks for: a file declaring only these
# is parsed but reported on by nobody.
UNCHECKED_TYPES = {"Microsoft.Resources/resourceGroups"}

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
        declared = {m[2] for m in _DECL_RE.finditer(strip_bicep_comments(path.read_text(encoding="utf-8")))}
        if declared and declared <= UNCHECKED_TYPES:
            continue  # nothing in it that checkov has checks for
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


# ---------------------------------------------------------------------------
# Schema: every property set exists at the api-version used
# ---------------------------------------------------------------------------

_DECL_RE = re.compile(r"^\s*resource\s+(\w+)\s+'([^'@]+)@([^']+)'\s*(existing\s*)?=", re.M)
_SCHEMA_MARK_RE = re.compile(r"^\s*//\s*schema:\s*(\w+)\s+(\S+)\s*$")
# Bicep-only keys on a resource body (not sent to ARM as properties).
_BICEP_KEYS = {"parent", "scope", "dependsOn"}
_TRIPLE = "'" * 3


def skip_string(t: str, i: int) -> int:
    """Index after the Bicep string starting at t[i] == "'" (handles ${...})."""
    if t.startswith(_TRIPLE, i):
        j = t.find(_TRIPLE, i + 3)
        return len(t) if j < 0 else j + 3
    j = i + 1
    while j < len(t):
        c = t[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            return j + 1
        if t.startswith("${", j):
            depth, j = 1, j + 2
            while j < len(t) and depth:
                if t[j] == "'":
                    j = skip_string(t, j)
                    continue
                depth += {"{": 1, "}": -1}.get(t[j], 0)
                j += 1
            continue
        j += 1
    return j


def _skip_ws(t: str, j: int, newlines: bool = True) -> int:
    chars = " \t\r\n," if newlines else " \t"
    while j < len(t) and t[j] in chars:
        j += 1
    return j


def _close(t: str, i: int) -> int:
    """Index of the bracket closing t[i] (string-aware)."""
    pairs = {"[": "]", "{": "}", "(": ")"}
    stack = [pairs[t[i]]]
    j = i + 1
    while j < len(t):
        c = t[j]
        if c == "'":
            j = skip_string(t, j)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            stack.pop()
            if not stack:
                return j
        j += 1
    raise CheckError("unbalanced brackets in Bicep")


def _for_body(t: str, i: int) -> int | None:
    """For `[for ... : BODY]` at t[i] == '[', the index where BODY starts."""
    j = i + 1
    depth = 0
    while j < len(t):
        c = t[j]
        if c == "'":
            j = skip_string(t, j)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                return None
            depth -= 1
        elif c == ":" and depth == 0:
            return _skip_ws(t, j + 1)
        j += 1
    return None


def object_paths(t: str, i: int, prefix: str, out: list[str]) -> int:
    """Adds the key paths of the object literal at t[i] == '{'; returns the index after it."""
    j = i + 1
    while True:
        j = _skip_ws(t, j)
        if j >= len(t):
            raise CheckError("unterminated object in Bicep")
        if t[j] == "}":
            return j + 1
        if t[j] == "'":
            k = skip_string(t, j)
            # A computed or dotted key can only be a dictionary key (`*` in the schema).
            key = t[j + 1 : k - 1]
            key = "<computed>" if "${" in key else key.replace(".", "_")
            j = k
        else:
            m = re.match(r"[A-Za-z_$][\w$]*", t[j:])
            if not m:
                raise CheckError(f"cannot read a key at {t[j:j + 30]!r}")
            key = m[0]
            j += len(key)
        j = _skip_ws(t, j, newlines=False)
        if j >= len(t) or t[j] != ":":
            raise CheckError(f"expected ':' after key {key!r}")
        path = prefix + key
        out.append(path)
        j = value_paths(t, _skip_ws(t, j + 1, newlines=False), path, out)


def value_paths(t: str, j: int, path: str, out: list[str]) -> int:
    """Adds the paths inside the value at t[j]; returns the index after the value."""
    if t[j] == "{":
        return object_paths(t, j, path + ".", out)
    if t[j] == "[":
        end = _close(t, j)
        body = _for_body(t, j) if re.match(r"\[\s*for\b", t[j:]) else None
        if body is not None:
            if t[body] == "{":
                object_paths(t, body, path + "[].", out)
            return end + 1
        k = j + 1
        while True:
            k = _skip_ws(t, k)
            if k >= end:
                return end + 1
            if t[k] == "{":
                k = object_paths(t, k, path + "[].", out)
            else:
                k = _expression(t, k, path + "[]", out, stop="]")
    return _expression(t, j, path, out)


def _expression(t: str, j: int, path: str, out: list[str], stop: str = "}") -> int:
    """Skips an expression value up to the end of its line; object literals in it
    (both arms of `cond ? {...} : {...}`, `union(x, {...})`) are checked at `path`."""
    while j < len(t):
        c = t[j]
        if c == "\n" or c == stop:
            return j
        if c == "'":
            j = skip_string(t, j)
        elif c == "{":
            j = object_paths(t, j, path + ".", out)
        elif c in "([":
            end = _close(t, j)
            k = j + 1
            while k < end:
                if t[k] == "'":
                    k = skip_string(t, k)
                elif t[k] == "{":
                    k = object_paths(t, k, path + ".", out)
                elif t[k] in "([":
                    k = _close(t, k) + 1
                else:
                    k += 1
            j = end + 1
        else:
            j += 1
    return j


def resource_body_start(t: str, after_eq: int) -> int | None:
    """Where the object of `resource ... = [if (...)] [[for ...:] {` begins."""
    j = _skip_ws(t, after_eq)
    if re.match(r"if\s*\(", t[j:]):
        j = _skip_ws(t, _close(t, t.index("(", j)) + 1)
    if t[j] == "[":
        body = _for_body(t, j)
        return body if body is not None and t[body] == "{" else None
    return j if t[j] == "{" else None


@dataclass(frozen=True)
class SetProperty:
    file: str
    symbol: str
    type_api: str
    path: str


def set_properties(root: Path) -> list[SetProperty]:
    """Every property path each resource in infra/ sets, incl. `// schema:` variables."""
    found: list[SetProperty] = []
    for path in bicep_files(root):
        raw = path.read_text(encoding="utf-8")
        text = strip_bicep_comments(raw)
        rel = str(path.relative_to(root))
        symbols: dict[str, str] = {}
        for m in _DECL_RE.finditer(text):
            type_api = f"{m[2]}@{m[3]}"
            symbols[m[1]] = type_api
            if m[4]:
                continue  # `existing`: sets nothing
            start = resource_body_start(text, m.end())
            if start is None:
                continue
            out: list[str] = []
            object_paths(text, start, "", out)
            found += [SetProperty(rel, m[1], type_api, p) for p in out if p.split(".")[0] not in _BICEP_KEYS]
        # Variables that hold part of a resource's body, marked `// schema: SYMBOL PATH`.
        lines = raw.splitlines()
        for n, line in enumerate(lines):
            mark = _SCHEMA_MARK_RE.match(line)
            if not mark:
                continue
            var = next((re.match(r"\s*var\s+(\w+)\s*=", x) for x in lines[n + 1 :] if not x.strip().startswith("//")), None)
            if var is None or mark[1] not in symbols:
                raise CheckError(f"{rel}:{n + 1}: `// schema: {mark[1]} {mark[2]}` must precede a `var` and name a resource")
            block = var_block(text, var[1])
            if block is None:
                raise CheckError(f"{rel}: var {var[1]} is not an object or array literal")
            out = []
            value_paths(block, 0, mark[2], out)
            found += [SetProperty(rel, f"{mark[1]} (var {var[1]})", symbols[mark[1]], p) for p in out]
    return found


def path_allowed(path: str, allowed: set[str], prefixes: set[str]) -> bool:
    """Whether a set path exists in a schema (`*` = any dictionary key, `**` = anything below)."""
    cur = ""
    for seg in path.split("."):
        if (f"{cur}.**" if cur else "**") in allowed:
            return True
        options = [seg, "*[]" if seg.endswith("[]") else "*"]
        for opt in options:
            cand = f"{cur}.{opt}" if cur else opt
            if cand in prefixes:
                cur = cand
                break
        else:
            return False
    return True


def check_schema(root: Path) -> list[str]:
    try:
        table = json.loads((root / SCHEMA_TABLE).read_text(encoding="utf-8"))["types"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckError(f"cannot read {SCHEMA_TABLE}: {e}") from e
    table = {k.lower(): v for k, v in table.items()}
    problems: list[str] = []
    cache: dict[str, tuple[set[str], set[str]]] = {}
    missing: set[str] = set()
    for prop in set_properties(root):
        key = prop.type_api.lower()
        if key not in table:
            if key not in missing:
                missing.add(key)
                problems.append(f"{prop.type_api} (used in {prop.file}) is not in {SCHEMA_TABLE}; run "
                                "scripts/derive_resource_schemas.py (it fails on a type or api-version that does not exist)")
            continue
        if key not in cache:
            allowed = set(table[key]["paths"])
            prefixes: set[str] = set()
            for p in allowed:
                segs = p.split(".")
                for n in range(1, len(segs) + 1):
                    prefixes.add(".".join(segs[:n]))
            cache[key] = (allowed, prefixes)
        allowed, prefixes = cache[key]
        if not path_allowed(prop.path, allowed, prefixes):
            problems.append(f"{prop.file}: {prop.symbol} sets {prop.path}, which {prop.type_api} does not have "
                            "(ARM drops unknown properties silently; use an api-version that has it)")
    return problems



# ---------------------------------------------------------------------------
# Deploy: what a first, and a second, `azd up` would hit
# ---------------------------------------------------------------------------

# azd 1.20.0 added `language: custom` (alpha); it also deletes only the
# deployment's own resource group on `azd down` (since 1.10.0).
AZD_MIN_CUSTOM_LANGUAGE = (1, 20, 0)
ALPHA_CUSTOM_SWITCH = "azd config set alpha.language.custom on"
VAULT_GENERATION_PARAM = "keyVaultGeneration"
VAULT_GENERATION_ENV = "FLOTILLA_VAULT_GENERATION"
# Data planes whose operations must reach Log Analytics (diagnostic settings).
DIAGNOSED_TYPES = (
    "Microsoft.KeyVault/vaults",
    "Microsoft.ServiceBus/namespaces",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.Web/sites",
    "Microsoft.Storage/storageAccounts/blobServices",
)
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
_NESTED_AZD_RE = re.compile(r"\bazd\s+(provision|up|deploy)\b")


def _yaml_hook_commands(root: Path, yaml_text: str) -> list[tuple[str, str]]:
    """(where, command text) of every hook `run:` in azure.yaml, with the
    contents of the scripts it runs (paths relative to the repo)."""
    out: list[tuple[str, str]] = []
    lines = yaml_text.splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)run:\s*(.*)$", line)
        if not m:
            continue
        value = m[2].strip()
        if value in ("|", ">", "|-", ">-"):
            indent = len(m[1])
            body = []
            for nxt in lines[n + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
            value = "\n".join(body)
        out.append((f"azure.yaml:{n + 1}", value))
        script = re.match(r"^\s*(?:sh\s+|bash\s+)?(\./)?([\w./-]+\.sh)\b", value)
        if script:
            path = root / script[2]
            try:
                code = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if not line.lstrip().startswith("#")]
                out.append((str(script[2]), "\n".join(code)))
            except OSError:
                out.append((str(script[2]), f"<missing script {script[2]}>"))
    return out


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def check_deploy(root: Path) -> list[str]:
    problems: list[str] = []
    try:
        yaml_text = (root / AZURE_YAML).read_text(encoding="utf-8")
        main_raw = (root / MAIN_BICEP).read_text(encoding="utf-8")
        params = (root / PARAMETERS_JSON).read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"cannot read the deployment files: {e}") from e
    main = strip_bicep_comments(main_raw)
    yaml_code = "\n".join(line.split(" #")[0] for line in yaml_text.splitlines() if not line.lstrip().startswith("#"))
    docs = ""
    for rel in (DEPLOY_MD, README):
        try:
            docs += (root / rel).read_text(encoding="utf-8")
        except OSError:
            pass

    # 1. `language: custom` is an azd alpha feature: documented switch and minimum version.
    if re.search(r"^\s*language:\s*custom\s*$", yaml_code, re.M):
        m = re.search(r"^\s*azd:\s*[\"']?>=\s*([\d.]+)", yaml_code, re.M)
        if not m or _version(m[1]) < AZD_MIN_CUSTOM_LANGUAGE:
            problems.append(f"{AZURE_YAML} uses `language: custom` (azd alpha, azd 1.20.0+) but requiredVersions.azd "
                            "is not `>= 1.20.0` or later; older azd refuses or misreads the project")
        for rel in (AZURE_YAML, DEPLOY_MD):
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except OSError:
                text = ""
            if ALPHA_CUSTOM_SWITCH not in text:
                problems.append(f"{rel} does not say how to switch on azd's alpha `language: custom` "
                                f"(`{ALPHA_CUSTOM_SWITCH}`); without it every azd command refuses the project")

    # 2. azd deploys the zip `flotilla package` wrote (modes kept), never a folder it re-zips.
    if re.search(r"^\s*host:\s*function\s*$", yaml_code, re.M):
        m = re.search(r"^\s*dist:\s*(\S+)", yaml_code, re.M)
        if not m or not m[1].endswith(".zip"):
            problems.append(f"{AZURE_YAML}: the function service's dist must be the zip `flotilla package` writes "
                            "(e.g. dist/functionapp.zip): azd re-zips a folder, and azd before 1.26 drops the "
                            "binary's execute bit doing so")

    # 2b. The package azd deploys is checked: static (needs nothing from the Functions image), or at
    #     least against the image's glibc.
    if re.search(r"^\s*host:\s*function\s*$", yaml_code, re.M):
        commands = _yaml_hook_commands(root, yaml_code)
        if not any(re.search(r"\bpackage\b[^\n]*(--require-static|--max-glibc)", c) for _, c in commands):
            problems.append(f"{AZURE_YAML}: no hook runs `flotilla package ... --require-static` (or "
                            "`--max-glibc`): a binary that needs the build machine's libraries or a newer glibc "
                            "than the Functions Linux image's would deploy and never start")

    # 3. No hook nests azd (a second provision from a hook, with state set before it succeeds).
    for where, command in _yaml_hook_commands(root, yaml_code):
        for line in command.splitlines():
            code = line.split("#")[0]
            nested = _NESTED_AZD_RE.search(code)
            if nested:
                problems.append(f"{where}: a hook runs `azd {nested[1]}`: nested azd runs are not re-runnable "
                                "(deploy the extra template with one idempotent `az deployment` instead)")
            if code.strip().startswith("<missing script"):
                problems.append(f"{where}: {code.strip()[1:-1]}")

    # 4. Purge protection reserves a deleted vault's name: the name must change after `azd down`.
    for name, body in resource_blocks(main, "Microsoft.KeyVault/vaults"):
        if not re.search(r"\benablePurgeProtection\s*:\s*true", body):
            continue
        m = re.search(r"\bname\s*:\s*(\w+)", body)
        expr = ""
        if m:
            vm = re.search(r"^\s*var\s+" + re.escape(m[1]) + r"\s*=\s*([^\n]*)", main, re.M)
            expr = vm[1] if vm else m[1]
        if VAULT_GENERATION_PARAM not in expr:
            problems.append(f"{MAIN_BICEP}: Key Vault {name} has purge protection but its name does not depend on "
                            f"param {VAULT_GENERATION_PARAM}: `azd down` then `azd up` would fail for the retention period")
        if not re.search(r'"' + VAULT_GENERATION_PARAM + r'"\s*:\s*\{\s*"value"\s*:\s*"\$\{' + VAULT_GENERATION_ENV,
                         params):
            problems.append(f"{PARAMETERS_JSON} does not map {VAULT_GENERATION_PARAM} to ${{{VAULT_GENERATION_ENV}}}")
        hooks = [c for w, c in _yaml_hook_commands(root, yaml_code) if not w.startswith("azure.yaml")]
        if not re.search(r"^\s*postdown:", yaml_code, re.M) or not any(
                re.search(r"azd\s+env\s+set\s+" + VAULT_GENERATION_ENV, c) for c in hooks):
            problems.append(f"{AZURE_YAML} has no postdown hook that bumps {VAULT_GENERATION_ENV}: the next "
                            "`azd up` would reuse the soft-deleted vault's reserved name")

    # 5. Clusters live in their own resource group by default (azd down deletes the app's).
    m = re.search(r"^\s*var\s+clusterRgName\s*=\s*([^\n]*)", main, re.M)
    if not m or "-clusters" not in m[1]:
        problems.append(f"{MAIN_BICEP}: clusters must default to their own resource group "
                        "(`var clusterRgName = ... '<rg>-clusters'`), or `azd down` deletes live clusters")

    # 6. main.parameters.json holds azd substitutions: never tell people to pass it to az.
    if "${" in params:
        for path in sorted([*bicep_files(root), root / DEPLOY_MD, root / README, root / AZURE_YAML]):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for n in range(len(lines)):
                window = " ".join(lines[n : n + 2])
                if re.search(r"\baz\s+deployment\b", window) and re.search(
                        r"(?:-p|--parameters)\s+@?\S*main\.parameters\.json", window):
                    problems.append(f"{path.relative_to(root)}:{n + 1}: passes {PARAMETERS_JSON} to `az deployment`, "
                                    "but it holds azd ${VAR} substitutions that only azd resolves")
                    break

    # 7. Diagnostic settings to Log Analytics for every data plane.
    diagnosed: set[str] = set()
    for path in bicep_files(root):
        text = strip_bicep_comments(path.read_text(encoding="utf-8"))
        for _, body in resource_blocks(text, "Microsoft.Insights/diagnosticSettings"):
            scope = re.search(r"\bscope\s*:\s*(\w+)", body)
            if scope and re.search(r"\bworkspaceId\s*:", body):
                diagnosed.add(scope[1])
        for type_name in DIAGNOSED_TYPES:
            for symbol, _ in resource_blocks(text, type_name):
                if symbol not in diagnosed:
                    problems.append(f"{path.relative_to(root)}: {symbol} ({type_name}) has no diagnostic setting "
                                    "sending its logs to the Log Analytics workspace")

    # 8. Application Insights without local auth: ingestion needs an Entra token from the app identity.
    all_plans = var_block(main, ALL_PLANS_VAR) or ""
    for name, body in resource_blocks(main, "Microsoft.Insights/components"):
        if not re.search(r"\bDisableLocalAuth\s*:\s*true\b", body):
            continue
        publisher = [b for _, b in resource_blocks(main, "Microsoft.Authorization/roleAssignments")
                     if re.search(r"\bscope\s*:\s*" + re.escape(name) + r"\b", b)
                     and re.search(r"monitoringMetricsPublisher|" + MONITORING_METRICS_PUBLISHER, b)]
        if not publisher:
            problems.append(f"{MAIN_BICEP}: {name} has local auth off but no role assignment of Monitoring Metrics "
                            "Publisher on it: the host's telemetry would be refused (401) and lost")
        m = re.search(r"name\s*:\s*'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'\s*value\s*:\s*'([^\n]*)'", all_plans)
        if not m or "Authorization=AAD" not in m[1] or "ClientId=" not in m[1]:
            problems.append(f"{MAIN_BICEP}: {name} has local auth off but {ALL_PLANS_VAR} has no "
                            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING `ClientId=<app identity>;Authorization=AAD`: "
                            "the host would send telemetry without a token")

    # 8b. The Service Bus triggers' per-instance concurrency is chosen and explained.
    try:
        host = json.loads((root / HOST_JSON).read_text(encoding="utf-8"))
        calls = host["extensions"]["serviceBus"]["maxConcurrentCalls"]
    except (OSError, ValueError, KeyError, TypeError):
        calls = None
    if not isinstance(calls, int):
        problems.append(f"{HOST_JSON} sets no extensions.serviceBus.maxConcurrentCalls: the Service Bus triggers' "
                        "per-instance concurrency on Flex Consumption would be the platform default, chosen by nobody")
    else:
        try:
            deploy_doc = (root / DEPLOY_MD).read_text(encoding="utf-8")
        except OSError:
            deploy_doc = ""
        if not re.search(r"`extensions\.serviceBus\.maxConcurrentCalls`,\s*\*\*" + str(calls) + r"\*\*", deploy_doc):
            problems.append(f"{DEPLOY_MD} does not explain the Service Bus triggers' per-instance concurrency "
                            f"({HOST_JSON} extensions.serviceBus.maxConcurrentCalls = {calls}; write "
                            f"\"`extensions.serviceBus.maxConcurrentCalls`, **{calls}**\" and why)")

    # 9. Flex Consumption is the default plan, configured in functionAppConfig.
    params = set(re.findall(r"^\s*param\s+(\w+)\s", main, re.M))
    m = re.search(r"^\s*param\s+hostingPlan\s+string\s*=\s*'(\w+)'", main, re.M)
    if not m or m[1] != "FlexConsumption":
        problems.append(f"{MAIN_BICEP}: param hostingPlan must default to 'FlexConsumption' (serverless first)")
    if not re.search(r"name\s*:\s*'FC1'\s*tier\s*:\s*'FlexConsumption'", main):
        problems.append(f"{MAIN_BICEP}: no Flex Consumption plan (sku FC1, tier FlexConsumption)")
    flex = var_block(main, "flexFunctionAppConfig") or ""
    if not flex:
        problems.append(f"{MAIN_BICEP}: no `var flexFunctionAppConfig = {{...}}` (the site's functionAppConfig on Flex Consumption)")
    else:
        if not re.search(r"\bruntime\s*:\s*\{\s*name\s*:\s*'custom'", flex):
            problems.append(f"{MAIN_BICEP}: flexFunctionAppConfig.runtime.name must be 'custom' (a custom handler)")
        auth = re.search(r"\bauthentication\s*:\s*\{[^}]*\btype\s*:\s*'(\w+)'", flex)
        if not auth or auth[1] != "UserAssignedIdentity":
            problems.append(f"{MAIN_BICEP}: the Flex Consumption deployment package must be read with the app's "
                            f"user-assigned identity (authentication.type 'UserAssignedIdentity', not "
                            f"{auth[1] if auth else 'unset'}): the host storage refuses shared keys")
        for key in ("maximumInstanceCount", "instanceMemoryMB"):
            km = re.search(r"\b" + key + r"\s*:\s*(\w+)", flex)
            if not km or km[1] not in params:
                problems.append(f"{MAIN_BICEP}: flexFunctionAppConfig.scaleAndConcurrency.{key} must be a parameter")
    for _, body in resource_blocks(main, "Microsoft.Web/sites"):
        if not re.search(r"\bfunctionAppConfig\s*:\s*isFlex\s*\?\s*flexFunctionAppConfig\s*:\s*null", body):
            problems.append(f"{MAIN_BICEP}: the Function App must set `functionAppConfig: isFlex ? flexFunctionAppConfig : null`")
    return problems



CHECKS = {
    "security": "checkov scan and suppressions",
    "settings": "app settings vs settings.rs and README",
    "roles": "custom ARM role vs ARM_ACTIONS",
    "schema": "resource properties vs the api-version's schema",
    "deploy": "azd/azure.yaml and template pitfalls of a first and a second deployment",
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
            elif name == "schema":
                problems = check_schema(root)
            elif name == "deploy":
                problems = check_deploy(root)
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
