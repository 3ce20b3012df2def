"""The Flask front end: forms, the JSON API; never imports Keras.

Production: ``gunicorn -c python:web.gunicorn_conf 'web:create_app()'`` (gevent: SSE streams
and ``Prefer: wait`` hold a greenlet, not a thread); development: ``dreamq web``.
"""
from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from shared.settings import Settings, get_settings

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class StrictJSONProvider(DefaultJSONProvider):
    """Every JSON response is strict: NaN or Infinity is a bug to log (a 500), never a body that
    JSON.parse and most parsers refuse."""

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def create_app(settings: Settings | None = None, *, celery=None, redis_client=None, resolver=None) -> Flask:
    from . import api, errors, hosts, limits, metrics, ops, pages
    from .services import Services

    settings = settings or get_settings()
    app = Flask(__name__)
    # Debug (the Werkzeug debugger runs code) only through `dreamq web --debug`, never from
    # FLASK_DEBUG in a production environment.
    app.debug = False
    # Werkzeug answers 413 for bodies over this without reading them.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    # Werkzeug's multipart limits, explicit so that each 413 names the one hit (web/forms.py).
    app.config["MAX_FORM_PARTS"] = settings.max_form_parts
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_form_memory_size
    app.json = StrictJSONProvider(app)
    app.json.sort_keys = False
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    # resolver: how webhook hosts are looked up (host, port) -> addresses; tests pass their own.
    from shared import hooks

    hooks.install(settings)  # metrics, result cache, webhooks and DREAMQ_PLUGINS hear the web's transitions
    app.extensions["dreamq"] = Services(settings, celery=celery, redis_client=redis_client, resolver=resolver)

    limits.init_app(app, settings, redis_client)
    errors.register(app)
    hosts.init_app(app, settings.allowed_hosts)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(pages.bp)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # Jobs and pages are per-token: no shared or browser cache keeps them.  Responses that set
        # their own policy (results and previews: private; static files; event streams) keep it.
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
