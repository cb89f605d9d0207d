"""Who may talk to ``moodwire web``: the Host check, the token, the login page's cookie.

- **Host header.** A request whose Host is not one of ``MOODWIRE_WEB_ALLOWED_HOSTS`` (plus
  the bind address) is refused with 400 before anything else runs. That is what defeats
  DNS rebinding: a hostile page whose name re-resolves to 127.0.0.1 still sends its own
  name as Host.
- **Token.** With ``MOODWIRE_WEB_TOKEN`` set, every path except ``/healthz``, the login
  page and the static assets needs either ``Authorization: Bearer <token>`` (scripts) or
  the session cookie the login page sets (browsers). The CLI refuses to bind a
  non-loopback address without a token (``require_token_for``).
- The cookie holds an HMAC of the token, not the token: it is worthless once the token
  changes, and reading it out of a browser does not reveal the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)

COOKIE = "moodwire_session"
MIN_TOKEN_CHARS = 16
# A week: long enough for a wall display, short enough that a lost laptop's cookie expires.
COOKIE_MAX_AGE_S = 7 * 24 * 3600
# Slows guessing down without a lockout that a stranger could trigger for everyone.
FAILED_LOGIN_DELAY_S = 1.0
# Paths open without a login: the health probe, the login itself, the page's own code.
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
OPEN_PREFIXES = ("/static/",)
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
MAX_LOGIN_BODY = 4096


class TokenRequired(ValueError):
    """The web server would be reachable from other hosts without a token."""


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_token_for(bind_host: str, settings: Settings) -> None:
    """Raise when ``bind_host`` is not loopback and no usable token is configured."""
    token = settings.web_token.get_secret_value() if settings.web_token else ""
    if settings.web_token is not None and len(token) < MIN_TOKEN_CHARS:
        raise TokenRequired(
            f"MOODWIRE_WEB_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_CHARS}, "
            "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not token and not is_loopback(bind_host):
        raise TokenRequired(
            f"moodwire web would listen on {bind_host or 'every address'}, which other hosts "
            "can reach, without a login; set MOODWIRE_WEB_TOKEN (e.g. `python -c 'import "
            "secrets; print(secrets.token_urlsafe(32))'`) or bind 127.0.0.1"
        )


def allowed_hosts(settings: Settings, bind_host: str) -> frozenset[str] | None:
    """Host names the server answers to, lower case; None when any is allowed (``*``)."""
    names = {h.strip().strip("[]").lower() for h in settings.web_allowed_hosts.split(",")}
    names.discard("")
    if "*" in names:
        return None
    if bind_host.strip() not in WILDCARD_BINDS:
        names.add(bind_host.strip().strip("[]").lower())
    return frozenset(names)


def host_of(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"moodwire web session v1", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def install(app: FastAPI, settings: Settings, bind_host: str, static: Path) -> None:
    """Add the Host check, the token check, security headers and ``/login``/``/logout``."""
    hosts = allowed_hosts(settings, bind_host)
    token = settings.web_token.get_secret_value() if settings.web_token else None
    session = session_value(token) if token else None
    login_page = (static / "login.html").read_text()

    def authenticated(request: Request) -> bool:
        if token is None or session is None:
            return True
        bearer = request.headers.get("authorization", "")
        if bearer[:7].lower() == "bearer " and _same(bearer[7:].strip(), token):
            return True
        return _same(request.cookies.get(COOKIE, ""), session)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response: Response
        host = host_of(request.headers.get("host", ""))
        if hosts is not None and host not in hosts:
            log.warning("refused a request for an unknown host", extra={"host": host[:100]})
            response = JSONResponse({"error": "unknown host"}, status_code=400)
        elif (
            request.url.path in OPEN_PATHS
            or request.url.path.startswith(OPEN_PREFIXES)
            or authenticated(request)
        ):
            response = await call_next(request)
        elif request.method == "GET" and request.url.path == "/":
            response = RedirectResponse("/login", status_code=303)
        else:
            response = JSONResponse(
                {"error": "login required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="moodwire"'},
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    def page(failed: bool = False) -> HTMLResponse:
        body = login_page.replace('id="failed" hidden', 'id="failed"') if failed else login_page
        return HTMLResponse(
            body, status_code=401 if failed else 200, headers={"Cache-Control": "no-store"}
        )

    @app.get("/login", include_in_schema=False, response_model=None)
    def login_form() -> Response:
        if token is None:
            return RedirectResponse("/", status_code=303)
        return page()

    @app.post("/login", include_in_schema=False, response_model=None)
    async def login(request: Request) -> Response:
        if token is None or session is None:
            return RedirectResponse("/", status_code=303)
        # Parsed here: FastAPI's Form() would need python-multipart for one field.
        body = (await request.body())[:MAX_LOGIN_BODY].decode("utf-8", errors="replace")
        given = (parse_qs(body).get("token") or [""])[0].strip()
        if not _same(given, token):
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            log.warning(
                "failed login", extra={"client": request.client.host if request.client else None}
            )
            return page(failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session,
            max_age=COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> RedirectResponse:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response
