import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "dreamq" / "samples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (NASA, public domain), 512x512 RGB."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def small_photo(photo) -> np.ndarray:
    """The photo at 216x288: just above the seed's minimum for 3 octaves of mixed4..7."""
    return np.asarray(Image.fromarray(photo).resize((288, 216), Image.LANCZOS))


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory) -> Path:
    """InceptionV3 with dreamq's fixed-seed random weights, saved as an ordinary weights file."""
    from worker.models import load_model

    path = tmp_path_factory.mktemp("weights") / "inception_v3_random.weights.h5"
    load_model("inception_v3", "random").network.save_weights(str(path))
    return path
