"""The HTML pages: the form, a job's progress, recent jobs.  They work without JavaScript;
with it (static files only, CSP ``script-src 'self'``) they use the pages' own JSON and image
routes here, which take the login cookie (the API takes only the bearer header)."""
from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import redis
from flask import (
    Blueprint,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from shared.images import ImageError
from shared.job import Job, frames_done, has_frames
from shared.kinds import DEFAULT_KIND, KINDS
from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams, form_value
from shared.store import StoreError
from shared.workers import live_workers, model_status

from . import api
from .auth import (
    authenticate,
    bearer_token,
    check_login_allowed,
    cookie_secure,
    cookie_token,
    is_valid_token,
    record_login_failure,
    safe_next,
    same_origin,
    tokens_configured,
)
from .errors import ApiError, from_http, from_image_error
from .files import input_response, result_media_type
from .forms import FORM_FIELDS
from .lookup import get_job, list_page, public_job
from .services import TOKEN_COOKIE, services
from .submit import submit_from_request

bp = Blueprint("pages", __name__)
OPEN_PAGES = ("pages.login", "pages.logout")


@bp.before_request
def refuse_cross_site_posts():
    # The cookie is SameSite=Strict already; this also covers no-token installs and older browsers.
    if request.method == "POST" and not same_origin():
        raise ApiError(403, "cross_site", "cross-site form posts are refused")


@bp.before_request
def require_login():
    # The pages take the cookie set by /login (or a bearer header); the API takes the header only.
    if request.endpoint not in OPEN_PAGES and not authenticate(bearer_token() or cookie_token()):
        return redirect(url_for("pages.login", next=safe_next(request.full_path.rstrip("?"))))


@bp.app_context_processor
def login_state() -> dict:
    return {"show_logout": tokens_configured() and bool(cookie_token())}


def page_links(data: dict) -> dict:
    """A job as the pages' scripts see it: links to the pages' own (cookie) routes, not the API's."""
    base = f"/jobs/{data['id']}"
    links = data["links"]
    data["links"] = {"self": f"{base}/status.json",
                     "result": f"{base}/result" if links.get("result") else None,
                     "preview": f"{base}/preview" if links.get("preview") else None,
                     "cancel": f"{base}/cancel", "events": None}
    if "frame" in links:
        data["links"]["frame"] = links["frame"] and base + links["frame"][len(f"/api/v1/jobs/{data['id']}"):]
    return data


def kind_fields() -> list[dict]:
    """The form fields of the parameters that DreamParams lacks, from each kind's schema:
    name, label (the Field's title), the kinds that take it, default, and input type, bounds and choices."""
    out: dict[str, dict] = {}
    for kind in KINDS.values():
        schema = kind.params.model_json_schema()
        for name, field in kind.params.model_fields.items():
            if name in DreamParams.model_fields:
                continue
            if name in out:
                out[name]["kinds"].append(kind.name)
                continue
            prop = schema["properties"].get(name, {})
            branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
            branch = {**prop, **(branches[0] if branches else {})}
            entry = {"name": name, "label": field.title or name.replace("_", " ").capitalize(),
                     "kinds": [kind.name], "default": field.default if field.default is not None else "",
                     "choices": branch.get("enum"), "type": "text"}
            if branch.get("type") in ("integer", "number"):
                entry["type"] = "number"
                entry["step"] = "1" if branch["type"] == "integer" else "any"
                for bound, attr in (("minimum", "min"), ("exclusiveMinimum", "min"), ("maximum", "max"),
                                    ("exclusiveMaximum", "max")):
                    if bound in branch:
                        entry[attr] = branch[bound]
            out[name] = entry
    return list(out.values())


def kinds_catalog() -> dict:
    """What the form's script needs to know of each kind: which fields it takes, whether it takes a guide."""
    fields = kind_fields()
    base = DreamParams.model_fields
    return {k.name: {"title": k.title, "guide": k.takes_guide,
                     "fields": [f["name"] for f in fields if k.name in f["kinds"]],
                     # Its own defaults of the dream parameters (a zoom frame: fewer octaves and steps).
                     "defaults": {name: f.default for name, f in k.params.model_fields.items()
                                  if name in base and f.default is not None and f.default != base[name].default}}
            for k in KINDS.values()}


def again_values(job: Job) -> dict[str, str]:
    """The form's values that repeat ``job``: its kind and every stored parameter the form has."""
    values = {name: form_value(name, value) for name, value in job.params.items()
              if name in FORM_FIELDS and (value is not None or name == "max_loss")}
    return {**values, "kind": job.kind}


def preset_summary(values: dict) -> str:
    """What a preset changes, in a few words (the gallery's text card)."""
    parts = [f"{name.replace('_', ' ')} {form_value(name, v)}" for name, v in values.items()]
    return "; ".join(parts) or "the model's defaults"


def preset_gallery() -> dict[str, list[dict]]:
    """Each model's presets as gallery cards; a card's thumbnail only where its file exists
    (they are rendered separately, so some may be missing: looked at on each render)."""
    folder = Path(current_app.static_folder) / "presets"
    return {m.name: [{"name": p, "summary": preset_summary(values),
                      "thumb": (url_for("static", filename=f"presets/{m.name}-{p}.jpg")
                                if (folder / f"{m.name}-{p}.jpg").is_file() else None)}
                     for p, values in m.presets.items()]
            for m in MODELS.values()}


def catalog() -> dict:
    """What the form's script needs to show each model's defaults and presets."""
    return {m.name: {"title": m.title, "layers": list(m.layers), "presets": list(m.presets),
                     # What each preset sets, as form values: placeholders, and the fields a choice clears.
                     "preset_params": {p: {k: form_value(k, v) for k, v in values.items()}
                                       for p, values in m.presets.items()},
                     # Its own defaults for some kinds (a zoom frame of vgg16_hed dreams harder).
                     "kind_defaults": {k: {n: form_value(n, v) for n, v in d.items()}
                                       for k, d in m.kind_defaults.items()},
                     "defaults": {"layers": ",".join(f"{k}={v:g}" for k, v in m.default_layers.items()),
                                  "step": m.step, "max_loss": "none" if m.max_loss is None else m.max_loss,
                                  **{k: f.default for k, f in DreamParams.model_fields.items()
                                     if k not in ("model", "preset", "layers", "step", "max_loss")
                                     and f.default is not None},
                                  # The layer a guide image pulls toward when none is named.
                                  **({"guide_layer": m.guide_layer} if getattr(m, "guide_layer", "") else {})}}
            for m in MODELS.values()}


def loaded_models() -> tuple[dict[str, int], dict[str, int]] | tuple[None, None]:
    """Model -> ready workers holding it, and those of them with native bf16;
    (None, None) when Redis cannot tell (the form still works)."""
    try:
        workers = live_workers(services().redis)
    except (redis.RedisError, ApiError):
        return None, None
    return model_status(workers), model_status(workers, bf16_only=True)


def form_page(values: dict | None = None, error: ApiError | None = None, status: int = 200,
              again: Job | None = None, notice: str = ""):
    """The form; ``again``: the job whose values fill it (Dream again), ``notice``: a line above it."""
    values = values or {}
    loaded, bf16 = loaded_models()
    if values.get("model") in MODELS:
        model = values["model"]
    elif loaded and not loaded.get(DEFAULT_MODEL):
        # Preselect a model some worker can run (offline, inception_v3 has no weights).
        model = next((name for name in MODELS if loaded.get(name)), DEFAULT_MODEL)
    else:
        model = DEFAULT_MODEL
    kind = values.get("kind") if values.get("kind") in KINDS else DEFAULT_KIND
    html = render_template("index.html", models=MODELS, catalog=catalog(), model=model, values=values, error=error,
                           loaded=loaded, bf16=bf16, kinds=kinds_catalog(), kind=kind, kind_fields=kind_fields(),
                           guide_layer="guide_layer" in DreamParams.model_fields,
                           gallery=preset_gallery(), again=again, notice=notice,
                           again_guide=again is not None and KINDS[kind].takes_guide)
    return html, status


@bp.get("/")
def index():
    """The form; ``?again=<job id>``: filled with that job's parameters (a job the caller may see)."""
    job_id = request.args.get("again")
    if not job_id:
        return form_page()
    try:
        job = get_job(job_id)
    except ApiError:  # missing, or another token's: the same answer, never which
        return form_page(notice="There is no job of yours with that id to dream again; here is a plain form.")
    return form_page(again_values(job), again=job)


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
            values = {k: request.form.get(k, "") for k in FORM_FIELDS}
        except HTTPException:  # the body was too large to read
            values = {}
        return form_page(values, err, err.status)
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.post("/submit.json")
def submit_json():
    """The form's script: the API's answer, for the cookie (errors are JSON: the path ends in .json)."""
    job = submit_from_request()
    return jsonify(page_links(public_job(job))), 202


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    job = get_job(job_id)
    kind = KINDS.get(job.kind)
    view = {"result_tag": "img", "result_type": "image/png", "video": False, "frames_done": 0, "frames": None,
            "has_input": False, "has_guide": False}
    if kind is not None:
        media_type = result_media_type(kind, job.params)
        view.update(result_type=media_type, result_tag="video" if media_type.startswith("video/") else "img",
                    video=has_frames(kind), frames_done=frames_done(job), frames=job.params.get("frames"))
        # What was uploaded, shown beside the dream; a job canceled while queued has no files left.
        view["has_input"] = store_has(job.files_id, kind.file("input"))
        view["has_guide"] = kind.takes_guide and store_has(job.files_id, kind.file("guide"))
        view["size"] = picture_size(job.files_id, kind.file("input")) if view["has_input"] else None
        if view["size"] and media_type in EVEN_SIDED:  # the encoder crops an odd side (worker/video.py)
            view["result_size"] = tuple(side - side % 2 for side in view["size"])
    view.setdefault("result_size", view.get("size"))
    return render_template("job.html", job=page_links(public_job(job)), view=view,
                           result_label=view["result_type"].split("/")[-1].upper(),
                           params=param_facts(job, kind, view["has_guide"]), timing=timing_facts(job),
                           video_facts=video_words(job.params, view["result_size"]) if view["video"] else "",
                           cached=cached_from(job), now=time.time())


def store_has(job_id: str, name: str) -> bool:
    """Whether the job's store folder has ``name``; an unreachable store only hides the picture."""
    store = services().store
    exists = getattr(store, "exists", None)
    try:
        return exists(job_id, name) if exists is not None else store.get(job_id, name) is not None
    except StoreError:
        return False


EVEN_SIDED = ("video/mp4", "video/webm")  # yuv420p: an odd width or height loses its last column or row
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


def picture_size(job_id: str, name: str) -> tuple[int, int] | None:
    """(width, height) of a stored PNG, from its header alone (the record does not keep the size);
    None when it cannot be read."""
    try:
        with services().store.open(job_id, name) or io.BytesIO() as f:
            head = f.read(24)
    except (StoreError, OSError):
        return None
    if len(head) < 24 or not head.startswith(PNG_HEAD) or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """Seconds in words: 0.4 s, 12.3 s, 3 min 5 s, 1 h 2 min (job.js says them the same way)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60)} s"
    return f"{minutes // 60} h {minutes % 60} min"


def param_facts(job: Job, kind, has_guide: bool) -> list[tuple[str, str, str]]:
    """(id, label, value in words) of the parameters the job ran with, for the page's list."""
    p = job.params
    asked, ran = p.get("precision"), job.metrics.get("precision") or p.get("precision")
    model = MODELS.get(p.get("model"))
    guide_layer = p.get("guide_layer") or getattr(model, "guide_layer", "") or "the model's guide layer"
    layers = ", ".join(f"{name}={number(w)}" for name, w in (p.get("layers") or {}).items())
    facts = [("model", "Model", str(p.get("model")) + (f" (preset {p['preset']})" if p.get("preset") else "")),
             ("layers", "Layers", f"not used: the guide pulls at {guide_layer}" if has_guide else layers),
             ("step", "Step", number(p.get("step"))),
             ("octaves", "Octaves", f"{p.get('octaves')}" + (f", each {number(p.get('octave_scale'))}x the last"
                                                              if (p.get("octaves") or 0) > 1 else "")),
             ("iterations", "Iterations", f"{p.get('iterations')} per octave"),
             # What really ran (the worker's measure), and what was asked when that differs (auto, bf16).
             ("precision", "Precision", str(ran) + (f" (asked {asked})" if asked != ran else "")),
             ("seed", "Seed", str(p.get("seed"))),
             ("guide", "Guide", f"yes, pulling at {guide_layer}" if has_guide else "none")]
    optional = (("max_loss", "Stop above loss"), ("jitter", "Jitter (px)"), ("tile_size", "Tile size (px)"),
                ("max_side", "Longest side (px)"))
    facts += [(name, label, number(p[name])) for name, label in optional if p.get(name)]
    if kind is not None:  # the kind's own parameters (a video's frames, fps...), labelled by its declaration
        facts += [(name, field.title or name.replace("_", " ").capitalize(),
                   number(p[name]))
                  for name, field in kind.params.model_fields.items()
                  if name not in DreamParams.model_fields and p.get(name) is not None]
    return facts


def timing_facts(job: Job) -> list[tuple[str, str, str]]:
    """(id, label, words) of how long the job waited and ran: measured once finished, so far before
    (job.js keeps these going)."""
    now, m = time.time(), job.metrics
    if m.get("cached"):
        return [("answered", "Answered", "at once, from the result cache")]
    queued = m.get("queue_s")
    if queued is None:
        queued = (job.started_at or job.finished_at or now) - (job.enqueued_at or job.created_at)
    out = [("queued", "Queued for" if job.status != "queued" else "Queued for (so far)", duration(max(0.0, queued)))]
    if job.started_at is not None:
        ran = m.get("run_s")
        if ran is None:
            ran = (job.finished_at or now) - job.started_at
        words = duration(max(0.0, ran)) + (f" (dreaming {duration(m['dream_s'])})" if m.get("dream_s") else "")
        out.append(("ran", "Ran for" if job.finished else "Running for (so far)", words))
    return out


def video_words(params: dict, size: tuple[int, int] | None) -> str:
    """A video's frames, rate, length and size in words."""
    frames, fps = params.get("frames"), params.get("fps")
    if not frames or not fps:
        return ""
    words = f"{frames} frames at {fps} fps: {duration(frames / fps)}"
    return words + (f", {size[0]}×{size[1]} px" if size else "")


def cached_from(job: Job) -> dict | None:
    """A result-cache hit: {"id": the earlier identical job, when the caller may see it}; None otherwise."""
    if not (job.metrics.get("cached") or job.files_from):
        return None
    return {"id": job.metrics.get("cached_from")}


@bp.get("/jobs/<job_id>/status.json")
def job_status(job_id: str):
    return jsonify(page_links(public_job(get_job(job_id))))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str):
    return api.job_result(job_id)  # the same checks (owner included), private caching and byte ranges


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id: str):
    return api.job_preview(job_id)


