"""Find and load the application a worker serves.

A target is ``module:attr``, ``module`` (attribute ``application``, then ``app``), a path to
a file of any extension or none (``app.py``, ``app.wsgi``, ``/usr/bin/keystone-wsgi-public``)
optionally followed by ``:attr``, with dotted attributes (``mod:obj.wsgi_app``) and
factories (``mod:create_app()`` or ``--factory``).

Files are loaded with ``SourceFileLoader`` as ordinary (non-``__main__``) modules, so pbr's
generated WSGI scripts, which have no ``.py`` extension and an ``if __name__ ==
"__main__":`` branch, load unmodified. Before the import ``sys.argv`` is reset to the
target plus ``--app-arg`` values: such scripts parse ``sys.argv`` at import time and must
never see the server's own flags (DESIGN.md, "The case that started the project").

The supervisor uses only :func:`apply_env_files` and :func:`enter_working_dir`; it never
imports the application. Workers call :func:`load_app` and :func:`resolve_interface`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import os
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import AppLoadError, ConfigError
from .settings import Settings

__all__ = [
    "Target",
    "parse_target",
    "load_app",
    "resolve_interface",
    "as_asgi3",
    "apply_env_files",
    "read_dotenv",
    "enter_working_dir",
]

# Attributes tried, in order, when the target names no attribute (gunicorn and uvicorn
# users write `application` for Django and mod_wsgi-style files, `app` for Flask).
DEFAULT_ATTRS = ("application", "app")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_ATTR_SPEC = re.compile(rf"({_IDENT}(?:\.{_IDENT})*)(\(\))?")


@dataclass(frozen=True)
class Target:
    """A parsed target."""

    raw: str
    #: An absolute file path when ``is_file``, else a dotted module name.
    location: str
    is_file: bool
    #: The dotted attribute path, or ``None`` to try :data:`DEFAULT_ATTRS`.
    attr: str | None
    #: ``True`` when the target ends in ``()``: call the attribute as a factory.
    call: bool
    #: What the application sees as ``sys.argv[0]``: the path as given, or the module.
    argv0: str


def parse_target(raw: str) -> Target:
    """Split ``raw`` into what to import and which attribute to take from it.

    The attribute is split off at the LAST ``:`` only when what follows is a dotted name
    or ``name()``, so a path with a colon elsewhere stays a path.
    """
    if not raw:
        raise AppLoadError("no application target given (e.g. `gristmill myapp:application`)")
    location, attr, call = raw, None, False
    head, sep, tail = raw.rpartition(":")
    if sep and head:
        m = _ATTR_SPEC.fullmatch(tail)
        if m:
            location, attr, call = head, m.group(1), bool(m.group(2))

    if "/" in location or location.endswith(".py") or os.path.isfile(location):
        path = os.path.abspath(location)
        if not os.path.exists(path):
            raise AppLoadError(
                f"cannot load {raw!r}: file {location!r} not found (relative to {os.getcwd()})"
            )
        if not os.path.isfile(path):
            raise AppLoadError(f"cannot load {raw!r}: {location!r} is not a file")
        return Target(raw, path, True, attr, call, location)

    if not _DOTTED.fullmatch(location):
        raise AppLoadError(
            f"cannot load {raw!r}: not a module name, an existing file, or `module:attr`"
        )
    return Target(raw, location, False, attr, call, location)


def load_app(settings: Settings) -> Callable[..., Any]:
    """Import the target, look up its attribute, call the factory; return the app.

    Sets ``sys.argv`` and puts the working directory first on ``sys.path`` first.
    Raises :class:`AppLoadError` naming the target and what went wrong.
    """
    target = parse_target(settings.target)
    sys.argv = [target.argv0, *settings.app_args]
    # A console script starts with its own bin/ folder as sys.path[0]; `gristmill
    # myapp:application` must find `myapp` in the current folder, as under `python -m`.
    _put_first_on_path(os.getcwd())

    module = _import_file(target) if target.is_file else _import_module(target)
    obj, name = _find_attr(module, target)
    if target.call or settings.factory:
        obj = _call_factory(obj, name, target)
    if not callable(obj):
        raise AppLoadError(
            f"cannot serve {target.raw!r}: {name} is not callable (it is {_describe(obj)})"
        )
    return obj


def resolve_interface(app: Callable[..., Any], setting: str, target: str = "") -> str:
    """Decide ``"wsgi"`` or ``"asgi"`` for ``app`` from the ``interface`` setting.

    ``auto`` treats a coroutine function, or an object whose ``__call__`` is one, as ASGI
    (``async def app(scope, receive, send)``), and so an ASGI 2 application (see
    :func:`as_asgi3`); anything else is WSGI.
    """
    if setting != "auto":
        return setting
    return "asgi" if _looks_asgi(app) or _looks_asgi2(app) else "wsgi"


def as_asgi3(app: Callable[..., Any], target: str = "") -> Callable[..., Any]:
    """The ASGI 3 form of ``app``.

    An ASGI 2 application (``app(scope)`` returning ``async def (receive, send)``, usually
    a class) is wrapped; anything that is neither form is an :class:`AppLoadError`.
    """
    if _looks_asgi(app):
        return app
    if _looks_asgi2(app):

        async def asgi2_adapter(scope: Any, receive: Any, send: Any) -> None:
            await app(scope)(receive, send)

        return asgi2_adapter
    what = target or getattr(app, "__qualname__", None) or type(app).__qualname__
    raise AppLoadError(
        f"{what} is served as ASGI but is neither an ASGI 3 application "
        "(`async def app(scope, receive, send)`) nor an ASGI 2 one (`app(scope)` returning "
        "`async def (receive, send)`); is it a WSGI application? (--interface wsgi)"
    )


def _looks_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    if inspect.isroutine(app) or inspect.isclass(app):
        # A plain function is WSGI; a class is called to build an instance, which is
        # never a coroutine function itself.
        return False
    # Python looks special methods up on the type, so that is where the server would call.
    return callable(app) and inspect.iscoroutinefunction(type(app).__call__)


def _looks_asgi2(app: Any) -> bool:
    """A class whose instances are coroutine callables, or a one-argument callable."""
    if inspect.isclass(app):
        return inspect.iscoroutinefunction(_own_call(app))
    quick = _one_required_positional(app)
    if quick is not None:
        return quick
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in params)


def _one_required_positional(app: Any) -> bool | None:
    """What ``inspect.signature`` would say about ``app`` taking exactly one required
    positional argument and no ``*args``, read from the code object of a plain function,
    a method or a callable instance; ``None`` when that needs ``inspect.signature``
    (a wrapped or re-signed callable, a builtin, a partial…).

    Every new worker asks this of a WSGI application, and ``inspect.signature`` is
    ~0.2 ms of a worker replacement in a freshly forked process (``--max-requests``).
    """
    bound = 0
    func = app
    if type(app) is types.MethodType:
        func, bound = app.__func__, 1
    elif type(app) is not types.FunctionType:
        if any(hasattr(app, name) for name in _RESIGNED):
            return None
        func, bound = _own_call(type(app)), 1
    if type(func) is not types.FunctionType or any(hasattr(func, name) for name in _RESIGNED):
        return None
    code = func.__code__
    required = code.co_argcount - len(func.__defaults__ or ())
    if required < bound:
        return None  # the bound argument comes from *args or a default: rare, let inspect say
    return required - bound == 1 and not code.co_flags & inspect.CO_VARARGS


#: Attributes through which ``inspect.signature`` reports another signature than the
#: code object's.
_RESIGNED = ("__wrapped__", "__signature__", "_partialmethod")


def _own_call(cls: type) -> Any:
    """The ``__call__`` an instance of ``cls`` is called through, as stored (the first
    along the MRO; a plain function for ``def __call__``), or ``None``."""
    return next((vars(c)["__call__"] for c in cls.__mro__ if "__call__" in vars(c)), None)


# --- importing ----------------------------------------------------------------------


class _ScriptLoader(importlib.machinery.SourceFileLoader):
    """Loads a file without a ``.py`` extension and never writes bytecode for it.

    Caching would put ``__pycache__/<name>cpython-3xx.pyc`` beside the script, e.g. into
    ``/usr/local/bin``; a script is compiled once per worker anyway.
    """

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        return None


def _import_file(target: Target) -> Any:
    path = target.location
    folder = os.path.dirname(path)
    # The script's siblings must import as they do when it runs as a program.
    _put_first_on_path(folder)
    name = _module_name_for(path)
    loader_cls = importlib.machinery.SourceFileLoader if path.endswith(".py") else _ScriptLoader
    loader = loader_cls(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    if spec is None:  # pragma: no cover - spec_from_loader only fails for odd loaders
        raise AppLoadError(f"cannot load {target.raw!r}: no import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, like a normal import, so the file's own imports
    # (and pickle, dataclasses, typing) can find it under its name.
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise AppLoadError(_import_failure(target, f"running file {path}", e)) from None
    return module


def _module_name_for(path: str) -> str:
    """A module name derived from the file name, unique in ``sys.modules``.

    ``app.py`` becomes ``app`` when that name imports this very file (so ``from app
    import x`` elsewhere does not load it twice); a name that would shadow another module
    (``/srv/email.wsgi``) or is taken gets a ``_gristmill_`` prefix.
    """
    stem = os.path.basename(path)
    if stem.endswith(".py"):
        stem = stem[:-3]
    base = re.sub(r"\W", "_", stem.split(".")[0] if not path.endswith(".py") else stem)
    if not base or base[0].isdigit():
        base = "_" + base
    loaded = sys.modules.get(base)
    if loaded is None and _finds_other_module(base, path) is False:
        return base
    name = f"_gristmill_{base}"
    n = 1
    while name in sys.modules:
        n += 1
        name = f"_gristmill_{base}_{n}"
    return name


def _finds_other_module(name: str, path: str) -> bool:
    """Whether ``import name`` would load something other than ``path``."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return True
    if spec is None:
        return False
    origin = spec.origin
    return not (origin and os.path.exists(origin) and os.path.samefile(origin, path))


