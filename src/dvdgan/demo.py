"""The explorer page of ``dvdgan demo``: a small standard-library HTTP server around one
synthesis checkpoint. One HTML page (no external files) lets a person pick classes, truncation,
seed and count, and watch the generated videos; and interpolate between two classes (one z,
Figure 16) or two latents (one class, Figure 15).

    from dvdgan.demo import make_server
    server = make_server("runs/shapes", port=0)      # port 0: any free port
    print(server.url); server.serve_forever()

HTTP API (JSON answers; every video is an animated GIF kept in memory and served under /media/):

    GET /                       the page
    GET /api/info               {"name", "classes", "frames", "resolution", "fps", "max_n", "max_steps"}
    GET /api/generate?classes=0,2&n=4&truncation=0.8&seed=0
                                {"caption", "rows": [{"label", "videos": [{"url", "class", "label"}]}]}
    GET /api/interpolate?mode=class&a=0&b=3&steps=6&truncation=1&seed=0   (mode=latent uses a only)
                                {"caption", "rows": [{"label", "videos": [...]}]}
    GET /media/<id>.gif         one video

Bad parameters get HTTP 400 and {"error": "..."}. Generation is serialised by a lock (one
generator, any number of browser tabs).
"""

from __future__ import annotations

import collections
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import torch

from dvdgan.errors import DvdganError

MAX_N = 64  # videos per request
MAX_STEPS = 16  # interpolation steps per request
MEDIA_KEPT = 1024  # GIFs held in memory (oldest dropped first)


