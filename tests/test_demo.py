"""`dvdgan demo`: the explorer's HTTP API on a tiny checkpoint, its errors, and the page itself in a
real headless browser (Debian's chromium; the browser test is skipped only where none is installed)."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY
from dvdgan.checkpoint import save_checkpoint
from dvdgan.cli import main
from dvdgan.config import apply_overrides, get_preset
from dvdgan.demo import make_server
from dvdgan.models.prediction import build_generator
from dvdgan.video_io import legible_scale

T, R = 4, 16  # the TINY model


def _checkpoint(root: Path, *extra: str) -> Path:
    cfg = apply_overrides(get_preset("shapes"), TINY + list(extra))
    g = build_generator(cfg.model)
    return save_checkpoint(root, 1, {"generator": g, "generator_ema": g}, {}, cfg.to_dict())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = _checkpoint(tmp_path_factory.mktemp("demo"))
    srv = make_server(ckpt, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=60) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


def get_json(server, path: str) -> tuple[int, dict]:
    status, body, ctype = get(server, path)
    assert ctype.startswith("application/json")
    return status, json.loads(body)


def gif(server, url: str) -> Image.Image:
    status, body, ctype = get(server, url)
    assert status == 200 and ctype == "image/gif"
    return Image.open(io.BytesIO(body))


def test_info_and_page(server):
    status, info = get_json(server, "/api/info")
    assert status == 200
    assert info["classes"][:2] == ["square-rightward", "square-leftward"] and len(info["classes"]) == 6
    assert (info["frames"], info["resolution"]) == (T, R)
    status, page, ctype = get(server, "/")
    assert status == 200 and ctype.startswith("text/html") and b"/api/generate" in page


def test_generate_one_row_per_class_same_z_per_column(server):
    status, result = get_json(server, "/api/generate?classes=1,triangle-rightward&n=3&truncation=0.5&seed=4")
    assert status == 200, result
    assert [row["label"] for row in result["rows"]] == ["square-leftward", "triangle-rightward"]
    assert all(len(row["videos"]) == 3 for row in result["rows"]) and "truncation 0.5" in result["caption"]
    im = gif(server, result["rows"][1]["videos"][0]["url"])
    assert im.n_frames <= T and im.size == (R * legible_scale(R),) * 2  # legible: 16 px -> 128 px
    # the same request gives the same pixels; no classes = every class
    _, again = get_json(server, "/api/generate?classes=1,2&n=3&truncation=0.5&seed=4")
    a, b = (gif(server, r["rows"][0]["videos"][2]["url"]) for r in (result, again))
    assert a.tobytes() == b.tobytes()
    _, every = get_json(server, "/api/generate?n=1")
    assert len(every["rows"]) == 6


def test_interpolations(server):
    status, result = get_json(server, "/api/interpolate?mode=class&a=0&b=cross-leftward&steps=3&seed=1")
    assert status == 200, result
    (row,) = result["rows"]
    assert [v["label"] for v in row["videos"]] == ["0", "0.5", "1"] and "cross-leftward" in result["caption"]
    status, result = get_json(server, "/api/interpolate?mode=latent&a=2&steps=4")
    assert status == 200 and len(result["rows"][0]["videos"]) == 4


@pytest.mark.parametrize("query, message", [
    ("/api/generate?n=0", "n must be in [1, 64]"),
    ("/api/generate?truncation=2", "truncation must be in [0, 1]"),
    ("/api/generate?truncation=nan", "truncation must be in [0, 1]"),
    ("/api/generate?seed=x", "seed must be an integer"),
    ("/api/generate?classes=hexagon", "unknown class"),
    ("/api/interpolate?steps=1", "steps must be in [2, 16]"),
    ("/api/interpolate?mode=sideways", "mode must be class or latent"),
])
def test_bad_parameters_are_400_with_one_message(server, query, message):
    status, body = get_json(server, query)
    assert status == 400 and message in body["error"]


def test_unknown_paths_are_404(server):
    assert get(server, "/media/v999999.gif")[0] == 404 and get(server, "/nothing")[0] == 404


def test_cli_refuses_prediction_checkpoints_and_busy_ports(tmp_path, capsys):
    fp = _checkpoint(tmp_path / "fp", "model.context_frames=2", "model.num_classes=1")
    assert main(["demo", "--checkpoint", str(fp), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dvdgan predict" in err
    ok = _checkpoint(tmp_path / "ok")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["demo", "--checkpoint", str(ok), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvdgan demo: error: cannot serve on 127.0.0.1:") and err.count("\n") == 1


@functools.lru_cache(maxsize=1)
def _browser() -> str | None:
    """A chromium that runs here (Ubuntu's chromium-browser may be a snap shim that does not)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is None:
            continue
        try:
            if subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0:
                return path
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(profile)},
                          check=True).stdout


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH (CI installs Debian's)")
def test_page_in_a_headless_browser(server, tmp_path):
    """Load the page with a class chosen, let it generate, and find the new videos in the DOM; the
    same for a class interpolation. The browser fetches /api/generate and the GIFs itself."""
    browser = _browser()
    dom = _dump_dom(browser, server.url + "?classes=4&n=2&seed=3&run=generate", tmp_path / "profile")
    results = re.search(r'<div id="results" data-done="1">(.*?)</section>', dom, re.S)
    assert results, dom[-2000:]
    videos = re.findall(r'<img class="video" src="(/media/v\d+\.gif)" alt="([^"]*)" data-cls="(\d+)"', results[1])
    assert len(videos) == 2 and {cls for _, _, cls in videos} == {"4"}, results[1]
    assert "cross-rightward" in results[1]  # the row label
    assert gif(server, videos[0][0]).size == (R * legible_scale(R),) * 2

    dom = _dump_dom(browser, server.url + "?run=interpolate&mode=class&a=0&b=5&steps=3", tmp_path / "profile")
    videos = re.findall(r'<img class="video" src="(/media/v\d+\.gif)" alt="([^"]*)"', dom)
    assert [alt for _, alt in videos] == ["0", "0.5", "1"], dom[-2000:]
    assert "class interpolation square-rightward -&gt; cross-leftward" in dom
