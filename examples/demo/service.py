"""A tiny stand-in for a real service, so `make demo` has something to check offline.

Standard library only. It serves, on 127.0.0.1:8084 by default:

  GET  /             a small HTML page; every response carries the security headers a
                     deploy gate looks for (CSP, HSTS, COOP, COEP, nosniff, Referrer-Policy)
  GET  /health       {"ok": true, "data": {"status": "up", ...}}
  GET  /metrics      Prometheus text format, including chat_requests_total
  POST /api/greeting {"ok": true, "sessionId": ..., "csrfToken": ...}
  POST /api/chat     {"ok": true, "reply": ...}
  POST /api/csp-report  204 No Content

Usage: python examples/demo/service.py [--host 127.0.0.1] [--port 8084] [--quiet]
The port can also come from GONOGO_DEMO_PORT. It is a demo: no TLS (so the HSTS header is
only there to be checked), no auth, nothing persisted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8084
VERSION = "1.4.0-demo"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; report-uri /api/csp-report"
    ),
    # Browsers ignore HSTS over plain HTTP; a real service sends it from its TLS terminator.
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

INDEX = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gonogo demo service</title></head>
<body><h1>gonogo demo service</h1>
<p>Try <a href="/health">/health</a> and <a href="/metrics">/metrics</a>.</p></body></html>
"""


class Stats:
    """Counters behind /metrics; the server is threaded, hence the lock."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = threading.Lock()
        self._http: dict[tuple[str, int], int] = {}
        self.chat_ok = 0
        self.chat_bad = 0

    def count(self, path: str, status: int) -> None:
        with self._lock:
            key = (path, status)
            self._http[key] = self._http.get(key, 0) + 1

    def chat(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.chat_ok += 1
            else:
                self.chat_bad += 1

    def exposition(self) -> str:
        with self._lock:
            http = sorted(self._http.items())
            chat_ok, chat_bad = self.chat_ok, self.chat_bad
        lines = [
            "# HELP chat_requests_total Chat requests handled, by outcome.",
            "# TYPE chat_requests_total counter",
            f'chat_requests_total{{outcome="ok"}} {chat_ok}',
            f'chat_requests_total{{outcome="error"}} {chat_bad}',
            "# HELP demo_http_requests_total HTTP requests served, by path and status.",
            "# TYPE demo_http_requests_total counter",
        ]
        lines += [f'demo_http_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in http]
        lines += [
            "# HELP demo_uptime_seconds Seconds since the service started.",
            "# TYPE demo_uptime_seconds gauge",
            f"demo_uptime_seconds {time.time() - self.started:.3f}",
            "# HELP demo_up 1 while the service answers.",
            "# TYPE demo_up gauge",
            "demo_up 1",
        ]
        return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    server_version = "gonogo-demo/" + VERSION
    stats: Stats  # set on the class made by make_server
    quiet = False

    # -- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, INDEX, "text/html; charset=utf-8")
        elif path == "/health":
            self._json(
                HTTPStatus.OK,
                {
                    "ok": True,
                    "data": {
                        "status": "up",
                        "version": VERSION,
                        "uptime_s": round(time.time() - self.stats.started, 3),
                    },
                },
            )
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.stats.exposition().encode(), "text/plain; version=0.0.4")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "not found"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path == "/api/greeting":
            self._json(
                HTTPStatus.OK,
                {
                    "ok": True,
                    "sessionId": secrets.token_hex(8),
                    "csrfToken": secrets.token_urlsafe(16),
                    "greeting": "Hola, soy el asistente de demo.",
                },
            )
        elif path == "/api/chat":
            message = body.get("message") if isinstance(body, dict) else None
            if not isinstance(message, str) or not message.strip():
                self.stats.chat(ok=False)
                self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "message is required"})
                return
            self.stats.chat(ok=True)
            self._json(HTTPStatus.OK, {"ok": True, "reply": f"echo: {message.strip()[:200]}"})
        elif path == "/api/csp-report":
            self._send(HTTPStatus.NO_CONTENT, b"", None)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "not found"})

    # -- helpers ---------------------------------------------------------------------------

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 64 * 1024)) if length > 0 else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.stats.count(self.path.split("?", 1)[0], int(status))

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, quiet: bool = False) -> ThreadingHTTPServer:
    """A ready-to-serve server (port 0 picks a free one: see server.server_address)."""
    handler = type("DemoHandler", (Handler,), {"stats": Stats(), "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def _default_port() -> int:
    raw = os.environ.get("GONOGO_DEMO_PORT", "")
    return int(raw) if raw.isdigit() else DEFAULT_PORT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The gonogo demo service (offline, stdlib only).")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=_default_port(), help="default: $GONOGO_DEMO_PORT or 8084")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)

    try:
        server = make_server(args.host, args.port, quiet=args.quiet)
    except OSError as exc:
        print(f"demo service: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"demo service listening on http://{host!s}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
