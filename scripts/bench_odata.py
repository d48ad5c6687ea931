"""OData API throughput: odata-sync against the SAP CAP peer, side by side, in one run.

Loads the benchmark fixture (10,000 jobs x 3 tasks, from the shared ``gen_data.py``) into both servers, then runs
``wrk -t1 -c16`` on the five request shapes of the bench README, alternating CAP / odata-sync (A B A B ...), and
prints requests/s for both and the ratio odata-sync / CAP per shape (target: >= 1.5x).

Usage (from the repository root)::

    python scripts/bench_odata.py                       # 5 shapes, 2 rounds x 10 s per server per shape
    python scripts/bench_odata.py --duration 3 --rounds 1 --shapes 1,3
    python scripts/bench_odata.py --keep                # leave both servers running afterwards

Needs ``wrk`` (Debian: ``apt-get install wrk``), ``node``/``npm`` for the CAP peer (installed by the shared
``setup.sh`` into ``--cap-dir``, default ``~/.cache/bench-cap``, outside the repository; the first install takes
a few minutes), and the project's own environment to run ``python -m odata_sync serve``.
Only standard-library Python is used. Figures are ratios measured in one run on a shared machine; never compare
absolute numbers across runs. Exits non-zero on errors only, not on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import REPO, BenchError, Server, free_port, log, stop_on_sigterm

DEFAULT_BENCH_DIR = Path(os.environ.get("ODATA_BENCH_DIR", "/work/shared/bench"))
TARGET = 1.5

SHAPES = {
    1: "Jobs?$top=100",
    2: "Jobs?$filter=Destination eq 'dst3' and contains(JobName,'1')&$select=JobName,Created&$orderby=Created desc&$top=50",
    3: "Jobs('Job01234')",
    4: "Jobs?$expand=Tasks&$top=20",
    5: "$metadata",
}


def encode_path(path: str) -> str:
    """Percent-encode a relative OData URL for wrk: spaces as %20, quotes as %27; keep OData's delimiters."""
    return urllib.parse.quote(path, safe="/$&=?(),*:;")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------------------------------
# servers


class CapPeer:
    """The SAP CAP peer, started by the shared setup.sh (which forks node and prints its pid)."""

    def __init__(self, setup_sh: Path, cap_dir: Path, port: int) -> None:
        self.setup_sh, self.cap_dir, self.port = setup_sh, cap_dir, port
        self.root = f"http://127.0.0.1:{port}/odata/v4/api/"
        self.pid: int | None = None
        self.pgid: int | None = None

    def start(self) -> None:
        first = not (self.cap_dir / "node_modules" / "@sap" / "cds").is_dir()
        log(
            f"starting SAP CAP peer in {self.cap_dir} on port {self.port}"
            + (" (first time: npm install, ~3 min)" if first else "")
        )
        t0 = time.monotonic()
        # Own session, so Ctrl-C reaches only this script, which then stops the whole group (setup.sh, npm, node).
        proc = subprocess.Popen(
            ["bash", str(self.setup_sh), str(self.cap_dir), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.pgid = proc.pid
        out, _ = proc.communicate()
        pid_file = self.cap_dir / "pid"
        with contextlib.suppress(OSError, ValueError):
            self.pid = int(pid_file.read_text().strip())
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if proc.returncode != 0 or not last.isdigit():
            raise BenchError(
                f"CAP peer did not start (setup.sh exit {proc.returncode}).\nsetup.sh output:\n{out}\n"
                f"{self.cap_dir / 'serve.log'}:\n{tail(self.cap_dir / 'serve.log')}"
            )
        self.pid = int(last)
        log(f"  CAP peer ready in {time.monotonic() - t0:.1f} s (pid {self.pid}): {self.root}")

    def stop(self) -> None:
        if self.pgid:  # setup.sh's process group: npm while installing, node once started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGTERM)
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)
        if self.pid:
            for _ in range(50):
                try:
                    os.kill(self.pid, 0)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)
        self.pid = self.pgid = None


# --------------------------------------------------------------------------------------------------------------------
# loading the fixture into odata-sync


