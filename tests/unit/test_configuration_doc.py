"""docs/CONFIGURATION.md is generated from the settings, and every setting says what it means."""
from pathlib import Path

from dreamq.configuration import markdown
from shared.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"


def test_configuration_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/CONFIGURATION.md is stale: regenerate it with "
        "`.venv/bin/python -m dreamq.configuration > docs/CONFIGURATION.md`")


def test_every_setting_has_a_description():
    missing = [name for name, info in Settings.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"Settings fields without description= (shared/settings.py): {missing}"


def test_every_setting_is_in_the_doc():
    text = DOC.read_text(encoding="utf-8")
    prefix = Settings.model_config["env_prefix"]
    absent = [name for name in Settings.model_fields if f"`{prefix}{name.upper()}`" not in text]
    assert not absent, absent