def _import_module(target: Target) -> Any:
    name = target.location
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only the target itself (or a parent package) missing gets the short message;
        # a missing dependency inside the app deserves its traceback.
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise AppLoadError(
                f"cannot load {target.raw!r}: no module named {e.name!r} "
                f"(searched sys.path, starting with {sys.path[0]!r})"
            ) from None
        raise AppLoadError(_import_failure(target, f"importing module {name!r}", e)) from None
    except (Exception, SystemExit) as e:
        raise AppLoadError(_import_failure(target, f"importing module {name!r}", e)) from None


def _import_failure(target: Target, doing: str, e: BaseException) -> str:
    if isinstance(e, SystemExit):
        # argparse and oslo.config exit like this on options they do not know.
        return (
            f"cannot load {target.raw!r}: the application exited with status "
            f"{e.code!r} while {doing} (it saw sys.argv = {sys.argv!r})\n" + _format_tb(e)
        )
    return f"cannot load {target.raw!r}: {doing} failed\n" + _format_tb(e)


def _format_tb(e: BaseException) -> str:
    """The traceback without the frames of this module and importlib's machinery."""
    te = traceback.TracebackException.from_exception(e)
    frames = [f for f in te.stack if not _is_loader_frame(f.filename)]
    te.stack = traceback.StackSummary.from_list(frames or te.stack)
    return "".join(te.format()).rstrip()


