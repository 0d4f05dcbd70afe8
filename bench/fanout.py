"""Shared images through a slow uplink: fan-out against plain parallel pulls (issue 17).

    python -m bench.fanout --hosts 2,4,8 --megabytes 64 --rate 20 [--receivers 1,3,7]
        [--transports ssh,direct]

For each N, N booted Debian hosts (tests/lab/booted.py) get real dockerd; the first also runs the
real registry, reached only through a rate-limited proxy (tests/lab/uplink.py) standing for the
lab's internet link. The shipped playbooks/images.yml then brings one digest-pinned image of
incompressible data to every host, with ``images_fanout`` off (every host pulls, at most
images_pull_concurrency = N at once) and on (one pull, then LAN transfers; with --receivers, once
per number of receivers one ``docker save`` feeds, ``images_fanout_receivers``, and per
transport: ``ssh`` through the controller, ``direct`` host to host), alternating,
after the image was removed from every host. Measured: wall time of the run, bytes through the
uplink (the proxy's count), layer downloads in the registry's access log, and the bytes the
LAN transfers put through the controller (in once per transfer, out once per receiver, from the
receivers' results). JSON in bench/results/.
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
from provision import fanout as fanout_mod
from provision.engine import ApplyOptions, Event, run_playbook
from provision.inventory import load_inventory
from tests.lab.booted import BootedLab, require_lab_tools, write_inventory, write_known_hosts
from tests.lab.images import Upstream, prepare_upstream
from tests.lab.uplink import Uplink

IMAGES_YML = os.path.join(os.path.dirname(HERE), "playbooks", "images.yml")
PARALLEL = "parallel pulls"


def modes(receivers: list[int], transports: list[str]) -> dict[str, tuple[int, str] | None]:
    """Mode name -> (receivers per transfer, transport), None for fan-out off; the default k
    for each transport is "fan-out <transport>"."""
    out: dict[str, tuple[int, str] | None] = {PARALLEL: None}
    for transport in transports:
        default = fanout_mod.RECEIVERS[transport]
        out[f"fan-out {transport}"] = (default, transport)
        for k in receivers:
            if k != default:
                out[f"fan-out {transport} k={k}"] = (k, transport)
    return out


def controller_bytes(result: Any) -> int:
    """The LAN transfers' bytes through the controller: each transfer's stream in once, and
    out once per receiver (the receivers' results name who shared their stream)."""
    total, streams = 0, set[frozenset[str]]()
    for r in result.results:
        if r.task != "shared images":
            continue
        for item in r.data.get("results", []):
            if item.get("received") and item.get("transport") == "ssh":
                total += item["bytes"]
                group = frozenset([r.host, *item.get("stream_with", [])])
                if group not in streams:
                    streams.add(group)
                    total += item["bytes"]
    return total


class Phases:
    """When the run reached the image task, and when its hosts finished it (seconds from the
    start): the reads before it, the first host done (the pull), the last (the transfers)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.task_start: float | None = None
        self.done: list[float] = []

    def see(self, event: Event) -> None:
        if event.task != "shared images":
            return
        now = time.monotonic() - self.started
        if event.status == "start" and self.task_start is None:
            self.task_start = now
        elif event.status in ("ok", "changed", "failed"):
            self.done.append(now)

    def summary(self) -> dict[str, float | None]:
        first = min(self.done, default=None)
        return {
            "image_task_start_s": round(self.task_start or 0, 2),
            "first_host_done_s": round(first, 2) if first is not None else None,
            "last_host_done_s": round(max(self.done), 2) if self.done else None,
        }


def one_run(
    upstream: Upstream,
    uplink: Uplink,
    hosts: list[Any],
    workdir: str,
    mode: tuple[int, str] | None,
) -> dict[str, Any]:
    fanout = mode is not None
    receivers, transport = mode or (0, "ssh")
    for host in hosts:
        upstream.drop(host)
    ref = f"{uplink.endpoint}/lab/fan@{upstream.digest}"
    phases = Phases()
    opts = ApplyOptions(
        known_hosts=(os.path.join(workdir, "known_hosts"),),
        forks=len(hosts),
        extra_vars={
            "shared_images": [ref],
            "images_fanout": fanout,
            "images_fanout_transport": transport,
            "images_fanout_receivers": receivers,
            "images_pull_concurrency": len(hosts),
        },
        on_event=phases.see,
    )
    inventory = load_inventory(os.path.join(workdir, "inventory.ini"))
    uplink.reset()
    gets = upstream.blob_gets()
    started = phases.started = time.monotonic()
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
        "controller_x_image": round(controller_bytes(result) / upstream.layer_bytes, 2),
        **phases.summary(),
        "all_ok": result.exit_code == 0
        and all(d.stdout.strip() == upstream.image_id for d in held),
    }


def bench_n(
    n: int, megabytes: int, rate: float, repeat: int, receivers: list[int], transports: list[str]
) -> dict[str, Any]:
    lab = BootedLab()
    try:
        hosts = lab.start(n, prefix="bfan")
        upstream = prepare_upstream(hosts, megabytes)
        workdir = str(lab.workdir)
        write_inventory(hosts, lab.workdir / "inventory.ini")
        write_known_hosts(hosts, lab.workdir / "known_hosts")
        host, port = upstream.registry.rsplit(":", 1)
        kinds = modes(receivers, transports)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in kinds}
        with Uplink((host, int(port)), rate) as uplink:
            for _ in range(repeat):
                for mode, k in kinds.items():
                    runs[mode].append(one_run(upstream, uplink, hosts, workdir, k))
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
                "controller_x_image": max(s["controller_x_image"] for s in samples),
                "receivers": (kinds[mode] or (None, ""))[0],
                "transport": (kinds[mode] or (None, ""))[1],
                "all_ok": all(s["all_ok"] for s in samples),
                "phases_s": [
                    statistics.median(s[key] or 0 for s in samples)
                    for key in ("image_task_start_s", "first_host_done_s", "last_host_done_s")
                ],
                "samples": samples,
            }
        par = out["modes"][PARALLEL]
        for m in out["modes"].values():
            m["speedup"] = round(par["wall_s"] / m["wall_s"], 2)
        out["speedup"] = max(m["speedup"] for name, m in out["modes"].items() if name != PARALLEL)
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
                    mode if " k=" in mode or mode == PARALLEL else f"{mode} k={m['receivers']}",
                    f"{m['wall_s']:.1f}",
                    f"{m['uplink_x_image']:.2f}x",
                    m["layer_downloads"],
                    f"{m.get('controller_x_image', 0):.2f}x" if mode != PARALLEL else "",
                    "yes" if m["all_ok"] else "NO",
                    f"{m['speedup']:.1f}x" if mode != PARALLEL else "",
                    " / ".join(f"{x:.1f}" for x in m.get("phases_s", [])),
                ]
            )
    headers = ["N", "mode", "wall s", "uplink", "layer GETs", "controller", "all ok", "speed-up"]
    headers.append("image task: start / first done / last done (s)")
    return tabulate(rows, headers=headers, disable_numparse=True, tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="2,4,8", help="comma-separated host counts")
    ap.add_argument("--megabytes", type=int, default=64, help="image payload in MB")
    ap.add_argument("--rate", type=float, default=20, help="uplink MB/s (default 20)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--receivers",
        default="",
        help="comma-separated receivers per transfer to compare (default: provision's only)",
    )
    ap.add_argument(
        "--transports", default="ssh,direct", help="fan-out transports to compare (ssh, direct)"
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    require_lab_tools()
    results = []
    receivers = [int(x) for x in args.receivers.split(",") if x]
    transports = [x for x in args.transports.split(",") if x]
    for n in [int(x) for x in args.hosts.split(",")]:
        results.append(
            bench_n(n, args.megabytes, args.rate * 1e6, args.repeat, receivers, transports)
        )
        print(table(results[-1:]), flush=True)
    print(table(results))
    for r in results:
        save(r, args.out, f"fanout-{r['hosts']}" + ("-receivers" if receivers else ""))
    print(json.dumps({"targets": targets(results)}, indent=2))
    return 0


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets: uplink bytes 1x the image for every N; >= 3x faster at N = 8."""
    out = []
    for r in results:
        for name, fan in r["modes"].items():
            if name == PARALLEL:
                continue
            ok = fan["layer_downloads"] == 1 and fan["uplink_x_image"] < 1.1
            verdict = "met" if ok else "MISSED"
            out.append(f"{verdict}: N={r['hosts']} {name} uplink {fan['uplink_x_image']}x")
            if r["hosts"] == 8:
                verdict = "met" if fan["speedup"] >= 3 else "MISSED"
                out.append(f"{verdict}: N=8 {name} speed-up {fan['speedup']}x >= 3x")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
