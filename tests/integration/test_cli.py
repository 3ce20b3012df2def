"""`dreamq dream` as a person runs it: a real process, real files."""
import subprocess
import sys

import numpy as np
from PIL import Image

from shared.provenance import read

from ..conftest import ROOT


def _dreamq(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dreamq.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_dream_writes_a_png_the_size_of_the_input(tmp_path, photo):
    src = tmp_path / "in.jpg"
    Image.fromarray(photo[:180, :240]).save(src)
    out = tmp_path / "out.png"
    proc = _dreamq("dream", str(src), "-o", str(out), "--model", "vgg16_hed", "--iterations", "3", "--octaves", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = Image.open(out)
    assert result.format == "PNG" and result.size == (240, 180)
    assert np.abs(np.asarray(result, int) - photo[:180, :240].astype(int)).mean() > 2
    assert "octave 2/2" in proc.stderr  # the progress bar
    found = read(out)  # the parameters travel with the picture, as the service's do
    assert found["kind"] == "image" and found["model"] == "vgg16_hed" and len(found["weights"]) == 16
    assert found["params"]["iterations"] == 3 and found["params"]["octaves"] == 2


def test_invalid_values_exit_nonzero_with_one_clear_line(tmp_path):
    for args, needle in [(["--step", "abc"], "step"), (["--layers", "mixed99=1"], "mixed99"),
                         (["--octaves", "0"], "octaves"), (["--max-loss", "-1"], "max_loss")]:
        proc = _dreamq("dream", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr


def test_missing_and_unreadable_files(tmp_path):
    proc = _dreamq("dream", str(tmp_path / "nope.jpg"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>not a png</html>")
    proc = _dreamq("dream", str(bad))
    # One line naming the file and the formats it reads (shared/images.py words it).
    assert proc.returncode == 2 and "bad.png" in proc.stderr and all(f in proc.stderr for f in ("PNG", "JPEG", "TIFF"))


def test_missing_imagenet_weights_explain_the_fix(tmp_path, photo):
    src = tmp_path / "in.png"
    Image.fromarray(photo[:256, :256]).save(src)
    proc = _dreamq("dream", str(src), "--weights", str(tmp_path / "missing.h5"), "--iterations", "1")
    assert proc.returncode == 2
    assert "DREAMQ_INCEPTION_V3_WEIGHTS" in proc.stderr and "vgg16_hed" in proc.stderr