class Loader:
    """POSTs through a pool of threads, one keep-alive http.client connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        return conn

    def post(self, path: str, body: dict) -> None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "x-cdata-authtoken": self.token}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
                text = resp.read().decode(errors="replace")
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # The keep-alive race (server closed an idle connection): the request was not processed; retry once.
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise BenchError(f"POST {path} {data.decode()}\n  -> connection error: {e!r}") from e
                continue
            if resp.will_close:
                conn.close()
                self.local.conn = None
            if resp.status != 201:
                raise BenchError(f"POST {path} {data.decode()}\n  -> HTTP {resp.status} {resp.reason}: {text[:2000]}")
            return

    def post_all(self, path: str, bodies: list[dict], workers: int) -> None:
        pool = ThreadPoolExecutor(workers)
        try:
            for _ in pool.map(lambda b: self.post(path, b), bodies):
                pass
        except BaseException:  # first failure or Ctrl-C: drop the queued POSTs instead of sending them all
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def load_fixture(srv: Server, tmp: Path, jobs: list[dict], workers: int) -> None:
    loader = Loader(srv.port, srv.token)
    names = sorted({j["Source"] for j in jobs} | {j["Destination"] for j in jobs})
    conns = [{"Name": n, "ProviderName": "SQLite", "ConnectionString": f"Database={tmp / (n + '.db')}"} for n in names]
    bodies = []
    for j in jobs:
        body = {k: j[k] for k in ("JobName", "Source", "Destination", "Scheduled", "ScheduledCron", "BatchSize")}
        for i, t in enumerate(sorted(j["Tasks"], key=lambda t: t["TaskId"]), 1):
            body[f"Query#{i}"] = t["Query"]
        bodies.append(body)
    log(
        f"loading the fixture into odata-sync: {len(conns)} connections, {len(bodies)} jobs "
        f"x {len(jobs[0]['Tasks'])} tasks, {workers} concurrent connections"
    )
    t0 = time.monotonic()
    loader.post_all("/api.rsc/Connections", conns, workers)
    t1 = time.monotonic()
    loader.post_all("/api.rsc/Jobs", bodies, workers)
    t2 = time.monotonic()
    log(
        f"  loaded in {t2 - t0:.1f} s (connections {t1 - t0:.2f} s; jobs {t2 - t1:.1f} s, "
        f"{len(bodies) / max(t2 - t1, 1e-9):.0f} POST/s)"
    )


# --------------------------------------------------------------------------------------------------------------------
# checking and measuring


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:  # connection refused, reset, timeout
        return 0, repr(e).encode()


def count_rows(body: bytes) -> tuple[int, int]:
    """(rows, expanded nested rows) of an OData JSON response; a single entity counts as one row."""
    doc = json.loads(body)
    rows = doc["value"] if isinstance(doc, dict) and isinstance(doc.get("value"), list) else [doc]
    nested = sum(len(v) for r in rows for v in r.values() if isinstance(v, list))
    return len(rows), nested


def check_shape(shape: int, servers: list[tuple[str, str, dict[str, str]]]) -> str | None:
    """GET the shape once on every server; returns an error text, or None. Prints a warning on differing row counts."""
    path = encode_path(SHAPES[shape])
    counts = {}
    for name, root, headers in servers:
        status, body = get(root + path, headers)
        if status != 200:
            return f"{name}: GET {root + path} -> HTTP {status}: {body[:1000].decode(errors='replace')}"
        if shape != 5:
            try:
                counts[name] = count_rows(body)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return f"{name}: GET {root + path} -> 200 but not OData JSON ({e!r}): {body[:500]!r}"
    if counts and len(set(counts.values())) > 1:
        log(f"  WARNING shape {shape}: the servers return different row counts (rows, expanded rows): {counts}")
    elif counts:
        log(
            f"  shape {shape}: both return {next(iter(counts.values()))[0]} rows"
            + (f" ({next(iter(counts.values()))[1]} expanded)" if shape == 4 else "")
        )
    return None


def run_wrk(url: str, duration: int, headers: dict[str, str]) -> tuple[float, int, int, str]:
    """Runs wrk once; returns (requests/s, total requests, non-2xx responses, socket-error text)."""
    cmd = ["wrk", "-t1", "-c16", f"-d{duration}s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = res.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if res.returncode != 0 or not m or not total:
        raise BenchError(f"wrk failed (exit {res.returncode}) on {url}:\n{out}\n{res.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:\s*(.*)", out)
    return float(m.group(1)), int(total.group(1)), int(non2xx.group(1)) if non2xx else 0, sock.group(1) if sock else ""


# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds per shape (default 2)")
    p.add_argument("--shapes", default="1,2,3,4,5", help="comma-separated shape numbers 1-5 (default all)")
    p.add_argument("--keep", action="store_true", help="leave both servers running at the end and print their URLs")
    p.add_argument(
        "--cap-dir",
        type=Path,
        default=Path.home() / ".cache" / "bench-cap",
        help="where the CAP peer is installed (reused between runs; default ~/.cache/bench-cap)",
    )
    p.add_argument(
        "--bench-dir",
        type=Path,
        default=DEFAULT_BENCH_DIR,
        help=f"the shared bench helpers (default {DEFAULT_BENCH_DIR}, or $ODATA_BENCH_DIR)",
    )
    p.add_argument("--cap-port", type=int, default=0, help="CAP port (default: a free port)")
    p.add_argument("--port", type=int, default=0, help="odata-sync port (default: a free port)")
    p.add_argument("--load-workers", type=int, default=8, help="concurrent connections while loading (default 8)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs odata-sync (default: this one)")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds to wait for odata-sync's ready line")
    a = p.parse_args(argv)
    try:
        a.shapes = sorted({int(s) for s in a.shapes.split(",") if s.strip()})
    except ValueError:
        p.error("--shapes takes comma-separated numbers, e.g. 1,3")
    if not a.shapes or any(s not in SHAPES for s in a.shapes):
        p.error("--shapes takes numbers from 1 to 5")
    if a.duration < 1 or a.rounds < 1:
        p.error("--duration and --rounds must be at least 1")
    a.cap_dir = a.cap_dir.expanduser().resolve()
    if a.cap_dir == REPO or REPO in a.cap_dir.parents:
        p.error("--cap-dir must be outside the repository")
    return a


def fmt_rate(r: float | None) -> str:
    return "—" if r is None else f"{r:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("wrk", "node", "npm", "curl") if shutil.which(tool) is None]
    if missing:
        hint = {
            "wrk": "apt-get install wrk",
            "node": "apt-get install nodejs npm",
            "npm": "apt-get install npm",
            "curl": "apt-get install curl",
        }
        log(
            "missing tools: "
            + ", ".join(missing)
            + ". Install them first, e.g.: "
            + "; ".join(hint[t] for t in missing)
        )
        return 2
    setup_sh, gen_data = args.bench_dir / "odata_peer" / "setup.sh", args.bench_dir / "odata_peer" / "gen_data.py"
    for f in (setup_sh, gen_data):
        if not f.is_file():
            log(f"not found: {f} (use --bench-dir)")
            return 2

    stop_on_sigterm()

    tmp = Path(tempfile.mkdtemp(prefix="bench-odata-"))
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    cap = CapPeer(setup_sh, args.cap_dir, args.cap_port or free_port())
    srv = Server(tmp / "data", token, port=args.port, python=args.python, log_path=tmp / "odata-sync.log",
                 start_timeout=args.start_timeout)
    keep = False
    errors: list[str] = []
    try:
        log(f"machine: nproc={os.cpu_count()}, usable CPUs={len(os.sched_getaffinity(0))}; temp dir {tmp}")
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(gen_data), str(tmp / "fixture")], check=True)
        jobs = json.loads((tmp / "fixture" / "jobs.json").read_text())
        log(f"fixture: {len(jobs)} jobs made in {time.monotonic() - t0:.1f} s")

        cap.start()
        log(f"  odata-sync ready in {srv.start():.1f} s (pid {srv.proc.pid}): {srv.root}")
        load_fixture(srv, tmp, jobs, args.load_workers)

        auth = {"x-cdata-authtoken": token}
        servers = [("CAP", cap.root, {}), ("odata-sync", srv.root, auth)]
        for name, root, headers in servers:
            status, body = get(root + "Jobs/$count", headers)
            if status != 200 or body.strip() != str(len(jobs)).encode():
                log(f"  WARNING {name}: GET {root}Jobs/$count -> HTTP {status}: {body[:300]!r} (expected {len(jobs)})")

        log(f"\nmeasuring: wrk -t1 -c16 -d{args.duration}s, {args.rounds} round(s) of CAP then odata-sync per shape")
        results: dict[int, dict[str, float | str | None]] = {}
        for shape in args.shapes:
            log(f"shape {shape}: {SHAPES[shape]}")
            err = check_shape(shape, servers)
            if err:
                log(f"  ERROR {err}")
                errors.append(f"shape {shape}: {err}")
                results[shape] = {"error": f"GET check failed on {err.split(':', 1)[0]}"}
                continue
            rates: dict[str, list[float]] = {"CAP": [], "odata-sync": []}
            bad: list[str] = []
            for rnd in range(1, args.rounds + 1):
                for name, root, headers in servers:
                    url = root + encode_path(SHAPES[shape])
                    rps, total, non2xx, sock = run_wrk(url, args.duration, headers)
                    note = f"  [{sock}]" if sock else ""
                    log(f"  round {rnd} {name:<10} {rps:>10,.1f} req/s  ({total} requests, {non2xx} non-2xx){note}")
                    if non2xx:
                        status, body = get(url, headers)
                        bad.append(
                            f"{name}: {non2xx} of {total} responses non-2xx; GET {url} now -> HTTP {status}: "
                            f"{body[:500].decode(errors='replace')}"
                        )
                    rates[name].append(rps)
            if bad:
                for b in bad:
                    log(f"  ERROR {b}")
                errors.extend(f"shape {shape}: {b}" for b in bad)
                results[shape] = {
                    "error": "non-2xx responses from " + ", ".join(sorted({b.split(":", 1)[0] for b in bad}))
                }
                continue
            c, o = (sum(rates[n]) / len(rates[n]) for n in ("CAP", "odata-sync"))
            results[shape] = {"cap": c, "odata": o}

        log("")
        log(f"{'shape':<6} {'request':<44} {'CAP req/s':>10} {'odata-sync':>11} {'ratio':>7}  target >= {TARGET}x")
        for shape, r in results.items():
            req = SHAPES[shape] if len(SHAPES[shape]) <= 44 else SHAPES[shape][:41] + "..."
            if "error" in r:
                log(f"{shape:<6} {req:<44} {'ERROR':>10} {'ERROR':>11} {'—':>7}  {r['error']}")
                continue
            ratio = r["odata"] / r["cap"] if r["cap"] else float("inf")
            verdict = "met" if ratio >= TARGET else "MISSED"
            log(f"{shape:<6} {req:<44} {fmt_rate(r['cap']):>10} {fmt_rate(r['odata']):>11} {ratio:>6.2f}x  {verdict}")
        log("")
        log(
            f"machine: nproc={os.cpu_count()}. Figures are from one run, both servers on this machine, alternating "
            f"A B ({args.rounds} x {args.duration} s each, mean req/s); compare the ratios, not absolute numbers."
        )
        log(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        if args.keep:
            keep = True
            log("\n--keep: servers left running")
            log(f"  CAP peer   {cap.root}  (pid {cap.pid}; stop: kill {cap.pid})")
            log(
                f"  odata-sync {srv.root}  (pid {srv.proc.pid}; stop: kill -- -{srv.proc.pid}); "
                f"header x-cdata-authtoken: {token}"
            )
            log(f"  temp dir {tmp} (odata-sync log: {srv.log_path})")
        return 1 if errors else 0
    except BenchError as e:
        log(f"\nERROR: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        log(f"\nERROR: {e}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted")
        return 130
    finally:
        if not keep:
            with contextlib.suppress(KeyboardInterrupt):
                srv.stop()
                cap.stop()
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
