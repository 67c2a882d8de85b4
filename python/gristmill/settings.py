"""The one settings schema.

Every setting gristmill has is a field of :class:`Settings`, with its type, default and
help text. The command line (``cli.py``), the ``GRISTMILL_*`` environment variables, the
TOML config file and the documentation table are all derived from this module, and the
Rust core receives the same frozen object (``gristmill._core`` reads its attributes by
name), so a setting is declared exactly once.

Precedence, highest first: command line, environment, config file, default.

:class:`ExecutionMode` names the four ways a worker runs, and
:attr:`Settings.execution_mode` is the one place that picks one from the settings: the
worker sets up its side (an event loop, a driver) from it, and the Rust core reads the
same attribute as its own enum (``config.rs``: ``ExecutionMode``), so the two cannot
disagree.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = [
    "Settings",
    "SettingInfo",
    "ExecutionMode",
    "schema",
    "from_sources",
    "env_fallbacks",
    "env_name",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s - "%(r)s" %(s)s %(b)s %(M)sms'


class ExecutionMode(str, enum.Enum):
    """How a worker runs its application; :attr:`Settings.execution_mode` picks one.

    The values are what the Rust core matches (``config.rs``). See "Where the
    application runs" in ``docs/server-behavior.md`` and "How it runs" in
    ``docs/asgi.md``.
    """

    #: WSGI, one Python thread and one runtime thread: the application is called on the
    #: I/O thread itself (``src/wsgi/inline.rs``).
    WSGI_INLINE = "wsgi-inline"
    #: WSGI on ``--threads`` Python threads beside the runtime's I/O threads.
    WSGI_POOL = "wsgi-pool"
    #: ASGI, one thread: an asyncio loop on the main thread whose selector turns the
    #: runtime (``src/asgi/driven.rs``).
    ASGI_DRIVEN = "asgi-driven"
    #: ASGI with the event loop (uvloop when installed) in a thread of its own.
    ASGI_LOOP_THREAD = "asgi-loop-thread"


def _setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    short: str | None = None,
    choices: tuple[str, ...] | None = None,
    group: str = "Server",
    positional: bool = False,
    metavar: str | None = None,
    negatable: bool = False,
    default_text: str | None = None,
) -> Any:
    """Declare one setting; see :class:`SettingInfo` for the meaning of each part.

    ``help`` says what the setting does; the closing "Default is X." is added here from
    ``default`` (see :func:`describe_default`), or from ``default_text`` for the few
    defaults that need words ("the current directory"). A positional argument has no
    default to state.
    """
    if not positional:
        words = default_text or describe_default(default, metavar)
        help = f"{help} Default is {words}."
    meta = {
        "help": help,
        "flag": flag,
        "short": short,
        "choices": choices,
        "group": group,
        "positional": positional,
        "metavar": metavar,
        "negatable": negatable,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_SIZE_UNITS = (("GiB", GIB), ("MiB", MIB), ("KiB", KIB))


def describe_default(value: Any, metavar: str | None = None) -> str:
    """A default value in the words of the help text: ``none``, ``on``/``off``, ``empty``,
    `` `text` ``, ``20 seconds`` (a float is a number of seconds), ``65536 (64 KiB)``
    (a ``BYTES`` setting) or the number itself."""
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    if isinstance(value, float):
        return f"{value:g} second" + ("" if value == 1 else "s")
    if metavar == "BYTES":
        for unit, size in _SIZE_UNITS:
            if value >= size and value % size == 0:
                return f"{value} ({value // size} {unit})"
    return str(value)


@dataclass(frozen=True)
class Settings:
    """Every gristmill setting, with its default. Frozen: derive changes with ``replace``."""

    # --- Application -----------------------------------------------------------------
    target: str = _setting(
        "",
        "The application to serve: `module:attr`, `module` (attribute `application`, "
        "then `app`), `path/to/file.py[:attr]`, a path to a file of any extension or none, "
        "or `module:factory()` to call a factory.",
        positional=True,
        group="Application",
        metavar="TARGET",
    )
    app_args: list[str] = _setting(
        [],
        "An argument passed to the application as `sys.argv[1:]` (repeatable); everything "
        "after `--` on the command line is appended too.",
        default_text="none: the application sees `sys.argv == [TARGET]`",
        flag="--app-arg",
        group="Application",
        metavar="ARG",
    )
    factory: bool = _setting(
        False,
        "Treat the target as a factory: call it with no arguments and serve what it returns.",
        group="Application",
    )
    interface: str = _setting(
        "auto",
        "The application interface. `auto` inspects the callable: a coroutine "
        "function `(scope, receive, send)` is ASGI, anything else WSGI.",
        choices=("auto", "wsgi", "asgi"),
        group="Application",
    )
    working_dir: str | None = _setting(
        None,
        "Change to this directory before loading the application, and put it first on `sys.path`.",
        default_text="the current directory",
        group="Application",
        metavar="DIR",
    )
    env_file: list[str] = _setting(
        [],
        "Load environment variables from this dotenv file before loading the "
        "application (repeatable; later files win; variables already set are kept).",
        group="Application",
        metavar="FILE",
    )
    root_path: str = _setting(
        "",
        "The path prefix the application is mounted at behind a proxy: it becomes "
        "`SCRIPT_NAME` (WSGI) or `root_path` (ASGI). WSGI: it is split off `PATH_INFO` "
        "when the request path starts with it. ASGI: `path` is the full path, so it is "
        "prepended when a proxy stripped it.",
        group="Application",
        metavar="PATH",
    )

    # --- ASGI ------------------------------------------------------------------------
    loop: str = _setting(
        "auto",
        "The event loop that runs ASGI applications. `auto`: with one runtime thread "
        "(the default), an asyncio loop on the worker's main thread that also turns the "
        "Rust runtime, so one thread serves the sockets and the application; with more, "
        "uvloop when installed (else asyncio) in a thread of its own. `asyncio`: the same "
        "without uvloop. `uvloop` (must be installed): uvloop in its own thread beside the "
        "runtime's, always (libuv cannot share its thread).",
        choices=("auto", "asyncio", "uvloop"),
        group="ASGI",
    )
    lifespan: str = _setting(
        "auto",
        "ASGI lifespan events: `on` runs startup/shutdown and stops the worker if the "
        "application does not support them; `off` never sends them; `auto` sends them and "
        "carries on without when the application raises on the lifespan scope.",
        choices=("auto", "on", "off"),
        group="ASGI",
    )
    eager_tasks: bool = _setting(
        True,
        "On Python 3.12 and later, start each request's and WebSocket's task eagerly "
        "(`asyncio.Task(..., eager_start=True)`): it runs at once up to its first real "
        "wait instead of in a later turn of the loop, so a request that needs no I/O "
        "completes without being scheduled. `--no-eager-tasks` schedules them as "
        "`loop.create_task` does; so does a loop with a task factory of its own. No "
        "effect before 3.12.",
        group="ASGI",
        negatable=True,
    )
    ws: bool = _setting(
        True,
        "Serve WebSocket upgrade requests to ASGI applications (`websocket` scope). With "
        "`--no-ws` they reach the application as plain HTTP requests.",
        group="ASGI",
        negatable=True,
    )
    ws_max_size: int = _setting(
        16 * MIB,
        "Maximum size in bytes of one incoming WebSocket message (after reassembling "
        "fragments); a larger one closes the connection with code 1009.",
        group="ASGI",
        metavar="BYTES",
    )
    ws_send_timeout: float = _setting(
        20.0,
        "Seconds a WebSocket message (or close frame) may take to be written to the "
        "client; a client that stops reading for longer has its connection closed "
        "without a close handshake, and the application gets `websocket.disconnect` "
        "with code 1006.",
        group="ASGI",
        metavar="SECONDS",
    )
    ws_ping_interval: float = _setting(
        20.0,
        "Seconds between keepalive pings to each WebSocket client, to keep the "
        "connection alive through proxies with idle timeouts and to find clients that "
        "are gone without a word (half-open TCP); 0 sends none.",
        group="ASGI",
        metavar="SECONDS",
    )
    ws_ping_timeout: float = _setting(
        20.0,
        "Seconds a WebSocket client has to answer a keepalive ping with its pong; one "
        "that does not is closed, and the application gets `websocket.disconnect` with "
        "code 1006.",
        group="ASGI",
        metavar="SECONDS",
    )
    ws_per_message_deflate: bool = _setting(
        True,
        "Offer permessage-deflate (RFC 7692) to WebSocket clients that ask for it: "
        "messages are compressed (those under 128 bytes are sent as they are), at a "
        "memory cost per connection once it has sent or received a compressed message. "
        "`--no-ws-per-message-deflate` never negotiates it.",
        group="ASGI",
        negatable=True,
    )
    ws_deflate_max_window_bits: int = _setting(
        15,
        "The largest LZ77 window (as a power of two, 9 to 15) the server compresses with, "
        "and asks clients that allow it to compress with (`server_max_window_bits`, "
        "`client_max_window_bits`); smaller windows use less memory per connection and "
        "compress less.",
        group="ASGI",
        metavar="BITS",
    )

    # --- Binding and processes -------------------------------------------------------
    host: str = _setting("127.0.0.1", "The address to bind.", group="Binding", metavar="ADDR")
    port: int = _setting(8000, "The TCP port to bind; 0 picks a free one.", group="Binding")
    uds: str | None = _setting(
        None,
        "Bind this Unix domain socket path instead of a TCP address; a stale socket "
        "file is removed first.",
        group="Binding",
        metavar="PATH",
    )
    uds_permissions: str | None = _setting(
        None,
        "The file mode of Unix sockets gristmill creates, in octal (e.g. `660` so that "
        "only the owner and the group, say the proxy's, can connect).",
        default_text="none: the mode the umask gives",
        group="Binding",
        metavar="MODE",
    )
    bind: list[str] = _setting(
        [],
        "An address to listen on (repeatable; all are served at once): `HOST:PORT`, "
        "`[IPV6]:PORT`, `unix:PATH` or `fd://N`. When given, `--host`, `--port` and "
        "`--uds` are not used.",
        group="Binding",
        metavar="ADDR",
    )
    fd: int | None = _setting(
        None,
        "Serve the listening socket inherited as file descriptor N (TCP or Unix) from "
        "the process that started gristmill, instead of binding one. (Sockets from systemd "
        "socket activation, `LISTEN_FDS`, are found without a setting.)",
        group="Binding",
    )
    reuse_port: bool = _setting(
        False,
        "Let each worker bind its own socket for each TCP address with `SO_REUSEPORT`, "
        "so the kernel spreads connections over the workers instead of the workers "
        "competing for one accept queue.",
        group="Binding",
    )
    backlog: int = _setting(
        2048,
        "The listen backlog: connections the kernel queues before they are accepted.",
        group="Binding",
    )
    workers: int = _setting(1, "The number of worker processes.", short="-w", group="Processes")
    threads: int = _setting(
        1,
        "Python threads per worker that call a WSGI application; `wsgi.multithread` "
        "is true when above 1. With 1 (and one runtime thread) the application runs "
        "inline on the I/O thread; above 1, on a pool beside it (see "
        "docs/server-behavior.md).",
        group="Processes",
    )
    busy_poll: int = _setting(
        50,
        "Microseconds a one-thread worker (WSGI with one Python thread and one runtime "
        "thread; ASGI with `--loop auto` or `asyncio` and one runtime thread) keeps "
        "polling its sockets after a request before it sleeps: a request arriving within "
        "that time is served without the wake-up latency of an idle core. Costs CPU only "
        "right after activity; 0 turns it off.",
        group="Processes",
        metavar="MICROSECONDS",
    )
    runtime_threads: int = _setting(
        1,
        "Tokio I/O threads per worker (accepting, parsing, sending).",
        group="Processes",
    )
    preload: bool = _setting(
        False,
        "Import the application once, in the supervisor, before starting the workers "
        "(gunicorn's `--preload`): the workers share its memory copy-on-write, and an "
        "import that fails stops gristmill before any worker starts. SIGHUP and worker "
        "restarts then reuse that import (new code needs a full restart); threads the "
        "import starts are not in the workers. Not with `--reload`.",
        group="Processes",
    )
    reload: bool = _setting(
        False,
        "Development: restart the workers when a watched file changes, as SIGHUP does "
        "(new workers first; a change that breaks the import keeps the old ones serving "
        "and logs the traceback). Needs `watchfiles` (`pip install 'gristmill[reload]'`).",
        group="Processes",
    )
    reload_dir: list[str] = _setting(
        [],
        "A directory `--reload` watches (repeatable).",
        default_text="the working directory (`--working-dir`, else the current one)",
        group="Processes",
        metavar="DIR",
    )
    reload_include: list[str] = _setting(
        ["*.py"],
        "A file name pattern (glob) whose changes `--reload` acts on (repeatable; "
        "replaces the default).",
        default_text="`*.py`",
        group="Processes",
        metavar="GLOB",
    )
    reload_exclude: list[str] = _setting(
        [".*", ".py[cod]", ".sw.*", "~*"],
        "A file or directory name pattern (glob) `--reload` ignores, also when "
        "`--reload-include` matches (repeatable; replaces the default). Hidden files and "
        "directories, bytecode and editor swap files are ignored by default, as are "
        "`__pycache__`, `.git` and virtual environments.",
        default_text="`.*`, `.py[cod]`, `.sw.*`, `~*`",
        group="Processes",
        metavar="GLOB",
    )
    process_name: str | None = _setting(
        None,
        "The name in the process titles `ps` and `top` show: `gristmill: supervisor "
        "[NAME]` and `gristmill: worker N [NAME]` (N counts the workers started). Needs "
        "`setproctitle` (`pip install 'gristmill[proctitle]'`); without it the titles "
        "stay the command line, and a name given here is warned about at start-up.",
        group="Processes",
        default_text="the application target",
        metavar="NAME",
    )
    pid_file: str | None = _setting(
        None,
        "Write the supervisor's process id to this file, removed on exit.",
        group="Processes",
        metavar="FILE",
    )
    graceful_timeout: float = _setting(
        30.0,
        "Seconds a stopping worker has to finish in-flight requests after SIGTERM "
        "before it is killed.",
        group="Processes",
        metavar="SECONDS",
    )

    max_requests: int = _setting(
        0,
        "Replace a worker after it has served this many requests (plus up to "
        "`--max-requests-jitter` more), counted per worker whatever `--threads` is: a new "
        "worker starts first, then the old one drains as on SIGTERM, one worker at a "
        "time. 0 turns it off.",
        group="Processes",
        metavar="N",
    )
    max_requests_jitter: int = _setting(
        0,
        "A random number of requests between 0 and this, drawn for each worker and added "
        "to `--max-requests`, so workers started together do not all retire together.",
        group="Processes",
        metavar="N",
    )
    worker_lifetime: float = _setting(
        0.0,
        "Replace a worker this many seconds after it started (plus up to "
        "`--worker-lifetime-jitter`), as `--max-requests` does. 0 turns it off.",
        group="Processes",
        metavar="SECONDS",
        default_text="0 (off)",
    )
    worker_lifetime_jitter: float = _setting(
        0.0,
        "Random seconds between 0 and this, drawn for each worker and added to "
        "`--worker-lifetime`.",
        group="Processes",
        metavar="SECONDS",
    )
    worker_max_rss: int = _setting(
        0,
        "Replace a worker whose resident memory (RSS) stays above this many MiB for "
        "three checks in a row, one second apart, as `--max-requests` does. 0 turns it off.",
        group="Processes",
        metavar="MIB",
    )
    worker_timeout: float = _setting(
        30.0,
        "Seconds a serving worker may go without a heartbeat before the supervisor kills "
        "it, a timeout of last resort (gunicorn's `--timeout`). A thread in each worker "
        "checks that its I/O runtime turns, that the GIL can be taken and (ASGI) that the "
        "event loop runs callbacks; a worker where one of them stops (a C extension "
        "holding the GIL, a `while True:` in an async handler, a WSGI call longer than "
        "this on a worker with one thread) is sent SIGABRT, which dumps every thread's "
        "Python stack to the log, then SIGKILL 5 seconds later, and is replaced; the log "
        "says how many in-flight requests were lost. Loading the application and "
        "lifespan startup are not counted. 0 turns it off.",
        group="Processes",
        metavar="SECONDS",
    )

    # --- HTTP limits and timeouts ----------------------------------------------------
    header_read_timeout: float = _setting(
        10.0,
        "Seconds a client has to send a complete request head, counted from the "
        "connection's start or from the end of the previous response; then the "
        "connection is closed (slowloris protection).",
        group="HTTP",
        metavar="SECONDS",
    )
    body_read_timeout: float = _setting(
        60.0,
        "Seconds the server waits for the next bytes of a request body. WSGI: the "
        "`wsgi.input` read raises `RequestBodyTimeout` (an `OSError`) and, if the "
        "application lets it propagate, the client gets 408. Both interfaces: a small "
        "body (up to 64 KiB with `Content-Length`, read before the application runs) "
        "that stalls gets 408 without the application. An ASGI application reading a "
        "larger body is not held by it (`receive()` just waits).",
        group="HTTP",
        metavar="SECONDS",
    )
    send_timeout: float = _setting(
        60.0,
        "Seconds a connection may stay blocked on a client that takes none of the "
        "response (its receive window full); then the connection is closed, and a WSGI "
        "application streaming to it gets its iterable closed and its thread back. A "
        "streamed response whose HTTP/2 stream window stays shut that long is ended the "
        "same way (the stream is reset).",
        group="HTTP",
        metavar="SECONDS",
    )
    keepalive_timeout: float = _setting(
        5.0,
        "Seconds an idle keep-alive connection is kept open waiting for the next request.",
        group="HTTP",
        metavar="SECONDS",
    )
    request_timeout: float = _setting(
        0.0,
        "Seconds one application call may take, a timeout of last resort; 0 turns it "
        "off. At the deadline a request whose response has not started gets `504 Gateway "
        "Timeout`, one whose response has started is aborted. ASGI: the application's "
        "task is cancelled. WSGI: the thread cannot be stopped; its stack is logged, its "
        "result discarded when it returns, and a worker whose threads are all stuck is "
        "replaced. With it, a WSGI worker never runs the application on its I/O thread "
        "(one Python thread is a pool of one). It bounds the whole call, so a streamed "
        "response must finish within it too; a WebSocket only until it is accepted.",
        group="HTTP",
        metavar="SECONDS",
    )
    max_header_size: int = _setting(
        64 * KIB,
        "Maximum size in bytes of a request head (request line and headers); larger gets 431.",
        group="HTTP",
        metavar="BYTES",
    )
    max_headers: int = _setting(
        100, "Maximum number of request headers; more gets 431.", group="HTTP"
    )
    max_body_size: int = _setting(
        GIB,
        "Maximum request body size in bytes; a larger declared Content-Length gets "
        "413 before the application runs, and a chunked body that grows past it makes "
        "`wsgi.input` raise (413 if the response has not started). 0 means no limit.",
        group="HTTP",
        metavar="BYTES",
    )
    limit_concurrency: int = _setting(
        0,
        "Per worker, at most this many requests in flight (from the request head until "
        "its response is complete, an open WebSocket included). One more is answered "
        "`503 Service Unavailable` with `Retry-After: 1` at once, without calling the "
        "application, so an overloaded worker sheds load instead of queueing it "
        "(uvicorn's `--limit-concurrency`, Granian's `--backpressure`). 0 means no limit.",
        group="Limits",
        metavar="N",
    )
    max_connections: int = _setting(
        1024,
        "Maximum concurrent connections per worker. At the limit the worker stops "
        "accepting and closes idle keep-alive connections to make room.",
        group="HTTP",
    )
    server_header: bool = _setting(
        True,
        "Send `Server: gristmill` when the application sets no Server header.",
        group="HTTP",
        negatable=True,
    )

    # --- Proxy -----------------------------------------------------------------------
    proxy_headers: bool = _setting(
        True,
        "Believe the proxy headers of trusted peers (`--forwarded-allow-ips`): "
        "`X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `-Prefix` and RFC 7239 `Forwarded` "
        "set the client address, scheme, host and mount path the application sees (see "
        'docs/server-behavior.md, "Behind a proxy"). With `--no-proxy-headers` they are '
        "plain headers from every peer.",
        group="Proxy",
        negatable=True,
    )
    forwarded_allow_ips: str = _setting(
        "127.0.0.1,::1",
        "The peers whose proxy headers are believed: comma-separated IP addresses and "
        "CIDR networks (`10.0.0.0/8`), or `*` for any peer. Peers on a Unix socket are "
        "always trusted. When this setting is not given, the environment variable "
        "`FORWARDED_ALLOW_IPS` is used, as gunicorn and uvicorn do.",
        group="Proxy",
        metavar="LIST",
    )
    proxy_protocol: bool = _setting(
        False,
        "Expect the HAProxy PROXY protocol header (version 1 or 2) at the start of every "
        "connection, before TLS, and take the client address from it. Accepted only from "
        "the peers `--forwarded-allow-ips` trusts (and Unix-socket peers); a connection "
        "from another peer, or without a valid header, is closed. The header must arrive "
        'within `--header-read-timeout` (see docs/deployment.md, "PROXY protocol").',
        group="Proxy",
    )

    # --- HTTP/2 ----------------------------------------------------------------------
    http: str = _setting(
        "auto",
        "The HTTP versions served. `auto`: HTTP/1.1, and HTTP/2 when TLS ALPN chooses `h2` "
        "or, in cleartext, when the client starts with the HTTP/2 preface (prior "
        "knowledge, h2c). `1`: HTTP/1.1 only. `2`: HTTP/2 only.",
        choices=("auto", "1", "2"),
        group="HTTP/2",
    )
    http2_max_concurrent_streams: int = _setting(
        200,
        "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: requests one connection may have in "
        "flight at once.",
        group="HTTP/2",
    )
    http2_initial_stream_window_size: int = _setting(
        MIB,
        "HTTP/2 initial flow-control window of each stream, in bytes: how much of a "
        "request body the client may send before the application reads it.",
        group="HTTP/2",
        metavar="BYTES",
    )
    http2_initial_connection_window_size: int = _setting(
        MIB,
        "HTTP/2 initial flow-control window of the whole connection, in bytes.",
        group="HTTP/2",
        metavar="BYTES",
    )
    http2_adaptive_window: bool = _setting(
        False,
        "Grow the HTTP/2 flow-control windows with the measured bandwidth-delay product "
        "(overrides the initial window sizes).",
        group="HTTP/2",
        negatable=True,
    )
    http2_max_frame_size: int = _setting(
        16 * KIB,
        "HTTP/2 SETTINGS_MAX_FRAME_SIZE: the largest frame payload the server accepts, "
        "16384 to 16777215 bytes.",
        group="HTTP/2",
        metavar="BYTES",
    )
    http2_keep_alive_interval: float = _setting(
        0.0,
        "Seconds between HTTP/2 PING frames sent to check that the client is still there; "
        "0 sends none.",
        default_text="0 (off)",
        group="HTTP/2",
        metavar="SECONDS",
    )
    http2_keep_alive_timeout: float = _setting(
        20.0,
        "Seconds to wait for the answer to a keep-alive PING before closing the connection.",
        group="HTTP/2",
        metavar="SECONDS",
    )

    # --- HTTP/3 ----------------------------------------------------------------------
    http3: bool = _setting(
        False,
        "Also serve HTTP/3 over QUIC, on UDP at the host and port of every TCP listener, "
        "with the TLS certificate (needs `--ssl-certfile`/`--ssl-keyfile`). Each worker "
        "binds its own UDP socket with SO_REUSEPORT; 0-RTT is off "
        '(see docs/deployment.md, "HTTP/3").',
        group="HTTP/3",
        negatable=True,
    )
    http3_alt_svc: bool = _setting(
        True,
        'With `--http3`, send `Alt-Svc: h3=":PORT"; ma=86400` on HTTP/1.1 and HTTP/2 TLS '
        "responses, so that browsers and curl switch to HTTP/3.",
        group="HTTP/3",
        negatable=True,
    )
    http3_max_concurrent_streams: int = _setting(
        100,
        "HTTP/3 (QUIC) request streams one connection may have open at once.",
        group="HTTP/3",
    )
    http3_idle_timeout: float = _setting(
        30.0,
        "Seconds without a packet after which a QUIC connection is closed (its "
        "max_idle_timeout transport parameter).",
        group="HTTP/3",
        metavar="SECONDS",
    )

    # --- TLS -------------------------------------------------------------------------
    ssl_certfile: str | None = _setting(
        None,
        "Serve HTTPS with this PEM certificate file: the server certificate first, then "
        "any intermediates (the chain). Needs `--ssl-keyfile`.",
        default_text="none (cleartext)",
        group="TLS",
        metavar="FILE",
    )
    ssl_keyfile: str | None = _setting(
        None,
        "The PEM private key of the certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or "
        "encrypted PKCS#8 with `--ssl-keyfile-password`.",
        group="TLS",
        metavar="FILE",
    )
    ssl_keyfile_password: str | None = _setting(
        None,
        "The password of an encrypted `--ssl-keyfile` (prefer the "
        "GRISTMILL_SSL_KEYFILE_PASSWORD variable or the config file: a command line is "
        "visible to other users).",
        group="TLS",
        metavar="PASSWORD",
    )
    ssl_min_version: str = _setting(
        "1.2",
        "The lowest TLS version accepted.",
        choices=("1.2", "1.3"),
        group="TLS",
    )
    ssl_ca_certs: str | None = _setting(
        None,
        "A PEM file of the CA certificates that sign client certificates, for "
        "`--ssl-client-verify`.",
        group="TLS",
        metavar="FILE",
    )
    ssl_client_verify: str = _setting(
        "none",
        "Client certificates (mutual TLS): `none` asks for none; `optional` asks, and "
        "verifies one if presented; `required` refuses clients without a valid one. "
        "Verified certificates reach the application (`SSL_CLIENT_CERT`, "
        "`SSL_CLIENT_S_DN`, `SSL_CLIENT_VERIFY`).",
        choices=("none", "optional", "required"),
        group="TLS",
    )

    # --- Static files ----------------------------------------------------------------
    static: list[str] = _setting(
        [],
        "Serve the files under DIR at URL_PREFIX from the Rust core, e.g. "
        "`/static=./public` (repeatable; the longest matching prefix wins; a relative "
        "DIR is taken from the directory gristmill starts in). A request under a prefix "
        "never reaches the application: a missing file is a 404 (see "
        "`--static-fallthrough`). ETag, Last-Modified, conditional requests, ranges and "
        "precompressed `.br`/`.gz` siblings are handled; dotfiles are hidden.",
        group="Static files",
        metavar="URL_PREFIX=DIR",
    )
    static_max_age: int | None = _setting(
        None,
        "Send `Cache-Control: public, max-age=SECONDS` with static files; none sends no "
        "Cache-Control header (clients then revalidate with the ETag).",
        group="Static files",
        metavar="SECONDS",
    )
    static_index: bool = _setting(
        False,
        "Serve a directory's `index.html` for a request of the directory (a request "
        "without the trailing slash is redirected to it).",
        group="Static files",
        negatable=True,
    )
    static_fallthrough: bool = _setting(
        False,
        "Pass a request under a static prefix whose file does not exist to the "
        "application instead of answering 404.",
        group="Static files",
        negatable=True,
    )
    static_follow_symlinks: bool = _setting(
        False,
        "Serve symbolic links that point outside the static directory. Off: a link is "
        "served only when its target lies inside the directory.",
        group="Static files",
        negatable=True,
    )
    static_cache: bool = _setting(
        True,
        "Keep small static files (up to 16 KiB) in memory, watched with inotify so that "
        "any change to them or their directories is seen by the next request. Off: every "
        "request reads the file system (for files changed in ways inotify does not "
        "report: through a shared mmap, or by another machine on a network file system).",
        group="Static files",
        negatable=True,
    )

    # --- Logging ---------------------------------------------------------------------
    log_level: str = _setting(
        "info",
        "The level of the `gristmill.error` logger.",
        choices=("critical", "error", "warning", "info", "debug"),
        group="Logging",
    )
    log_config: str | None = _setting(
        None,
        "A logging configuration file (JSON, YAML with PyYAML installed, or TOML) "
        "applied with `logging.config.dictConfig` instead of the default one.",
        group="Logging",
        metavar="FILE",
    )
    access_log: bool = _setting(
        True,
        "Log one line per request to the `gristmill.access` logger.",
        group="Logging",
        negatable=True,
    )
    access_log_format: str = _setting(
        DEFAULT_ACCESS_LOG_FORMAT,
        "The access log line, with atoms `%(h)s` remote address, `%(t)s` time, "
        "`%(r)s` request line, `%(m)s` method, `%(U)s` path, `%(q)s` query, `%(H)s` "
        "protocol, `%(s)s` status, `%(b)s` response body bytes, `%(D)s` duration in "
        "microseconds, `%(M)s` in milliseconds, `%(T)s` in seconds, `%(p)s` worker pid "
        "and `%({header}i)s` any request header.",
        group="Logging",
        metavar="FORMAT",
    )

    # --- Metrics ---------------------------------------------------------------------
    metrics_bind: str = _setting(
        "",
        "Serve Prometheus metrics at `/metrics` on this address: `HOST:PORT`, "
        "`[IPV6]:PORT` or `unix:PATH` (a port of its own; nothing else is served there). "
        "One view across all workers: requests, durations, connections, bytes, "
        "WebSocket, TLS, limits and worker restarts (see docs/deployment.md, "
        "\"Metrics\"). Needs `pip install 'gristmill[metrics]'`.",
        group="Metrics",
        metavar="ADDRESS",
        default_text="empty (off)",
    )

    # --- Config file -----------------------------------------------------------------
    config: str | None = _setting(
        None,
        "A TOML file of settings (keys are the setting names, `-` or `_`); the "
        "command line and GRISTMILL_* variables override it.",
        short="-c",
        group="Config",
        metavar="FILE",
    )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (no validation: :func:`validate` is
        what checks values).

        ``dataclasses.replace`` would call ``__init__`` with every field again, ~0.25 ms
        for ~100 fields; a new worker replaces twice (its ``max_requests``, its resolved
        ``interface``) on every worker replacement. A shallow copy of the instance's
        ``__dict__`` with the changes set is the same object, ~20 times cheaper."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(sorted(unknown))}")
        new = object.__new__(Settings)
        state = dict(self.__dict__)
        state.update(changes)
        object.__setattr__(new, "__dict__", state)
        return new

    @property
    def execution_mode(self) -> ExecutionMode:
        """How a worker with these settings runs: the one place that decides it.

        WSGI runs inline with one Python thread and one runtime thread (and no
        ``request_timeout``), else on a pool.
        ASGI runs on one thread (the loop turns the runtime) with one runtime thread and
        ``loop`` ``auto`` or ``asyncio`` (uvloop cannot share its thread), else with the
        loop in a thread of its own. Needs a resolved ``interface`` (the worker resolves
        ``auto`` from the application first); raises ``ValueError`` otherwise."""
        if self.interface == "wsgi":
            # With a request timeout, a pool (of one) even for one thread: inline, the
            # application blocks the I/O thread, so nothing could send the 504.
            inline_ok = not self.request_timeout
            if self.threads == 1 and self.runtime_threads == 1 and inline_ok:
                return ExecutionMode.WSGI_INLINE
            return ExecutionMode.WSGI_POOL
        if self.interface == "asgi":
            if self.runtime_threads == 1 and self.loop in ("auto", "asyncio"):
                return ExecutionMode.ASGI_DRIVEN
            return ExecutionMode.ASGI_LOOP_THREAD
        raise ValueError(
            f"the execution mode needs a resolved interface ('wsgi' or 'asgi'), "
            f"not {self.interface!r}"
        )

    @property
    def static_files(self) -> Settings | None:
        """These settings when they serve static files (``static`` given), else ``None``:
        the Rust core reads the ``static*`` settings through it as one optional group
        (``src/static_files/mod.rs``: ``StaticSettings``)."""
        return self if self.static else None

    @property
    def tls(self) -> Settings | None:
        """These settings when they serve TLS (``ssl_certfile`` given), else ``None``.

        The Rust core reads the ``ssl_*`` settings through it as one optional group
        (``config.rs``: ``Option<TlsSettings>``); :func:`validate` has checked that they
        are complete."""
        return self if self.ssl_certfile else None


#: Every field of :class:`Settings` (what :meth:`Settings.replace` accepts).
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


@dataclass(frozen=True)
class SettingInfo:
    """One setting as the CLI, env and docs see it."""

    name: str
    type: Any
    default: Any
    help: str
    flag: str
    short: str | None
    choices: tuple[str, ...] | None
    group: str
    positional: bool
    metavar: str | None
    negatable: bool

    @property
    def env(self) -> str:
        return env_name(self.name)

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.type) is list

    @property
    def base_type(self) -> type:
        """The scalar type: `int`, `float`, `bool` or `str` (also for optional/list)."""
        t = self.type
        if typing.get_origin(t) is list:
            return str
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if args:
            t = args[0]
        return t if t in (int, float, bool, str) else str

    def parse(self, raw: str) -> Any:
        """Convert a string (env var, config) to this setting's scalar type."""
        t = self.base_type
        try:
            if t is bool:
                low = raw.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(raw)
            value = t(raw)
        except ValueError:
            raise ConfigError(
                f"invalid value for {self.name}: {raw!r} (expected {t.__name__})"
            ) from None
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"invalid value for {self.name}: {raw!r} (choose from {', '.join(self.choices)})"
            )
        return value