def _is_loader_frame(filename: str) -> bool:
    return (
        filename == __file__
        or filename.startswith("<frozen importlib")
        or filename == importlib.__file__
    )


# --- attributes and factories -------------------------------------------------------


def _find_attr(module: Any, target: Target) -> tuple[Any, str]:
    """Return the object the target names and a printable name for it."""
    where = target.argv0
    if target.attr is None:
        for attr in DEFAULT_ATTRS:
            if hasattr(module, attr):
                return getattr(module, attr), f"{where}:{attr}"
        raise AppLoadError(
            f"cannot load {target.raw!r}: {where} has no attribute "
            f"{' or '.join(repr(a) for a in DEFAULT_ATTRS)}; name one with "
            f"`{where}:NAME`{_candidates(module)}"
        )
    obj = module
    done = []
    for part in target.attr.split("."):
        if not hasattr(obj, part):
            owner = f"{where}:{'.'.join(done)}" if done else where
            hint = _candidates(obj) if not done else ""
            raise AppLoadError(
                f"cannot load {target.raw!r}: {owner} has no attribute {part!r}{hint}"
            )
        obj = getattr(obj, part)
        done.append(part)
    return obj, f"{where}:{target.attr}"


def _candidates(module: Any) -> str:
    names = sorted(_callable_names(vars(module).items()))
    if not names:
        return "; it defines no public callables"
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"; callables it defines: {shown}"


