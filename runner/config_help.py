"""`python run.py --help`: Hydra's help (the config groups and their options) with the composed
config printed key by key, each with its value and the comment of the yaml file that set it.

Hydra keeps no comments, so run.py points Hydra's help template (`hydra.help.template`) at the
resolver below when `--help` is asked for; Hydra then composes the config with the command's
overrides as usual and the resolver renders it from the yaml files (runner/config_files.py).
`--hydra-help`, `--cfg job` and the rest are Hydra's own.
"""

from __future__ import annotations

from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from runner.config_files import CONF_DIR, ConfigFile, composed_files, config_roots

RESOLVER = "spectrum_help"
COMMENT_COLUMN = 44
INTRO = ("Override anything in the config (key=value; +key=value adds a key). Each key with its "
         "value and the\ncomment of the yaml file that set it; [where] when a later file or an "
         "override set it.")


def wants_help(argv: list[str]) -> bool:
    """Return whether the command line asks for the app's help (not Hydra's own)."""
    return any(a in ("--help", "-h") for a in argv) and "--hydra-help" not in argv


def with_help_template(argv: list[str]) -> list[str]:
    """Register the help resolver and return `argv` plus the override that makes Hydra's help
    template call it (right after the command's own overrides: argparse wants them together)."""
    from hydra._internal.utils import get_args_parser

    OmegaConf.register_new_resolver(RESOLVER, help_template, replace=True, use_cache=False)
    overrides = get_args_parser().parse_known_args(argv)[0].overrides or []
    at = max((i + 1 for i, arg in enumerate(argv) if overrides and arg == overrides[-1]),
             default=len(argv))
    return [*argv[:at], f"hydra.help.template=${{{RESOLVER}:}}", *argv[at:]]


def _scalar(value: Any) -> str:
    """Return `value` as yaml writes it in flow style (strings unquoted when yaml allows)."""
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items()) + "}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


class _Sources:
    """For each dotted key: the files that set it (in composition order) and the overrides."""

    def __init__(self, files: list[tuple[str, ConfigFile]], overrides: list[str],
                 roots: list[Any], groups: list[str]) -> None:
        self.files = [f for _, f in files]
        self.roots = roots
        keys = {o.lstrip("+~").split("=", 1)[0]: o for o in overrides}
        # `task=ei_network` chooses a file: the file is the setter, not the override
        self.overrides = {k: o for k, o in keys.items() if k not in groups}

    def shown(self, info: ConfigFile) -> str:
        """conf/<group>/<option>.yaml for the project's files, the full path for others."""
        try:
            return str(info.path.relative_to(CONF_DIR.parent))
        except ValueError:
            return str(info.path)

    def setting(self, key: str) -> list[ConfigFile]:
        return [f for f in self.files if key in f.keys]

    def comment(self, key: str) -> str:
        """The comment of the last file that sets `key` with one (a later file that only
        changes the value keeps the description of the earlier one)."""
        for info in reversed(self.setting(key)):
            if info.keys[key]:
                return info.keys[key]
        return ""

    def setter(self, key: str) -> str | None:
        """The override that set `key` (or a node above it), else the last file setting it."""
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            override = self.overrides.get(".".join(parts[:i]))
            if override is not None:
                return f"override {override}"
        files = self.setting(key)
        return self.shown(files[-1]) if files else None


def _render(node: dict[str, Any], prefix: str, depth: int, src: _Sources, first: str | None,
            lines: list[str]) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        pad = "  " * depth
        if isinstance(value, dict) and value:
            files = src.setting(dotted)
            head = src.shown(files[0]) if files else first
            note = src.comment(dotted)
            if depth == 0:
                names = [src.shown(f) for f in src.files if f.package == dotted]
                head = names[0] if names else head
                note = ", ".join(names) or note
            lines.append(_line(f"{pad}{key}:", note))
            _render(value, dotted + ".", depth + 1, src, head, lines)
            continue
        note = src.comment(dotted)
        setter = src.setter(dotted)
        if setter is not None and setter != (first or "conf/config.yaml"):
            note = f"{note} [{setter}]" if note else f"[{setter}]"
        lines.append(_line(f"{pad}{key}: {_scalar(value)}", note))


def _line(left: str, note: str) -> str:
    if not note:
        return left
    return f"{left.ljust(COMMENT_COLUMN - 1)} # {note}"


def render_config(root: DictConfig) -> str:
    """Return the composed config of `root` (the hydra node aside, except a launcher's keys)
    as commented yaml lines."""
    hydra_node = root.hydra
    roots = config_roots(hydra_node)
    choices = OmegaConf.to_container(hydra_node.runtime.choices)
    src = _Sources(composed_files(choices, roots), list(hydra_node.overrides.task), roots,
                   list(choices))
    tree = OmegaConf.to_container(root, resolve=False)
    hydra_tree = tree.pop("hydra")
    lines: list[str] = []
    _render(tree, "", 0, src, None, lines)
    launcher = choices.get("hydra/launcher")
    if launcher and launcher != "basic":
        lines.append(_line("hydra:", f"the launcher's keys (hydra/launcher={launcher}); "
                                     "--hydra-help and --cfg hydra show the rest"))
        node = {"launcher": {k: v for k, v in hydra_tree["launcher"].items() if k != "_target_"}}
        _render(node, "hydra.", 1, src, None, lines)
    return "\n".join(lines)


def help_template(*, _root_: DictConfig) -> str:
    """Return Hydra's help template with the commented config in place of `$CONFIG` (Hydra
    fills in `$APP_CONFIG_GROUPS`; every other `$` is escaped)."""
    helpcfg = _root_.hydra.help
    config = render_config(_root_).replace("$", "$$")
    header = str(helpcfg.header).replace("$", "$$")
    footer = str(helpcfg.footer).replace("$", "$$")
    return (f"{header}\n== Configuration groups ==\nCompose your configuration from those groups "
            f"(group=option)\n\n$APP_CONFIG_GROUPS\n== Config ==\n{INTRO}\n\n{config}\n\n{footer}")
