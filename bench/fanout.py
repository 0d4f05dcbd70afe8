"""Shared images through a slow uplink: fan-out against plain parallel pulls (issue 17).

    python -m bench.fanout --hosts 2,4,8 --megabytes 64 --rate 20

For each N, N booted Debian hosts (tests/lab/booted.py) get real dockerd; the first also runs the
real registry, reached only through a rate-limited proxy (tests/lab/uplink.py) standing for the
lab's internet link. The shipped playbooks/images.yml then brings one digest-pinned image of
incompressible data to every host, with ``images_fanout`` off (every host pulls, at most
images_pull_concurrency = N at once) and on (one pull, then LAN transfers), alternating, after the
image was removed from every host. Measured: wall time of the run, bytes through the uplink
(the proxy's count), layer downloads in the registry's access log. JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from tabulate import tabulate

from bench.common import HERE, save
from provision.engine import ApplyOptions, run_playbook
from provision.inventory import load_inventory
from tests.lab.booted import BootedLab, require_lab_tools, write_inventory, write_known_hosts
from tests.lab.images import Upstream, prepare_upstream
from tests.lab.uplink import Uplink

IMAGES_YML = os.path.join(os.path.dirname(HERE), "playbooks", "images.yml")
MODES = {"parallel pulls": False, "fan-out": True}


def one_run(
    upstream: Upstream, uplink: Uplink, hosts: list[Any], workdir: str, fanout: bool
) -> dict[str, Any]:
    for host in hosts:
        upstream.drop(host)
    ref = f"{uplink.endpoint}/lab/fan@{upstream.digest}"
    opts = ApplyOptions(
        known_hosts=(os.path.join(workdir, "known_hosts"),),
        forks=len(hosts),
        extra_vars={
            "shared_images": [ref],
            "images_fanout": fanout,
            "images_pull_concurrency": len(hosts),
        },
    )
    inventory = load_inventory(os.path.join(workdir, "inventory.ini"))
    uplink.reset()
    gets = upstream.blob_gets()
    started = time.monotonic()
    result = run_playbook(inventory, IMAGES_YML, opts)
    wall = time.monotonic() - started
    after = upstream.blob_gets()
    held = [
        h.exec(f"docker image inspect --format '{{{{.Id}}}}' {upstream.image_id}", check=False)
        for h in hosts
    ]
    return {
        "wall_s": round(wall, 2),
        "uplink_bytes": uplink.down,
        "uplink_x_image": round(uplink.down / upstream.layer_bytes, 2),
        "layer_downloads": sum(after.get(d, 0) - gets.get(d, 0) for d in upstream.layers),
        "all_ok": result.exit_code == 0
        and all(d.stdout.strip() == upstream.image_id for d in held),
    }


def bench_n(n: int, megabytes: int, rate: float, repeat: int) -> dict[str, Any]:
    lab = BootedLab()
    try:
        hosts = lab.start(n, prefix="bfan")
        upstream = prepare_upstream(hosts, megabytes)
        workdir = str(lab.workdir)
        write_inventory(hosts, lab.workdir / "inventory.ini")
        write_known_hosts(hosts, lab.workdir / "known_hosts")
        host, port = upstream.registry.rsplit(":", 1)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        with Uplink((host, int(port)), rate) as uplink:
            for _ in range(repeat):
                for mode, fanout in MODES.items():
                    runs[mode].append(one_run(upstream, uplink, hosts, workdir, fanout))
        out: dict[str, Any] = {
            "hosts": n,
            "image_bytes": upstream.layer_bytes,
            "uplink_rate": rate,
            "modes": {},
        }
        for mode, samples in runs.items():
            out["modes"][mode] = {
                "wall_s": statistics.median(s["wall_s"] for s in samples),
                "uplink_x_image": max(s["uplink_x_image"] for s in samples),
                "layer_downloads": max(s["layer_downloads"] for s in samples),
                "all_ok": all(s["all_ok"] for s in samples),
                "samples": samples,
            }
        par, fan = out["modes"]["parallel pulls"], out["modes"]["fan-out"]
        out["speedup"] = round(par["wall_s"] / fan["wall_s"], 2)
        return out
    finally:
        lab.close()


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for mode, m in r["modes"].items():
            rows.append(
                [
                    r["hosts"],
                    mode,
                    f"{m['wall_s']:.1f}",
                    f"{m['uplink_x_image']:.2f}x",
                    m["layer_downloads"],
                    "yes" if m["all_ok"] else "NO",
                    f"{r['speedup']:.1f}x" if mode == "fan-out" else "",
                ]
            )
    headers = ["N", "mode", "wall s", "uplink bytes", "layer GETs", "all ok", "speed-up"]
    return tabulate(rows, headers=headers, disable_numparse=True, tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="2,4,8", help="comma-separated host counts")
    ap.add_argument("--megabytes", type=int, default=64, help="image payload in MB")
    ap.add_argument("--rate", type=float, default=20, help="uplink MB/s (default 20)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    require_lab_tools()
    results = []
    for n in [int(x) for x in args.hosts.split(",")]:
        results.append(bench_n(n, args.megabytes, args.rate * 1e6, args.repeat))
        print(table(results[-1:]), flush=True)
    print(table(results))
    for r in results:
        save(r, args.out, f"fanout-{r['hosts']}")
    print(json.dumps({"targets": targets(results)}, indent=2))
    return 0


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets: uplink bytes 1x the image for every N; >= 3x faster at N = 8."""
    out = []
    for r in results:
        fan = r["modes"]["fan-out"]
        ok = fan["layer_downloads"] == 1 and fan["uplink_x_image"] < 1.1
        out.append(f"{'met' if ok else 'MISSED'}: N={r['hosts']} uplink {fan['uplink_x_image']}x")
        if r["hosts"] == 8:
            ok = r["speedup"] >= 3
            out.append(f"{'met' if ok else 'MISSED'}: N=8 speed-up {r['speedup']}x >= 3x")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
