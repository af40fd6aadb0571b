"""Read the yaml files of conf/ as text: a group's options, the keys a file sets with their
one-line comments, its defaults list, and the files one run composed (in Hydra's order).

Hydra keeps no comments, so `python run.py --help` (runner/config_help.py) and the hints of the
config checks read the files here. The files are plain block yaml, one key per line; a key's
comment is the text after ` #` on its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_@.\-/]+?)\s*:(?:\s+(?P<rest>.*))?$")


@dataclass
class ConfigFile:
    """What one yaml file sets: `keys` maps each dotted key (from the file's package: `task.x`
    for conf/task/*.yaml, `x` for `# @package _global_` files) to its comment ("" when none)."""

    path: Path
    package: str
    keys: dict[str, str] = field(default_factory=dict)
    defaults: list[Any] = field(default_factory=list)


def _split_comment(text: str) -> tuple[str, str]:
    """Return (value, comment) of the text after `key:`; a `#` inside quotes is no comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


def _defaults(lines: list[str]) -> list[Any]:
    """Return the entries of the file's top-level `defaults:` list (strings, or one-key dicts)."""
    out: list[Any] = []
    inside = False
    for line in lines:
        if re.match(r"^defaults\s*:", line):
            inside = True
            continue
        if inside:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = re.match(r"^\s+-\s+(.*)$", line)
            if not match:
                break
            entry, _ = _split_comment(match.group(1))
            if ":" in entry:
                key, value = entry.split(":", 1)
                value = value.strip()
                out.append({key.strip(): None if value in ("null", "~", "") else value})
            else:
                out.append(entry)
    return out


@lru_cache(maxsize=256)
def read_file(path: Path, group: str) -> ConfigFile:
    """Return the keys, comments and defaults of the yaml file `path` of config group `group`
    ("" for conf/config.yaml)."""
    lines = path.read_text().splitlines()
    glob = any(line.strip().replace(" ", "") == "#@package_global_" for line in lines[:5])
    package = "" if glob or not group else group.replace("/", ".")
    info = ConfigFile(path=path, package=package, defaults=_defaults(lines))
    stack: list[tuple[int, str]] = []
    in_defaults = False
    for line in lines:
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent, key = len(match.group("indent")), match.group("key").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0:
            in_defaults = key == "defaults"
        if in_defaults:
            continue
        value, comment = _split_comment(match.group("rest") or "")
        dotted = ".".join([*(k for _, k in stack), key])
        info.keys[".".join(p for p in (package, dotted) if p)] = comment
        if not value:  # a mapping follows
            stack.append((indent, key))
    return info


def config_roots(hydra_node: Any | None = None) -> list[Path]:
    """Return the config directories of a run (file sources of `hydra.runtime.config_sources`,
    conf/ first), or [conf/] without one."""
    roots = []
    if hydra_node is not None:
        for source in hydra_node.runtime.get("config_sources") or []:
            if source.get("schema") == "file" and Path(source.path).is_dir():
                roots.append(Path(source.path))
    return roots or [CONF_DIR]


def find_option(group: str, option: str, roots: list[Path]) -> Path | None:
    """Return the file of `group=option` in the first root that has it."""
    for root in roots:
        path = root / group / f"{option}.yaml"
        if path.is_file():
            return path
    return None


def group_options(group: str, roots: list[Path] | None = None) -> list[str]:
    """Return every option of `group`, those in sub-folders as `sub/option` (sorted)."""
    found = set()
    for root in roots or [CONF_DIR]:
        folder = root / group
        if folder.is_dir():
            found.update(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
    return sorted(found)


def option_files(group: str, option: str, roots: list[Path]) -> list[ConfigFile]:
    """Return the files that `group=option` composes, in order: its own defaults (siblings in
    the same group, depth first), then itself (Hydra's order when `_self_` is not listed)."""
    path = find_option(group, option, roots)
    if path is None:
        return []
    info = read_file(path, group)
    out: list[ConfigFile] = []
    for entry in info.defaults:
        if isinstance(entry, str) and entry != "_self_":
            out.extend(option_files(group, entry, roots))
    return [*out, info]


def composed_files(choices: dict[str, Any], roots: list[Path]) -> list[tuple[str, ConfigFile]]:
    """Return (group, file) for every file a run with these `hydra.runtime.choices` composed,
    in order: conf/config.yaml's own keys, then its defaults list's groups, then the groups that
    only the command line or an experiment chose (e.g. `+experiment/farad/variant=farad`)."""
    primary = next((r / "config.yaml" for r in roots if (r / "config.yaml").is_file()), None)
    out: list[tuple[str, ConfigFile]] = []
    if primary is not None:
        out.append(("", read_file(primary, "")))
        order = []
        for entry in read_file(primary, "").defaults:
            if isinstance(entry, dict):
                name = next(iter(entry)).replace("optional ", "").strip()
                if not name.startswith("override"):
                    order.append(name.lstrip("/"))
    else:
        order = []
    order += [g for g in choices if g not in order]
    for group in order:
        option = choices.get(group)
        if group.startswith("hydra") or not option:
            continue
        out.extend((group, f) for f in option_files(group, str(option), roots))
    return out


def options_defining(group: str, name: str, roots: list[Path] | None = None) -> list[str]:
    """Return the options of `group` whose composed files define the node `<group>.<name>`
    (e.g. callbacks, hessian_spectrum -> [spectra])."""
    roots = roots or [CONF_DIR]
    key = f"{group}.{name}"
    return [option for option in group_options(group, roots)
            if any(key in f.keys for f in option_files(group, option, roots))]
