"""The ``gristmill`` command line, generated from the settings schema.

Every flag comes from :func:`gristmill.settings.schema`: its group, help text (which
ends with the default), choices, ``--flag/--no-flag`` for negatable switches and
repeatable flags for lists. Only the values the user typed reach
:func:`~gristmill.settings.from_sources`, so environment variables and the config file
still apply underneath them. Everything after ``--`` is passed to the application.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from . import logging as gm_logging
from .errors import GristmillError
from .settings import SettingInfo, Settings, from_sources, schema

__all__ = ["build_parser", "parse", "main"]

log = logging.getLogger("gristmill.error")

DESCRIPTION = "Serve a WSGI or ASGI application with gristmill's Rust HTTP core."
EPILOG = (
    "Every option can also be set with a GRISTMILL_<NAME> environment variable (e.g. "
    "GRISTMILL_WORKERS=4) or in the TOML file given with --config. Arguments after `--` "
    "are passed to the application as sys.argv[1:]."
)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every setting in the schema."""
    parser = argparse.ArgumentParser(
        prog="gristmill",
        description=DESCRIPTION,
        epilog=EPILOG,
        # Defaults live in the schema; a suppressed default keeps unset flags out of the
        # namespace so they do not override env vars and the config file.
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"gristmill {__version__}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for info in schema():
        group = groups.get(info.group)
        if group is None:
            group = groups[info.group] = parser.add_argument_group(info.group)
        _add_setting(group, info)
    return parser


def _add_setting(group: argparse._ArgumentGroup, info: SettingInfo) -> None:
    # Help is markdown in the schema; argparse also %-formats it.
    text = info.help.replace("`", "").replace("%", "%%")
    kwargs: dict[str, Any] = {"help": text, "dest": info.name}
    if info.positional:
        del kwargs["dest"]
        group.add_argument(info.name, nargs="?", metavar=info.metavar, **kwargs)
        return
    names = ([info.short] if info.short else []) + [info.flag]
    if info.base_type is bool:
        if info.negatable:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["action"] = "store_true"
        group.add_argument(*names, **kwargs)
        return
    kwargs["metavar"] = info.metavar or ("N" if info.base_type is int else info.name.upper())
    if info.choices:
        kwargs["choices"] = info.choices
        kwargs["metavar"] = "{" + ",".join(info.choices) + "}"
    if info.is_list:
        kwargs["action"] = "append"
    else:
        kwargs["type"] = info.base_type
    group.add_argument(*names, **kwargs)


def parse(argv: Sequence[str]) -> dict[str, Any]:
    """The settings the user gave on the command line, by name."""
    argv = _glue_app_args(argv)
    app_tail: list[str] = []
    if "--" in argv:
        # Split here rather than in argparse: after `--` argparse would take the first
        # word as TARGET when none came before.
        i = argv.index("--")
        argv, app_tail = argv[:i], argv[i + 1 :]
    values = vars(build_parser().parse_args(argv))
    if app_tail:
        values["app_args"] = values.get("app_args", []) + app_tail
    return values


def _glue_app_args(argv: Sequence[str]) -> list[str]:
    """Turn ``--app-arg VALUE`` into ``--app-arg=VALUE``.

    argparse refuses a separate value that starts with ``-``, but application options
    always do (``--app-arg --config-file``), so the word after ``--app-arg`` is always
    its value.
    """
    flag = next(i.flag for i in schema() if i.name == "app_args")
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            out.append(word)
            out.extend(words)
            break
        value = next(words, None) if word == flag else None
        out.append(word if value is None else f"{flag}={value}")
    return out


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``gristmill`` command."""
    from .supervisor import Supervisor

    parser = build_parser()
    cli_values = parse(sys.argv[1:] if argv is None else argv)
    logging_ready = False
    try:
        settings = from_sources(cli_values)
        if not settings.target:
            parser.error(
                "the following arguments are required: TARGET "
                "(e.g. myapp:application or path/to/app.py)"
            )
        gm_logging.configure(settings)
        logging_ready = True
        code = Supervisor(settings).run(exiting=True)
    except GristmillError as err:
        if not logging_ready:
            gm_logging.configure(Settings())
        log.error("%s", err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        # Ctrl-C before the supervisor installed its handlers (e.g. during binding).
        sys.exit(130)
    sys.exit(code)