def env_name(name: str) -> str:
    """The environment variable of a setting: ``GRISTMILL_`` + upper-case name."""
    return "GRISTMILL_" + name.upper()


def schema() -> list[SettingInfo]:
    """Every setting, in declaration order."""
    hints = typing.get_type_hints(Settings)
    out = []
    for f in dataclasses.fields(Settings):
        m = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(
            SettingInfo(
                name=f.name,
                type=hints[f.name],
                default=default,
                help=m["help"],
                flag=m["flag"] or "--" + f.name.replace("_", "-"),
                short=m["short"],
                choices=m["choices"],
                group=m["group"],
                positional=m["positional"],
                metavar=m["metavar"],
                negatable=m["negatable"],
            )
        )
    return out


def _coerce(info: SettingInfo, value: Any, source: str) -> Any:
    """Check and convert a value from a config file or mapping."""
    if info.is_list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {info.name} must be a list of strings")
        return [str(v) for v in value]
    if isinstance(value, str):
        return info.parse(value)
    t = info.base_type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and not isinstance(value, t) or (t is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {info.name} must be {t.__name__}, got {value!r}")
    if info.choices and value not in info.choices:
        raise ConfigError(
            f"{source}: invalid value for {info.name}: {value!r} "
            f"(choose from {', '.join(info.choices)})"
        )
    return value


# Seconds settings become a Rust `Duration`, which holds less than 2**64 seconds; the
# comparisons also refuse NaN.
_MAX_SECONDS = 2.0**64


def validate(s: Settings) -> Settings:
    """Cross-field and range checks; raises :class:`ConfigError`.

    The only place settings are checked: the Rust core takes the result as it is
    (``src/config.rs``)."""
    for name in (
        "workers",
        "threads",
        "runtime_threads",
        "max_connections",
        "max_headers",
        "backlog",
        "ws_max_size",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    for name in ("max_requests", "max_requests_jitter", "worker_max_rss"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must be 0 (off) or positive")
    for name in ("worker_lifetime", "worker_lifetime_jitter", "request_timeout", "worker_timeout"):
        if not 0 <= getattr(s, name) < _MAX_SECONDS:
            raise ConfigError(f"{name} must be 0 (off) or a positive number of seconds")
    if not 0 <= s.ws_ping_interval < _MAX_SECONDS:
        raise ConfigError("ws_ping_interval must be 0 (off) or a positive number of seconds")
    if not 9 <= s.ws_deflate_max_window_bits <= 15:
        raise ConfigError("ws_deflate_max_window_bits must be between 9 and 15")
    if not 0 <= s.busy_poll <= 1_000_000:
        raise ConfigError("busy_poll must be between 0 and 1000000 microseconds")
    for name in (
        "header_read_timeout",
        "body_read_timeout",
        "send_timeout",
        "keepalive_timeout",
        "graceful_timeout",
        "ws_send_timeout",
        "ws_ping_timeout",
        "http2_keep_alive_timeout",
        "http3_idle_timeout",
    ):
        if not 0 < getattr(s, name) < _MAX_SECONDS:
            raise ConfigError(f"{name} must be a positive number of seconds")
    if s.max_body_size < 0:
        raise ConfigError("max_body_size must be 0 (no limit) or positive")
    if s.max_header_size < 1024:
        raise ConfigError("max_header_size must be at least 1024")
    if not 0 <= s.port <= 65535:
        raise ConfigError("port must be between 0 and 65535")
    if s.root_path and (not s.root_path.startswith("/") or s.root_path.endswith("/")):
        raise ConfigError("root_path must start with '/' and not end with '/'")
    _validate_forwarded_allow_ips(s.forwarded_allow_ips)
    if s.preload and s.reload:
        raise ConfigError(
            "--preload and --reload cannot be combined: the preloaded code would never be "
            "reloaded (use --reload alone while developing)"
        )
    _validate_http2(s)
    _validate_tls(s)
    _validate_http3(s)
    if s.uds_permissions is not None:
        try:
            mode = int(s.uds_permissions, 8)
        except ValueError:
            mode = -1
        if not 0 <= mode <= 0o777:
            raise ConfigError(
                f"uds_permissions must be an octal file mode like 660, got {s.uds_permissions!r}"
            )
    if s.fd is not None and s.fd < 0:
        raise ConfigError("fd must be a file descriptor number (0 or more)")
    from .sockets import parse_address

    for addr in s.bind:
        parse_address(addr)
    if s.metrics_bind:
        from .metrics import parse_bind

        parse_bind(s.metrics_bind)
    if s.static_max_age is not None and not 0 <= s.static_max_age < 2**63:
        raise ConfigError("static_max_age must be 0 or a positive number of seconds")
    if s.static:
        s = s.replace(static=[_validate_static(m) for m in s.static])
    return s


def _validate_static(mount: str) -> str:
    """One ``--static URL_PREFIX=DIR``, normalised: the prefix without a trailing slash
    (``/`` stays), the directory absolute (so a worker's ``--working-dir`` does not
    move it)."""
    prefix, sep, directory = mount.partition("=")
    if not sep or not directory:
        raise ConfigError(f"static: {mount!r} must be URL_PREFIX=DIR, like /static=./public")
    if not prefix.startswith("/"):
        raise ConfigError(f"static: the URL prefix {prefix!r} must start with '/'")
    if any(c in prefix for c in "?#%\\") or "/." in prefix or "//" in prefix:
        raise ConfigError(
            f"static: the URL prefix {prefix!r} must be a plain path "
            "(no '?', '#', '%', backslash, empty or dot segments)"
        )
    if not os.path.isdir(directory):
        raise ConfigError(f"static: {directory!r} (for {prefix}) is not a directory")
    prefix = prefix.rstrip("/") or "/"
    return f"{prefix}={os.path.abspath(directory)}"


def _validate_forwarded_allow_ips(value: str) -> None:
    """Each item an IP address or a network with a prefix length (what the Rust core
    parses with ``ipnet``: no netmasks, no IPv6 zone), or ``*``."""
    import ipaddress

    for item in (i.strip() for i in value.split(",")):
        if not item or item == "*":
            continue
        address, _, prefix = item.partition("/")
        try:
            if "%" in address or (prefix and not prefix.isdigit()):
                raise ValueError(item)
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(
                f"forwarded_allow_ips: {item!r} is not an IP address or a network "
                "(like 10.0.0.0/8), nor '*'"
            ) from None


def _validate_http2(s: Settings) -> None:
    if not 1 <= s.http2_max_concurrent_streams <= 2**31 - 1:
        raise ConfigError("http2_max_concurrent_streams must be between 1 and 2147483647")
    for name in ("http2_initial_stream_window_size", "http2_initial_connection_window_size"):
        if not 65535 <= getattr(s, name) <= 2**31 - 1:
            raise ConfigError(f"{name} must be between 65535 and 2147483647")
    if not 16384 <= s.http2_max_frame_size <= 16777215:
        raise ConfigError("http2_max_frame_size must be between 16384 and 16777215")
    if not 0 <= s.http2_keep_alive_interval < _MAX_SECONDS:
        raise ConfigError(
            "http2_keep_alive_interval must be 0 (off) or a positive number of seconds"
        )


def _validate_tls(s: Settings) -> None:
    if bool(s.ssl_certfile) != bool(s.ssl_keyfile):
        raise ConfigError("ssl_certfile and ssl_keyfile must be given together")
    if not s.ssl_certfile:
        for name in ("ssl_keyfile_password", "ssl_ca_certs"):
            if getattr(s, name):
                raise ConfigError(f"{name} needs ssl_certfile and ssl_keyfile")
        if s.ssl_client_verify != "none":
            raise ConfigError("ssl_client_verify needs ssl_certfile and ssl_keyfile")
    if s.ssl_client_verify != "none" and not s.ssl_ca_certs:
        raise ConfigError(
            "ssl_client_verify needs ssl_ca_certs (the CAs that sign client certificates)"
        )


def _validate_http3(s: Settings) -> None:
    if s.http3 and not s.ssl_certfile:
        raise ConfigError(
            "--http3 needs --ssl-certfile and --ssl-keyfile (HTTP/3 always runs over TLS)"
        )
    if not 1 <= s.http3_max_concurrent_streams <= 2**32 - 1:
        raise ConfigError("http3_max_concurrent_streams must be between 1 and 4294967295")


def from_sources(cli: dict[str, Any], environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Merge the command line (only the values given), env vars and the config file."""
    environ = os.environ if environ is None else environ
    infos = {i.name: i for i in schema()}
    values: dict[str, Any] = {}

    env_values: dict[str, Any] = {}
    for info in infos.values():
        raw = environ.get(info.env)
        if raw is None or info.positional and not raw:
            continue
        env_values[info.name] = raw.split(os.pathsep) if info.is_list else info.parse(raw)

    config_path = cli.get("config") or env_values.get("config")
    if config_path:
        values.update(_load_config_file(config_path, infos))
    values.update(env_values)
    values.update(cli)
    env_fallbacks(values, environ)
    return validate(Settings(**values))


def env_fallbacks(values: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    """Fill ``values`` from the environment variables other servers use, for the
    settings not given: gunicorn's and uvicorn's ``FORWARDED_ALLOW_IPS``. Used by the
    command line and by :func:`gristmill.serve`."""
    if "forwarded_allow_ips" not in values and "FORWARDED_ALLOW_IPS" in environ:
        values["forwarded_allow_ips"] = environ["FORWARDED_ALLOW_IPS"]


def _load_config_file(path: str, infos: dict[str, SettingInfo]) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML in config file {path}: {e}") from None
    data = data.get("tool", {}).get("gristmill", data) if "tool" in data else data
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        info = infos.get(name)
        if info is None or name == "config":
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = _coerce(info, value, path)
    return out
