"""run.py's command line around Hydra: Hydra's own errors before a job starts as one line.

Hydra prints its composition errors (a missing group option, an override of a key that does not
exist, a value of the wrong type for a launcher key, an override it cannot parse) over several
lines, without the list of options when a group keeps its options in sub-folders
(`experiment=<missing>`). `main_reporting_config_errors` runs Hydra's main with Hydra raising
instead of printing (HYDRA_FULL_ERROR=1, put back as soon as a job starts, so that a job's own
failure is reported by Hydra as before) and turns those errors into one line, `config error:
<key> (set by the override ...) ...; allowed: ...`, exit code 1. Anything else is printed the
way Hydra prints it. With HYDRA_FULL_ERROR=1 set by the user nothing is changed.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import Any

from runner.config_files import group_options, options_defining

_ENV = "HYDRA_FULL_ERROR"
_NOT_SET = object()
_users_value: Any = _NOT_SET  # what HYDRA_FULL_ERROR was before we set it (None: unset)


def job_started() -> None:
    """Put HYDRA_FULL_ERROR back as the user had it (call first thing in the task function)."""
    global _users_value
    if _users_value is _NOT_SET:
        return
    if _users_value is None:
        os.environ.pop(_ENV, None)
    else:
        os.environ[_ENV] = _users_value
    _users_value = _NOT_SET


def _override_for(key: str, argv: list[str]) -> str | None:
    """Return the command-line override that sets `key` (or a key inside it), if any."""
    for arg in argv:
        name = arg.lstrip("+~").split("=", 1)[0]
        if "=" in arg and (name == key or name.startswith(key + ".")):
            return arg
    return None


def _where(key: str, argv: list[str]) -> str:
    override = _override_for(key, argv)
    return f"set by the override {override}" if override else "set in the config"


def _missing_option(err: Any, argv: list[str]) -> str | None:
    missing = getattr(err, "missing_cfg_file", None)
    if not missing or "/" not in missing:
        return None  # the primary config itself: Hydra's message says it
    group, option = missing.rsplit("/", 1)
    where = "set in the config"
    for arg in argv:  # the override that chose it: `experiment=a/b` for experiment/a/b
        name, _, value = arg.lstrip("+~").partition("=")
        if value and f"{name}/{value}" == missing:
            group, option, where = name, value, f"set by the override {arg}"
    options = group_options(group)
    close = difflib.get_close_matches(option, options, n=1)
    hint = f" (did you mean {group}={close[0]}?)" if close else ""
    return (f"{group}={option} ({where}) is not a config of group {group}: there is no "
            f"conf/{missing}.yaml{hint}; allowed: {', '.join(options) or '(none)'}")


def _not_a_key(cause: Any, argv: list[str]) -> str:
    key = str(cause.full_key)
    parent = getattr(cause, "parent_node", None)
    existing = [str(k) for k in parent.keys()] if parent is not None else []
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, existing, n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    group, _, rest = key.partition(".")
    if rest and "." not in rest:  # a node of a group: is it in another option of the group?
        has_it = options_defining(group, rest)
        if has_it:
            hint += (f"; it is in {' and '.join(f'{group}={o}' for o in has_it)}: add "
                     f"{group}={has_it[0]} to the command")
    override = _override_for(key, argv)
    add = f"; +{override.lstrip('+')} adds it as a new key" if override else ""
    return (f"{key} ({_where(key, argv)}) is not a key of the composed config{hint}; allowed: "
            f"{', '.join(existing) or '(none)'}{add}")


def _bad_value(cause: Any, argv: list[str]) -> str:
    key = str(cause.full_key)
    override = _override_for(key, argv)
    value = override.split("=", 1)[1] if override else "?"
    reason = str(getattr(cause, "msg", cause)).splitlines()[0]
    return f"{key}={value} ({_where(key, argv)}) is not allowed: {reason}"


def describe(err: BaseException, argv: list[str]) -> str | None:
    """Return a one-line description of a config error Hydra raised, or None for other errors."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from runner.validation import ConfigError

    if isinstance(err, ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException):
        found = _missing_option(err, argv)
        if found:
            return found
    if isinstance(err, OverrideParseException):
        lines = [line for line in str(err).splitlines() if line.strip()]
        return "could not parse the command line: " + "; ".join(lines)
    if isinstance(err, ConfigCompositionException):
        cause = err.__cause__
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(
                cause, "full_key", None):
            return _not_a_key(cause, argv)
        if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
            return _bad_value(cause, argv)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if cause is not None:
            lines.append(str(getattr(cause, "msg", cause)).splitlines()[0])
        return "; ".join(lines)
    return None


def _report_like_hydra(err: BaseException) -> None:
    """Print `err` as Hydra does without HYDRA_FULL_ERROR and exit 1."""
    from hydra._internal.utils import run_and_report

    def reraise() -> None:
        raise err

    run_and_report(reraise)


def main_reporting_config_errors(main: Callable[[], Any], argv: list[str]) -> None:
    """Call the @hydra.main function `main`; report Hydra's config errors in one line."""
    global _users_value
    if os.environ.get(_ENV) == "1":  # the user wants Hydra's full traces
        main()
        return
    _users_value = os.environ.get(_ENV)
    os.environ[_ENV] = "1"
    try:
        main()
    except Exception as err:
        job_started()
        message = describe(err, argv)
        if message is None:
            _report_like_hydra(err)
        sys.exit(f"config error: {message}")
    finally:
        job_started()
