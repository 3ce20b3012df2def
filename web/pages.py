"""The HTML pages: the form, a job's progress, recent jobs.  They work without JavaScript;
with it (static files only, CSP ``script-src 'self'``) they talk to the API."""
from __future__ import annotations

import redis
from flask import Blueprint, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from shared.images import ImageError
from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams
from shared.workers import live_workers, model_status

from .api import PARAM_FIELDS, describe, get_job, list_page, submit_from_request
from .errors import ApiError, from_http, from_image_error
from .services import TOKEN_COOKIE, authorized, services, valid_token

bp = Blueprint("pages", __name__)


@bp.before_request
def require_login():
    if request.endpoint != "pages.login" and not authorized():
        return redirect(url_for("pages.login", next=request.full_path))


def catalog() -> dict:
    """What the form's script needs to show each model's defaults and presets."""
    return {m.name: {"title": m.title, "layers": list(m.layers), "presets": list(m.presets),
                     "defaults": {"layers": ",".join(f"{k}={v:g}" for k, v in m.default_layers.items()),
                                  "step": m.step, "max_loss": "none" if m.max_loss is None else m.max_loss,
                                  **{k: f.default for k, f in DreamParams.model_fields.items()
                                     if k not in ("model", "preset", "layers", "step", "max_loss")
                                     and f.default is not None}}}
            for m in MODELS.values()}


def loaded_models() -> tuple[dict[str, int], dict[str, int]] | tuple[None, None]:
    """Model -> ready workers holding it, and those of them with native bf16;
    (None, None) when Redis cannot tell (the form still works)."""
    try:
        workers = live_workers(services().redis)
    except (redis.RedisError, ApiError):
        return None, None
    return model_status(workers), model_status(workers, bf16_only=True)


def form_page(values: dict | None = None, error: ApiError | None = None, status: int = 200):
    values = values or {}
    loaded, bf16 = loaded_models()
    if values.get("model") in MODELS:
        model = values["model"]
    elif loaded and not loaded.get(DEFAULT_MODEL):
        # Preselect a model some worker can run (offline, inception_v3 has no weights).
        model = next((name for name in MODELS if loaded.get(name)), DEFAULT_MODEL)
    else:
        model = DEFAULT_MODEL
    html = render_template("index.html", models=MODELS, catalog=catalog(), model=model, values=values, error=error,
                           loaded=loaded, bf16=bf16)
    return html, status


@bp.get("/")
def index():
    return form_page()


@bp.post("/submit")
def submit():
    """The form without JavaScript: redirect to the job, or show the form again with the error."""
    try:
        job = submit_from_request()
    except (ApiError, ImageError, HTTPException) as exc:
        err = (from_image_error(exc) if isinstance(exc, ImageError)
               else from_http(exc) if isinstance(exc, HTTPException) else exc)
        if err.status >= 500:
            raise err
        try:
            values = {k: request.form.get(k, "") for k in PARAM_FIELDS}
        except HTTPException:  # the body was too large to read
            values = {}
        return form_page(values, err, err.status)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    job = get_job(job_id)
    return render_template("job.html", job=describe(job))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    job = get_job(job_id)
    services().state.cancel(job.id)  # a finished job stays as it is; the page shows its state
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/jobs")
def jobs_page():
    jobs, next_cursor = list_page(request.args.get("limit"), request.args.get("cursor"))
    return render_template("jobs.html", jobs=[describe(j) for j in jobs], next_cursor=next_cursor)


def _safe_next(target: str | None) -> str:
    # Only paths on this site: never an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """When API tokens are set, the pages need one too: kept in an HttpOnly, same-site cookie."""
    target = _safe_next(request.values.get("next"))
    if not services().settings.api_tokens:
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", next=target, error=None)
    token = request.form.get("token", "")
    if not valid_token(token):
        return render_template("login.html", next=target, error="That token is not valid."), 401
    response = make_response(redirect(target, 303))
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="Strict", secure=request.is_secure,
                        max_age=30 * 24 * 3600)
    return response