@bp.get("/jobs/<job_id>/frames/<n>")
def job_frame(job_id: str, n: str):
    return api.job_frame(job_id, n)


@bp.get("/jobs/<job_id>/input")
def job_input(job_id: str):
    return input_response(get_job(job_id), "input")


@bp.get("/jobs/<job_id>/guide")
def job_guide(job_id: str):
    return input_response(get_job(job_id), "guide")


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    job = get_job(job_id)
    services().state.cancel(job.id)  # a finished job stays as it is; the page shows its state
    return redirect(url_for("pages.job_page", job_id=job.id), 303)


@bp.get("/jobs")
def jobs_page():
    jobs, next_cursor = list_page(request.args.get("limit"), request.args.get("cursor"))
    return render_template("jobs.html", jobs=[page_links(public_job(j)) for j in jobs], next_cursor=next_cursor)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """When tokens are set, the pages need one too: kept in an HttpOnly, same-site cookie."""
    target = safe_next(request.values.get("next"), url_for("pages.index"))
    if not tokens_configured():
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", next=target, error=None)
    check_login_allowed()  # 429 once this address has failed too often
    token = request.form.get("token", "")
    if not is_valid_token(token):
        record_login_failure()
        return render_template("login.html", next=target, error="That token is not valid."), 401
    response = make_response(redirect(target, 303))
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="Strict", secure=cookie_secure(),
                        max_age=30 * 24 * 3600)
    return response


@bp.post("/logout")
def logout():
    response = make_response(redirect(url_for("pages.login") if tokens_configured() else url_for("pages.index"), 303))
    response.delete_cookie(TOKEN_COOKIE, httponly=True, samesite="Strict", secure=cookie_secure())
    return response
