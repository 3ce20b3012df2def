"""Which ``Host`` names the web answers: the defence against DNS rebinding.

A page on another site can make its own name resolve to 127.0.0.1 and then call a dreamq on
the visitor's machine as same-origin; the only trace of it is the ``Host`` header, which carries
the attacker's name.  So a request whose Host is a name not on the list is refused with a 400
before any view runs, as Django's ALLOWED_HOSTS and Jupyter do.

Allowed: ``localhost``, any IP address literal (a rebinding page can only send a name, never
an address), and the names in ``DREAMQ_ALLOWED_HOSTS`` (``example.com``; ``.example.com`` for it
and its subdomains; ``*`` for any).  Behind a proxy that forwards Host (or, with
DREAMQ_PROXY_HOPS, ``X-Forwarded-Host``), list the public name.  /healthz and /readyz answer any
Host: orchestrators probe them by address and they reveal nothing.
"""
from __future__ import annotations

import ipaddress

from flask import Flask, request
from werkzeug.sansio.utils import host_is_trusted

from .errors import ApiError

DEFAULT_NAMES = ("localhost",)
ANY_HOST_PATHS = frozenset({"/healthz", "/readyz"})


def _name(host: str) -> str:
    """The host of a ``host:port`` value, without brackets or port."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed(host: str, names: list[str]) -> bool:
    if not host:
        return False
    if "*" in names:
        return True
    return _is_address(_name(host)) or host_is_trusted(host, [*DEFAULT_NAMES, *names])


def init_app(app: Flask, names: list[str]) -> None:
    @app.before_request
    def check_host():
        if request.path in ANY_HOST_PATHS:
            return
        if not allowed(request.host, names):
            message = ("this server does not answer to that host name; add it to DREAMQ_ALLOWED_HOSTS "
                       "(comma-separated) if it is yours")
            raise ApiError(400, "bad_host", message, {"Host": message})