class Explorer:
    """The model side of the page: a loaded generator, its class names, and the GIFs made so far."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", ema: bool = True):
        from dvdgan import sampling
        from dvdgan.video_io import DEFAULT_FPS, legible_scale

        self.generator, self.cfg = sampling.load_generator(checkpoint, ema=ema, device=device)
        if self.cfg.model.context_frames:
            raise DvdganError(f"{checkpoint} is a prediction (DVD-GAN-FP) checkpoint; the explorer shows synthesis "
                              "models (use `dvdgan predict` for this one)")
        self.checkpoint = str(checkpoint)
        self.class_names = sampling.class_names_for(self.cfg)
        self.fps = DEFAULT_FPS
        self.scale = legible_scale(self.cfg.model.resolution)
        self.lock = threading.Lock()
        self.media: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._next = 0

    def info(self) -> dict:
        m = self.cfg.model
        return {"name": self.cfg.name, "checkpoint": self.checkpoint, "classes": self.class_names,
                "frames": m.frames, "resolution": m.resolution, "fps": self.fps, "max_n": MAX_N,
                "max_steps": MAX_STEPS}

    # -- requests ------------------------------------------------------------------------

    def generate(self, q: dict[str, str]) -> dict:
        from dvdgan import sampling

        names = self.class_names
        n = _number(q, "n", 4, 1, MAX_N, int)
        truncation = _number(q, "truncation", 1.0, 0.0, 1.0)
        seed = _number(q, "seed", 0, 0, 2**31 - 1, int)
        spec = q.get("classes", "").strip()
        classes = (sampling.resolve_classes([spec], names, len(names)) if spec
                   else list(range(len(names))))
        # n videos per class, one row per class; column i has the same z (z{i}) in every row
        with self.lock:
            rows = []
            for c in classes:
                videos, _ = sampling.sample(self.generator, self.cfg, [c], n, truncation=truncation, seed=seed)
                rows.append({"label": names[c],
                             "videos": [self._video(v, f"z{i}", c) for i, v in enumerate(videos)]})
        return {"caption": f"{self.cfg.name}: truncation {truncation:g}, seed {seed}, {n} per class", "rows": rows}

    def interpolate(self, q: dict[str, str]) -> dict:
        from dvdgan import sampling

        names = self.class_names
        mode = q.get("mode", "class")
        if mode not in ("class", "latent"):
            raise DvdganError(f"mode must be class or latent, got {mode!r}")
        steps = _number(q, "steps", 6, 2, MAX_STEPS, int)
        truncation = _number(q, "truncation", 1.0, 0.0, 1.0)
        seed = _number(q, "seed", 0, 0, 2**31 - 1, int)
        (a,) = sampling.resolve_classes([q.get("a", "0")], names, len(names))
        src = (self.generator, self.cfg)
        with self.lock:
            if mode == "class":
                (b,) = sampling.resolve_classes([q.get("b", str(min(1, len(names) - 1)))], names, len(names))
                videos = sampling.interpolate_class(src, a, b, steps=steps, truncation=truncation, seed=seed)
                caption = f"class interpolation {names[a]} -> {names[b]}, one z (seed {seed})"
            else:
                videos = sampling.interpolate_latent(src, a, steps=steps, truncation=truncation, seed=seed)
                caption = f"latent interpolation within {names[a]}, two z (seed {seed})"
            weights = torch.linspace(0, 1, steps).tolist()
            row = [self._video(v, f"{w:.2g}", a) for v, w in zip(videos, weights)]
        return {"caption": caption + f", truncation {truncation:g}", "rows": [{"label": mode, "videos": row}]}

    def _video(self, video: torch.Tensor, label: str, cls: int) -> dict:
        from dvdgan.video_io import gif_bytes

        key = f"v{self._next:06d}"
        self._next += 1
        self.media[key] = gif_bytes(video, fps=self.fps, scale=self.scale)
        while len(self.media) > MEDIA_KEPT:
            self.media.popitem(last=False)
        return {"url": f"/media/{key}.gif", "label": label, "class": cls}


def _number(q: dict[str, str], key: str, default, low, high, kind: type = float):
    """Query parameter ``key`` as ``kind`` (int or float) in [low, high]; ``default`` when absent."""
    raw = q.get(key, "").strip()
    try:
        v = kind(raw) if raw else default
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise DvdganError(f"{key} must be {what}, got {raw!r}") from None
    if not low <= v <= high:  # also refuses NaN
        bounds = f"[{low:g}, {high:g}]" if kind is float else f"[{low}, {high}]"
        raise DvdganError(f"{key} must be in {bounds}, got {raw or v}")
    return v


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if ctype.startswith("application/json") else "max-age=3600")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        ex = self.server.explorer
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._json(HTTPStatus.OK, ex.info())
            elif url.path == "/api/generate":
                self._json(HTTPStatus.OK, ex.generate(q))
            elif url.path == "/api/interpolate":
                self._json(HTTPStatus.OK, ex.interpolate(q))
            elif url.path.startswith("/media/") and url.path.endswith(".gif"):
                data = ex.media.get(url.path[len("/media/"):-len(".gif")])
                if data is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no such video (generate again)"})
                else:
                    self._send(HTTPStatus.OK, data, "image/gif")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})
        except DvdganError as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away


class ExplorerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, explorer: Explorer, host: str, port: int, verbose: bool = False):
        self.explorer, self.verbose = explorer, verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def make_server(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
                ema: bool = True, verbose: bool = False) -> ExplorerServer:
    """Load the checkpoint and bind ``host:port`` (0 = a free port); ``.serve_forever()`` serves."""
    explorer = Explorer(checkpoint, device=device, ema=ema)
    try:
        return ExplorerServer(explorer, host, port, verbose)
    except OSError as e:
        raise DvdganError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dvdgan explorer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
header { padding: 10px 16px; background: #1d1d1d; border-bottom: 1px solid #333; }
header h1 { font-size: 18px; margin: 0; display: inline; } header span { color: #999; margin-left: 12px; }
main { display: flex; gap: 16px; padding: 16px; align-items: flex-start; }
form { background: #1d1d1d; padding: 12px; border-radius: 6px; min-width: 230px; margin-bottom: 12px; }
fieldset { border: 1px solid #333; margin: 0 0 12px; } legend { color: #aaa; }
label { display: block; margin: 6px 0; } input[type=number] { width: 80px; }
select { width: 100%; background: #222; color: #eee; } button { margin-top: 8px; padding: 6px 12px; }
#classes { height: 9em; } #status { color: #e99; min-height: 1.4em; }
.row { display: flex; align-items: center; gap: 6px; margin: 4px 0; }
.row .label { width: 150px; text-align: right; color: #ccc; padding-right: 6px; }
figure { margin: 0; text-align: center; } figcaption { font-size: 11px; color: #999; }
img.video { image-rendering: pixelated; background: #000; display: block; }
#caption { color: #aaa; margin-bottom: 8px; }
</style></head>
<body>
<header><h1>dvdgan explorer</h1><span id="model"></span></header>
<main>
<div>
<form id="gen">
<fieldset><legend>Samples</legend>
<label>classes (none selected = all)<select id="classes" multiple></select></label>
<label>truncation <output id="tout">1</output>
<input id="truncation" type="range" min="0" max="1" step="0.05" value="1"></label>
<label>seed <input id="seed" type="number" min="0" value="0"></label>
<label>videos per class <input id="n" type="number" min="1" value="4"></label>
<button id="go" type="submit">Generate</button>
</fieldset></form>
<form id="interp">
<fieldset><legend>Interpolation</legend>
<label>mode <select id="mode"><option value="class">between two classes (one z)</option>
<option value="latent">between two z (one class)</option></select></label>
<label>from class <select id="a"></select></label>
<label id="blabel">to class <select id="b"></select></label>
<label>steps <input id="steps" type="number" min="2" value="6"></label>
<button id="interpolate" type="submit">Interpolate</button>
</fieldset></form>
<div id="status"></div>
</div>
<section><div id="caption"></div><div id="results"></div></section>
</main>
<script>
const $ = (id) => document.getElementById(id);
let info = null;
function fill(select, names) {
  select.innerHTML = "";
  names.forEach((name, i) => { const o = document.createElement("option"); o.value = i; o.textContent = name;
                               select.appendChild(o); });
}
function common() {
  return "truncation=" + $("truncation").value + "&seed=" + encodeURIComponent($("seed").value || 0);
}
async function call(url) {
  $("status").textContent = "generating...";
  const r = await fetch(url); const body = await r.json();
  if (!r.ok) { $("status").textContent = body.error || r.statusText; return null; }
  $("status").textContent = ""; return body;
}
function show(result) {
  if (!result) return;
  $("caption").textContent = result.caption;
  const out = $("results"); out.innerHTML = "";
  result.rows.forEach((row) => {
    const div = document.createElement("div"); div.className = "row";
    const lab = document.createElement("div"); lab.className = "label"; lab.textContent = row.label;
    div.appendChild(lab);
    row.videos.forEach((v) => {
      const fig = document.createElement("figure"); const img = document.createElement("img");
      img.className = "video"; img.src = v.url; img.alt = v.label; img.dataset.cls = v.class;
      fig.appendChild(img);
      const cap = document.createElement("figcaption"); cap.textContent = v.label; fig.appendChild(cap);
      div.appendChild(fig);
    });
    out.appendChild(div);
  });
  out.dataset.done = String(Number(out.dataset.done || 0) + 1);
}
async function generate(ev) {
  if (ev) ev.preventDefault();
  const picked = Array.from($("classes").selectedOptions).map((o) => o.value).join(",");
  show(await call("/api/generate?classes=" + picked + "&n=" + encodeURIComponent($("n").value) + "&" + common()));
}
async function interpolate(ev) {
  if (ev) ev.preventDefault();
  show(await call("/api/interpolate?mode=" + $("mode").value + "&a=" + $("a").value + "&b=" + $("b").value +
                  "&steps=" + encodeURIComponent($("steps").value) + "&" + common()));
}
async function start() {
  info = await (await fetch("/api/info")).json();
  $("model").textContent = info.name + " - " + info.frames + " frames at " + info.resolution + "x" +
    info.resolution + " - " + info.classes.length + " classes - " + info.checkpoint;
  fill($("classes"), info.classes); fill($("a"), info.classes); fill($("b"), info.classes);
  $("b").value = Math.min(1, info.classes.length - 1);
  $("n").max = info.max_n; $("steps").max = info.max_steps;
  // the address may preset the form: ?classes=0,2&seed=3&truncation=0.5&n=2&run=generate|interpolate
  const q = new URLSearchParams(location.search);
  if (q.has("classes")) { const want = q.get("classes").split(",");
    Array.from($("classes").options).forEach((o) => { o.selected = want.includes(o.value); }); }
  ["seed", "n", "truncation", "steps", "mode", "a", "b"].forEach((k) => { if (q.has(k)) $(k).value = q.get(k); });
  $("tout").textContent = $("truncation").value;
  if (q.get("run") === "interpolate") await interpolate(); else await generate();
}
$("truncation").addEventListener("input", () => { $("tout").textContent = $("truncation").value; });
$("mode").addEventListener("change", () => { $("blabel").style.display = $("mode").value === "class" ? "" : "none"; });
$("gen").addEventListener("submit", generate);
$("interp").addEventListener("submit", interpolate);
start();
</script>
</body></html>
"""