def _callable_names(items: Iterable[tuple[str, Any]]) -> Iterable[str]:
    for name, value in items:
        if not name.startswith("_") and callable(value) and not inspect.ismodule(value):
            yield name


def _call_factory(factory: Any, name: str, target: Target) -> Any:
    if not callable(factory):
        raise AppLoadError(
            f"cannot load {target.raw!r}: factory {name} is not callable "
            f"(it is {_describe(factory)})"
        )
    try:
        return factory()
    except (Exception, SystemExit) as e:
        raise AppLoadError(
            f"cannot load {target.raw!r}: calling the factory {name}() failed\n" + _format_tb(e)
        ) from None


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(obj).__name__} {text}"


def _put_first_on_path(folder: str) -> None:
    folder = os.path.abspath(folder)
    if sys.path and sys.path[0] == folder:
        return
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


# --- supervisor-side preparation ----------------------------------------------------


def find_top_module(raw: str) -> None:
    """Find where the target's top-level module lives, without importing anything: the
    import system's finders for the working directory and ``sys.path`` are created and
    list their folders, and keep that in ``sys.path_importer_cache``. The supervisor does
    it once before it forks, so a new worker's import of the application starts from
    those caches instead of building them again (~0.4 ms of each replacement on the
    bench's app). A finder re-lists a folder whose modification time changed, so new or
    renamed files are still found. Errors are left for the workers to report."""
    try:
        target = parse_target(raw)
    except AppLoadError:
        return
    if target.is_file:
        return
    top = target.location.partition(".")[0]
    try:
        importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path])
    except Exception:  # noqa: BLE001 - whatever it is, the worker's import says it
        pass


def enter_working_dir(settings: Settings) -> None:
    """Change to ``--working-dir`` (before workers fork, so they inherit it)."""
    if not settings.working_dir:
        return
    try:
        os.chdir(settings.working_dir)
    except OSError as e:
        raise ConfigError(
            f"cannot change to working directory {settings.working_dir!r}: {e.strerror}"
        ) from None
    _put_first_on_path(os.getcwd())


def apply_env_files(paths: Iterable[str], environ: dict[str, str] | None = None) -> None:
    """Load dotenv files into ``environ`` (``os.environ`` by default).

    Later files win over earlier ones; variables that were already set before gristmill
    started are kept, as with docker's and systemd's env files. Each file is read by
    :func:`read_dotenv`.
    """
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    merged: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read env file {path}: {e.strerror}") from None
        merged.update(read_dotenv(text, path))
    for key, value in merged.items():
        environ.setdefault(key, value)


def read_dotenv(text: str, path: str = "<env file>") -> dict[str, str]:
    """The variables of dotenv ``text``, read by python-dotenv as uvicorn's ``--env-file`` is.

    ``${VAR}`` and ``${VAR:-default}`` expand in every value, single-quoted too, from the
    environment first, then from the lines above (as ``load_dotenv()`` does without
    ``override``), so a reference sees the value that is in force; ``$VAR`` without
    braces is kept as written. A name without ``=`` sets nothing. Unlike python-dotenv, which
    logs a warning and skips a line it cannot parse, gristmill refuses the file: a
    variable silently missing would surface later as the application's own error.
    """
    # Imported here: only the supervisor reads env files, workers need not load it.
    # `DotEnv` and `parse_stream` are the building blocks of python-dotenv's own API
    # (tests/test_loader.py covers what is used): `dotenv_values()` resolves references
    # file-first, `load_dotenv()` writes to os.environ, and neither reports bad lines.
    from dotenv.main import DotEnv
    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.strip().partition("\n")[0]
            raise ConfigError(f"{path}:{binding.original.line}: cannot parse {line!r}")
    values = DotEnv(None, stream=io.StringIO(text), interpolate=True, override=False).dict()
    return {key: value for key, value in values.items() if value is not None}
