"""The README's memory table: for every paper preset, the estimated peak memory of one training
step per replica (dvdgan.memory, fake tensors, CUDA's 512-byte blocks, Adam's foreach
temporaries, DDP's persistent gradient buckets) as a line in the per-replica batch, and the
largest per-replica batch that fits 24, 40, 80 and 141 GB, as the preset is configured and with
train.bf16 + train.activation_checkpointing. Nothing is allocated.

    OMP_NUM_THREADS=1 python benchmarks/memory_table.py --out benchmarks/memory.json
    python benchmarks/memory_table.py --markdown benchmarks/memory.json     # the README's table
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dvdgan.config import get_preset
from dvdgan.memory import DEFAULT_FRAGMENTATION, DEFAULT_OVERHEAD, GB, batch_line, largest_batch

PRESETS = ["kinetics600-12x64", "kinetics600-12x128", "ucf101-16x128", "bair-fp-64", "kinetics600-fp-64",
           "kinetics600-12x256", "kinetics600-48x64", "kinetics600-48x128"]
DEVICES_GB = [24, 40, 80, 141]


def markdown(path: str) -> str:
    d = json.loads(Path(path).read_text())
    head = ("| preset | weights, gradients, Adam, EMA (GB) | activations / video (GB) | "
            + " | ".join(f"{gb} GB" for gb in d["devices_gb"]) + " |")
    lines = [head, "|" + "---|" * (3 + len(d["devices_gb"]))]
    for name in PRESETS:
        row = d["presets"].get(name)
        if row is None:
            continue
        modes = [row["configured"], row.get("bf16_checkpointing", row["configured"])]
        per_video = [max(pv for _, pv in m["phases_fixed_per_video_bytes"].values()) / GB for m in modes]
        own = "checkpointing" if row["activation_checkpointing"] else "fp32"
        cells = [f"`{name}` ({own})", f"{modes[0]['state_bytes'] / GB:.1f}",
                 f"{per_video[0]:.2f} / {per_video[1]:.2f}"]
        cells += [f"{modes[0]['largest_batch'][str(gb)]} / {modes[1]['largest_batch'][str(gb)]}"
                  for gb in d["devices_gb"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", metavar="JSON", help="print the README table of a results file and exit")
    ap.add_argument("--out", default="benchmarks/memory.json")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--replicas", type=int, default=8)
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"torch": torch.__version__, "python": platform.python_version(), "replicas": args.replicas,
                   "overhead_bytes": DEFAULT_OVERHEAD, "fragmentation": DEFAULT_FRAGMENTATION,
                   "devices_gb": DEVICES_GB})
    rows = result.setdefault("presets", {})
    for name in args.presets.split(","):
        cfg = get_preset(name)
        t = cfg.train
        modes = {"configured": {}}
        if not (t.bf16 and t.activation_checkpointing):
            modes["bf16_checkpointing"] = {"bf16": True, "checkpointing": True}
        row = {"bf16": t.bf16, "activation_checkpointing": t.activation_checkpointing}
        for mode, kw in modes.items():
            t0 = time.perf_counter()
            line = batch_line(cfg, replicas=args.replicas, **kw)
            row[mode] = {
                "phases_fixed_per_video_bytes": line["phases"],
                "peak_bytes": {str(b): e["peak_bytes"] for b, e in line["estimates"].items()},
                "state_bytes": next(iter(line["estimates"].values()))["state_bytes"],
                "largest_batch": {str(gb): largest_batch(cfg, gb * GB, line=line, verify=False)["largest"]
                                  for gb in DEVICES_GB},
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(name, mode, row[mode]["largest_batch"], row[mode]["seconds"], "s", flush=True)
        rows[name] = row
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
