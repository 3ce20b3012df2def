"""No Docker engine runs here: check that docker-compose.yml says what operators rely on."""
import yaml

from .conftest import ROOT


def test_compose_services_volumes_and_gpu_reservation():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"redis", "web", "worker", "flower"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["web"]["command"][0] == "gunicorn"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["flower"]["profiles"] == ["flower"]
    # The store is one shared volume for web and workers.
    assert "store:/data" in services["web"]["volumes"] and "store:/data" in services["worker"]["volumes"]
    assert services["worker"]["environment"]["DREAMQ_REDIS_URL"] == services["web"]["environment"]["DREAMQ_REDIS_URL"]
    assert (ROOT / "Dockerfile").exists()
