"""``dvdgan demo``: a local web page to explore a synthesis checkpoint (:mod:`dvdgan.demo`).

    dvdgan demo --checkpoint runs/shapes                 # then open http://127.0.0.1:8000/
    dvdgan demo --checkpoint runs/shapes --port 0        # any free port (printed)

Pick classes, truncation, seed and the number of videos, and watch them; interpolate between two
classes (one z) or two latents (one class). Standard library only; nothing leaves the machine
unless ``--host`` opens it to the network.
"""

from __future__ import annotations

import argparse
import sys

from dvdgan.commands.common import add_common_arguments, checked_checkpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory / model.safetensors / run dir")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--raw", action="store_true", help="the trained generator instead of its EMA")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    add_common_arguments(p, progress=False)


def run(args: argparse.Namespace) -> int:
    from dvdgan.errors import DvdganError

    if not 0 <= args.port <= 65535:
        raise DvdganError(f"--port must be in [0, 65535], got {args.port}")
    checked_checkpoint(args.checkpoint, raw=args.raw)  # before the model is built
    from dvdgan.demo import make_server

    server = make_server(args.checkpoint, args.host, args.port, device=args.device, ema=not args.raw,
                         verbose=args.verbose)
    print(f"dvdgan explorer: {server.url}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
