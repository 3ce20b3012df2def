"""A kind is one declaration (shared/kinds/), one handler (worker/kinds/<name>.py) and one
registry line: the generic web, CLI and OpenAPI code names no kind and picks up a new one."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from shared.kinds import DEFAULT_KIND, KINDS

ROOT = Path(__file__).resolve().parents[2]
# The generic code: everything that serves every kind.  The kinds' own modules are not in it.
GENERIC = [*sorted((ROOT / "web").glob("*.py")), ROOT / "dreamq" / "client.py", ROOT / "dreamq" / "cli.py",
           ROOT / "shared" / "job.py", ROOT / "shared" / "jobs.py", ROOT / "worker" / "worker.py"]


def _string_constants(path: Path) -> list[str]:
    """Every string literal of a module except docstrings (examples in words are fine there)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_generic_code_names_no_kind():
    # "image" is also the photo's form field, so only the other kinds' names can be looked for.
    names = [name for name in KINDS if name != DEFAULT_KIND]
    assert names, "a second kind is what this test looks for"
    found = {}
    for path in GENERIC:
        for text in _string_constants(path):
            for name in names:
                if f"kind={name}" in text or f"--kind {name}" in text or text == name:
                    found.setdefault(str(path.relative_to(ROOT)), []).append(text[:80])
    for template in [*(ROOT / "web" / "templates").glob("*.html"), *(ROOT / "web" / "static").glob("*.js")]:
        code = "\n".join(line for line in template.read_text().splitlines() if not line.lstrip().startswith("//"))
        for name in names:
            if f'"{name}"' in code or f"'{name}'" in code:
                found.setdefault(str(template.relative_to(ROOT)), []).append(name)
    assert not found, f"generic code names a kind: {found}"


def test_every_kind_has_its_handler_module():
    from worker.kinds import HANDLERS

    assert set(HANDLERS) == set(KINDS)
    for name, run in HANDLERS.items():
        assert run.__module__ == f"worker.kinds.{name}"


# A third kind, declared the way shared/kinds/image.py declares its own, registered before anything
# generic is imported: the form, the CLI and the OpenAPI document must offer it and its parameter.
NEW_KIND = r'''
import json, sys
from pydantic import Field
from shared.params import DreamParams, validate
import shared.kinds as kinds
from shared.kinds.kind import Kind

class SketchParams(DreamParams):
    strokes: int = Field(7, ge=1, le=99, title="Strokes drawn", description="How many strokes the sketch has.")

kinds.KINDS["sketch"] = Kind(
    name="sketch", title="A pencil sketch", summary="a sketch of the dream",
    params=SketchParams, parse=lambda data: validate(SketchParams, data),
    files={"input": "input.png", "preview": "preview.png", "result": "result.svg"},
    media_type="image/svg+xml", result_types={"image/svg+xml": ".svg"},
    progress=lambda params: {"fraction": 0.0})

from click.testing import CliRunner
from dreamq.client import submit
import tempfile
from shared.settings import Settings
from web import create_app
from web.openapi import SPEC as spec

# No Redis behind it: the form still renders (it says it cannot tell which models are loaded).
app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tempfile.mkdtemp()))
page = app.test_client().get("/", headers={"Host": "localhost"}).get_data(as_text=True)
helptext = CliRunner().invoke(submit, ["--help"]).output
print(json.dumps({"page": page, "spec": spec, "help": helptext}))
'''


def test_a_new_kind_appears_in_the_form_the_cli_and_openapi():
    proc = subprocess.run([sys.executable, "-c", NEW_KIND], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    page, spec, helptext = out["page"], out["spec"], out["help"]
    assert "A pencil sketch" in page and 'name="strokes"' in page and "Strokes drawn" in page
    form = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "sketch" in form["properties"]["kind"]["enum"]
    assert "a sketch of the dream" in form["properties"]["kind"]["description"]
    assert form["properties"]["strokes"]["description"].startswith("kind=sketch only.")
    assert "SketchParams" in spec["components"]["schemas"]
    result = spec["paths"]["/api/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
    assert "image/svg+xml" in result
    assert "--strokes" in helptext and "How many strokes" in helptext and "sketch" in helptext
