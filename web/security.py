"""Headers every response carries: nothing loads from elsewhere, nothing leaks a Referer."""

from __future__ import annotations

from aiohttp import web

from meeting.config import Config

from .keys import CONFIG

# 'self' only: no CDN, font host or analytics can be reached from a page even by mistake.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self), geolocation=()",
}


# Sent only where the site is served over HTTPS (directly, or as its public URL says).
STRICT_TRANSPORT_SECURITY = "max-age=31536000"

# The Server header names no framework and no version for a scanner to match.
SERVER = "meetnow"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: runs for handlers, static files and error pages alike."""
    response.headers.update(SECURITY_HEADERS)
    response.headers["Server"] = SERVER
    if request.secure or request.app[CONFIG].server.public_url.startswith("https://"):
        response.headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY


def edge_headers(config: Config) -> dict[str, str]:
    """The same headers for responses made below the application: a request aiohttp's
    parser refused, a connection turned away."""
    headers = {**SECURITY_HEADERS, "Server": SERVER}
    if config.server.tls_cert or config.server.public_url.startswith("https://"):
        headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    return headers
