"""Replication throughput: odata-sync against dlt and the raw bulk-copy baselines, side by side, in one run.

Makes the shared benchmark table ``orders`` (``make_source.py``, ``--rows`` rows) in a PostgreSQL source database and
a SQLite file, then runs every case as A B A B ... (each peer, then odata-sync; ``--rounds``), each run into a fresh,
empty destination, and prints per case the time of the peer and of odata-sync, the ratio, the peak RSS of each
process and whether the target of the performance issue is met:

============  =================================================  =========================================
case          peers                                              target for odata-sync
============  =================================================  =========================================
pgpg          raw binary COPY pipe (raw_pg_copy.sh);             >= 0.8x the raw COPY speed;
              dlt connectorx and dlt pyarrow                     >= 4x dlt's fastest backend (min time)
sqlite        raw sqlite3 (raw_sqlite.py); dlt pyarrow -> sqlite  >= 0.8x raw speed; >= 4x dlt
pg2sqlite     dlt connectorx and pyarrow, PostgreSQL -> SQLite   >= 4x dlt's fastest
sqlite2pg     dlt connectorx and pyarrow, SQLite -> PostgreSQL   >= 4x dlt's fastest
incr          dlt connectorx incremental merge after the 1%      odata-sync time <= 0.25x dlt's; deleted rows
              change (change_source.sql), PostgreSQL -> PG       must be gone (dlt misses them)
(rss)         --                                                 peak RSS <= 150 MB at 1M rows; with --rss-5m
                                                                 the 5M-row load within 10% of that
============  =================================================  =========================================

Speed ratio = peer time / odata-sync time (higher is better); for ``incr`` the time ratio odata-sync / dlt (lower
is better). Times are wall-clock times of whole processes, measured the same way for every side (interpreter start
and imports included); the column "strict" divides the peer's own in-process timer instead (it leaves out the
peer's start-up), so it is the harder figure. Peak RSS is "Maximum resident set size" of ``/usr/bin/time -v``.
Each incremental side starts from its own copy of the same source (``CREATE DATABASE ... TEMPLATE``): a first
(initial) run, then ``change_source.sql``, then the timed run.

odata-sync runs the way a user runs it: ``python -m odata_sync serve`` in a fresh data directory, the two
Connections and a Job with ``"Query#1": "REPLICATE [orders]"`` created over the HTTP API, the server stopped, then
``python -m odata_sync run JOB --data-dir DIR`` timed. With ``--via server`` the server keeps running and the job
runs there (``ExecuteJob`` waiting for the result, timed from request to answer; RSS is the server's peak), as a
scheduled job runs. While that command does not exist the odata-sync cells read
"odata-sync: not available yet" and the peers still run. Each odata-sync result is checked cheaply (row count equal
to the source's; for ``incr`` also the deleted ids gone, the updates and inserts present); a WARNING line says so.

Usage (from the repository root)::

    python scripts/bench_sync.py                          # all cases, 1,000,000 rows, 1 round (takes a while)
    python scripts/bench_sync.py --rows 100000            # quick run
    python scripts/bench_sync.py --cases pgpg,incr --rounds 2
    python scripts/bench_sync.py --rss-5m                 # adds the 5M-row RSS check (long)
    python scripts/bench_sync.py --keep                   # leave the databases and the temp dir for inspection

Needs ``psql``, ``/usr/bin/time`` (Debian package ``time``) and PostgreSQL at ``--pg`` (default
postgresql://postgres@127.0.0.1:5432, trust auth). dlt runs in its own virtualenv (``--dlt-venv``, default
``~/.cache/bench-dlt``, outside the repository), made by the shared ``setup_dlt.sh`` if missing; it is never
installed into the project's environment. The script creates its own databases ``bench_sync_<pid>_*`` and drops
only those at the end (also on Ctrl-C), and works in a temp dir it removes. Only standard-library Python is used.
Figures are ratios from one run on a shared, noisy machine; never compare absolute numbers across runs. Exits
non-zero on errors only, not on a missed target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import REPO, BenchError, Server, log, stop_group, stop_on_sigterm, tail_text

DEFAULT_BENCH_DIR = Path(os.environ.get("ODATA_BENCH_DIR", "/work/shared/bench"))
DEFAULT_DLT_VENV = Path.home() / ".cache" / "bench-dlt"
# The peers' own timers ("dlt ... full: N rows in S s", "raw ...: N rows in S s") and odata-sync run's summary
# ("... N rows read in S s ..."): the time inside the process, shown next to the wall-clock time.
OWN_TIME_RE = re.compile(r"(?::\s*|\s)([\d,]+) rows (?:read )?in ([\d.]+) s")
RSS_RE = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")
NOT_AVAILABLE = "odata-sync: not available yet"
RSS_LIMIT_MB = 150.0
RSS_5M_GROWTH = 1.10
JOB = "BenchOrders"


@dataclass(frozen=True)
class Peer:
    kind: str  # raw_pg | raw_sqlite | dlt
    backend: str | None = None

    @property
    def label(self) -> str:
        return {"raw_pg": "raw binary COPY", "raw_sqlite": "raw sqlite3"}.get(self.kind, f"dlt {self.backend}")


@dataclass(frozen=True)
class Case:
    title: str
    source: str  # pg | sqlite
    destination: str  # pg | sqlite
    peers: tuple[Peer, ...]
    raw_target: float | None = None  # speed ratio against the raw baseline
    dlt_target: float | None = None  # speed ratio against dlt's fastest; for incr the time ratio odata/dlt (max)


CASES: dict[str, Case] = {
    "pgpg": Case("PostgreSQL -> PostgreSQL full", "pg", "pg",
                 (Peer("raw_pg"), Peer("dlt", "connectorx"), Peer("dlt", "pyarrow")), 0.8, 4.0),
    "sqlite": Case("SQLite -> SQLite full", "sqlite", "sqlite", (Peer("raw_sqlite"), Peer("dlt", "pyarrow")), 0.8, 4.0),
    "pg2sqlite": Case("PostgreSQL -> SQLite full", "pg", "sqlite",
                      (Peer("dlt", "connectorx"), Peer("dlt", "pyarrow")), None, 4.0),
    "sqlite2pg": Case("SQLite -> PostgreSQL full", "sqlite", "pg",
                      (Peer("dlt", "connectorx"), Peer("dlt", "pyarrow")), None, 4.0),
    "incr": Case("incremental after the 1% change, PostgreSQL -> PostgreSQL", "pg", "pg",
                 (Peer("dlt", "connectorx"),), None, 0.25),
}


class RunFailed(Exception):
    """One measured run failed; the benchmark goes on with the next one."""


class NotAvailable(Exception):
    """``odata-sync run`` does not exist (yet)."""


def mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:,.0f} MB"


# --------------------------------------------------------------------------------------------------------------------
# databases


class PgServer:
    """The PostgreSQL server, driven with psql; remembers the databases it created so that only those are dropped."""

    def __init__(self, base_url: str, prefix: str) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("postgresql", "postgres"):
            raise BenchError(f"--pg must be a postgresql:// URL, got {base_url!r}")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 5432
        self.user = urllib.parse.unquote(u.username or "postgres")
        self.password = urllib.parse.unquote(u.password) if u.password else None
        self.prefix = prefix
        self.created: list[str] = []
        self.counter = 0

    def url(self, db: str, password_for_dlt: bool = False) -> str:
        """A libpq URL; dlt insists on a password, so it gets a dummy one under trust auth."""
        pw = self.password if self.password is not None else ("x" if password_for_dlt else None)
        auth = urllib.parse.quote(self.user, safe="") + (f":{urllib.parse.quote(pw, safe='')}" if pw else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{db}"

    def connstr(self, db: str) -> str:
        parts = [f"Server={self.host}", f"Port={self.port}", f"Database={db}", f"User={self.user}"]
        if self.password:
            parts.append(f"Password={self.password}")
        return ";".join(parts)

    def psql(self, db: str, *args: str) -> str:
        env = dict(os.environ, PGOPTIONS="--client-min-messages=warning")
        res = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", self.url(db), *args],
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
            raise BenchError(f"psql {db} {' '.join(args)} failed: {first}")
        return res.stdout.strip()

    def scalar(self, db: str, sql: str) -> str:
        return self.psql(db, "-c", sql)

    def new_name(self, what: str) -> str:
        self.counter += 1
        return f"{self.prefix}_{what}{self.counter}"

    def create(self, name: str, template: str | None = None) -> str:
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        self.created.append(name)
        self.psql("postgres", "-c", sql)
        return name

    def drop(self, name: str) -> None:
        if name in self.created:
            self.psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.created.remove(name)

    def drop_all(self) -> list[str]:
        failed = []
        for name in list(reversed(self.created)):
            try:
                self.drop(name)
            except BenchError:
                failed.append(name)
        return failed


@dataclass
class Endpoint:
    """One side of a replication: a PostgreSQL database or a SQLite file."""

    kind: str  # pg | sqlite
    name: str  # database name, or the file's path
    pg: PgServer | None = None

    @property
    def provider(self) -> str:
        return "PostgreSQL" if self.kind == "pg" else "SQLite"

    def url(self, password_for_dlt: bool = False) -> str:
        if self.kind == "pg":
            assert self.pg is not None
            return self.pg.url(self.name, password_for_dlt)
        return "sqlite:///" + str(Path(self.name).resolve())

    def connstr(self) -> str:
        if self.kind == "pg":
            assert self.pg is not None
            return self.pg.connstr(self.name)
        return f"Database={Path(self.name).resolve()}"

    def scalar(self, sql: str, schema: str | None = None) -> int:
        """An integer query result (a count); ``schema`` picks the PostgreSQL schema. Raises on a missing table."""
        if self.kind == "pg":
            assert self.pg is not None
            if schema:
                sql = f'SET search_path TO "{schema}"; ' + sql
            out = self.pg.scalar(self.name, sql).splitlines()
            return int(out[-1]) if out else 0
        if not Path(self.name).exists():
            raise BenchError(f"{self.name} does not exist")
        con = sqlite3.connect(f"file:{self.name}?mode=ro", uri=True)
        try:
            return int(con.execute(sql).fetchone()[0])
        except sqlite3.Error as e:
            raise BenchError(f"{self.name}: {e}") from e
        finally:
            con.close()

    def count(self, where: str = "", schema: str | None = None) -> int:
        return self.scalar("SELECT count(*) FROM orders" + (f" WHERE {where}" if where else ""), schema)

    def __str__(self) -> str:
        return f"{self.provider} {self.name}"


# --------------------------------------------------------------------------------------------------------------------
# measuring one process


@dataclass
class Run:
    """One measured process."""

    wall: float
    rss_kb: int | None
    own: float | None = None  # the process's own timer, where it prints one
    rows: int | None = None
    output: str = ""
    checks: list[str] = field(default_factory=list)  # warning lines from the correctness check


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            tmp: Path | None = None) -> Run:
    """Runs ``cmd`` under ``/usr/bin/time -v`` in its own process group (stopped on Ctrl-C); wall-clock time, peak
    RSS, output. Raises RunFailed on a non-zero exit."""
    fd, time_file = tempfile.mkstemp(prefix="time-", suffix=".txt", dir=tmp)
    os.close(fd)
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", time_file, *cmd], env=env, cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate()
        except BaseException:
            stop_group(proc, 10)
            raise
        wall = time.perf_counter() - t0
        m = RSS_RE.search(Path(time_file).read_text(errors="replace"))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(time_file)
    if proc.returncode != 0:
        raise RunFailed(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail_text(out)}")
    run = Run(wall, int(m.group(1)) if m else None, output=out)
    own = OWN_TIME_RE.findall(out)
    if own:
        run.rows, run.own = int(own[-1][0].replace(",", "")), float(own[-1][1])
    return run


# --------------------------------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class CaseResult:
    peers: dict[Peer, list[Run]] = field(default_factory=dict)
    peer_errors: dict[Peer, str] = field(default_factory=dict)
    odata: list[Run] = field(default_factory=list)
    odata_error: str | None = None
    dlt_missed_deletes: int | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, pg: PgServer) -> None:
        self.args, self.tmp, self.pg = args, tmp, pg
        self.bench_dir: Path = args.bench_dir
        self.dlt_python = str(args.dlt_venv / "bin" / "python")
        self.counter = 0
        self.odata_available: bool | None = None
        self.sources: dict[str, Endpoint] = {}

    def scratch(self, what: str) -> Path:
        self.counter += 1
        path = self.tmp / f"{what}{self.counter}"
        path.mkdir()
        return path

    def fresh_destination(self, kind: str) -> Endpoint:
        if kind == "pg":
            return Endpoint("pg", self.pg.create(self.pg.new_name("dst")), self.pg)
        return Endpoint("sqlite", str(self.scratch("dst") / "dest.db"))

    def discard(self, *things: Endpoint | Path | None) -> None:
        """Drops a destination database / removes a scratch dir once measured (unless --keep)."""
        if self.args.keep:
            return
        for thing in things:
            if isinstance(thing, Endpoint) and thing.kind == "pg":
                self.pg.drop(thing.name)
            elif isinstance(thing, Endpoint):
                shutil.rmtree(Path(thing.name).parent, ignore_errors=True)
            elif isinstance(thing, Path):
                shutil.rmtree(thing, ignore_errors=True)

    # ---- setup

    def setup_dlt(self) -> None:
        check = [self.dlt_python, "-c", "import dlt, pyarrow, connectorx, psycopg2; print(dlt.__version__)"]
        ok = Path(self.dlt_python).exists() and subprocess.run(check, capture_output=True).returncode == 0
        if not ok:
            log(f"setting up the dlt peer in {self.args.dlt_venv} (shared setup_dlt.sh; about a minute)")
            res = subprocess.run(["bash", str(self.bench_dir / "setup_dlt.sh"), str(self.args.dlt_venv)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise BenchError(f"setup_dlt.sh failed:\n{tail_text(res.stdout + res.stderr)}")
        version = subprocess.run(check, capture_output=True, text=True)
        if version.returncode != 0:
            raise BenchError(f"dlt is not importable in {self.dlt_python}:\n{tail_text(version.stderr)}")
        log(f"dlt {version.stdout.strip()} in {self.args.dlt_venv}")

    def check_odata(self) -> bool:
        if self.odata_available is None:
            res = subprocess.run([self.args.python, "-m", "odata_sync", "run", "--help"], cwd=REPO,
                                 capture_output=True, text=True)
            self.odata_available = res.returncode == 0
            log("odata-sync: `python -m odata_sync run` " + ("found" if self.odata_available else
                                                             f"not found ({NOT_AVAILABLE})"))
        return self.odata_available

    def make_source(self, kind: str, rows: int, label: str = "src") -> Endpoint:
        t0 = time.monotonic()
        if kind == "pg":
            ep = Endpoint("pg", self.pg.create(f"{self.pg.prefix}_{label}"), self.pg)
        else:
            ep = Endpoint("sqlite", str(self.tmp / f"{label}.db"))
        res = subprocess.run([sys.executable, str(self.bench_dir / "make_source.py"), ep.url(), str(rows)],
                             capture_output=True, text=True, env=dict(os.environ, PGOPTIONS="--client-min-messages=warning"))
        if res.returncode != 0:
            raise BenchError(f"make_source.py {ep.url()} {rows} failed:\n{tail_text(res.stdout + res.stderr)}")
        if kind == "pg":
            self.pg.scalar(ep.name, "VACUUM ANALYZE orders")
        n = ep.count()
        if n != rows:
            raise BenchError(f"source {ep}: {n} rows, expected {rows}")
        log(f"source {ep}: {n:,} rows made in {time.monotonic() - t0:.1f} s")
        return ep

    def source(self, kind: str) -> Endpoint:
        if kind not in self.sources:
            self.sources[kind] = self.make_source(kind, self.args.rows)
        return self.sources[kind]

    def apply_change(self, src: Endpoint) -> None:
        assert src.pg is not None
        src.pg.psql(src.name, "-f", str(self.bench_dir / "change_source.sql"))
        src.pg.scalar(src.name, "ANALYZE orders")

    # ---- peers

    def run_raw(self, peer: Peer, src: Endpoint, dst: Endpoint) -> Run:
        if peer.kind == "raw_pg":
            cmd = ["bash", str(self.bench_dir / "raw_pg_copy.sh"), src.url(), dst.url()]
        else:
            cmd = [sys.executable, str(self.bench_dir / "raw_sqlite.py"), src.name, dst.name]
        run = measure(cmd, tmp=self.tmp)
        run.rows = dst.count()
        return run

    def run_dlt(self, backend: str, src: Endpoint, dst: Endpoint, state: Path, incremental: bool = False) -> Run:
        """dlt_run.py into ``dst`` (a PostgreSQL database, or for SQLite a work dir holding ``dlt_dest.db``); pipeline
        state in ``state`` (DLT_DATA_DIR), so each run starts clean and an incremental run finds its first run."""
        env = dict(os.environ, DLT_DATA_DIR=str(state), RUNTIME__LOG_LEVEL="WARNING")
        if dst.kind == "pg":
            env["BENCH_DEST_PG"], dest = dst.url(password_for_dlt=True), "postgres"
        else:
            env["BENCH_WORK"], dest = str(Path(dst.name).parent), "sqlite"
        cmd = [self.dlt_python, str(self.bench_dir / "dlt_run.py"), src.url(password_for_dlt=True), dest, backend]
        if incremental:
            cmd.append("incremental")
        run = measure(cmd, env=env, cwd=state, tmp=self.tmp)
        loaded = self.dlt_table(dst, backend)
        run.rows = loaded.count(schema=f"bench_{backend}" if dst.kind == "pg" else None)
        return run

    @staticmethod
    def dlt_table(dst: Endpoint, backend: str) -> Endpoint:
        """Where dlt put ``orders``: schema bench_<backend> in PostgreSQL; an attached file for SQLite."""
        if dst.kind == "pg":
            return dst
        return Endpoint("sqlite", str(Path(dst.name).parent / f"dlt_dest__bench_{backend}.db"))

    def run_peer(self, case: Case, peer: Peer, src: Endpoint) -> Run:
        dst = self.fresh_destination(case.destination)
        state = self.scratch("dlt") if peer.kind == "dlt" else None
        try:
            if peer.kind != "dlt":
                return self.run_raw(peer, src, dst)
            assert state is not None and peer.backend is not None
            return self.run_dlt(peer.backend, src, dst, state)
        finally:
            self.discard(dst, state)

    def run_dlt_incremental(self, peer: Peer, result: CaseResult) -> Run:
        assert peer.backend is not None
        src = Endpoint("pg", self.pg.create(self.pg.new_name("isrc"), template=self.source("pg").name), self.pg)
        dst, state = self.fresh_destination("pg"), self.scratch("dlt")
        try:
            first = self.run_dlt(peer.backend, src, dst, state, incremental=True)
            log(f"    (initial dlt run: {first.wall:.2f} s, {first.rows:,} rows; then change_source.sql)")
            self.apply_change(src)
            run = self.run_dlt(peer.backend, src, dst, state, incremental=True)
            kept = dst.count("id % 1000 = 3", schema=f"bench_{peer.backend}")
            result.dlt_missed_deletes = kept
            run.checks.append(f"dlt kept {kept:,} deleted rows ({run.rows:,} rows vs {src.count():,} in the source)")
            return run
        finally:
            self.discard(dst, state, src)

    # ---- odata-sync

    def run_odata_sync(self, src: Endpoint, dst: Endpoint, mode: str) -> Run:
        """odata-sync replicating ``orders`` from ``src`` into the empty ``dst``, as a user runs it: a job made over
        the HTTP API of a freshly started server, then ``python -m odata_sync run JOB`` timed. ``mode`` "full":
        one run, checked. "incremental": a first run, ``change_source.sql`` on ``src``, then the timed run, checked
        (deleted ids gone, updates and inserts present). Raises NotAvailable while the ``run`` command is missing."""
        if not self.check_odata():
            raise NotAvailable
        data = self.scratch("odata")
        server = None
        try:
            if self.args.via == "server":
                server = self._server(data)
                server.start()
            self._make_job(data, src, dst, server)
            if mode == "incremental":
                first = self._odata_run(data, server)
                log(f"    (initial odata-sync run: {first.wall:.2f} s, RSS {mb(first.rss_kb)}; then change_source.sql)")
                self.apply_change(src)
            run = self._odata_run(data, server)
            run.checks = self._verify(src, dst, mode)
            run.rows = None
            with contextlib.suppress(BenchError):
                run.rows = dst.count()
            return run
        finally:
            if server is not None:
                server.stop()
            self.discard(data)

    def _server(self, data: Path) -> Server:
        token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
        return Server(data, token, python=self.args.python, log_path=data / "serve.log",
                      start_timeout=self.args.start_timeout)

    def _make_job(self, data: Path, src: Endpoint, dst: Endpoint, running: Server | None) -> None:
        with contextlib.nullcontext(running) if running is not None else self._server(data) as server:
            for name, ep in (("bench_src", src), ("bench_dst", dst)):
                self._post(server.root + "Connections", server.token,
                           {"Name": name, "ProviderName": ep.provider, "ConnectionString": ep.connstr()})
            job = {"JobName": JOB, "Source": "bench_src", "Destination": "bench_dst", "Query#1": "REPLICATE [orders]"}
            job.update(self.args.job_extra)
            self._post(server.root + "Jobs", server.token, job)

    @staticmethod
    def _post(url: str, token: str, body: dict, status: int = 201) -> object:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "x-cdata-authtoken": token}
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=3600) as resp:
                if resp.status != status:
                    raise RunFailed(f"POST {url} {body} -> HTTP {resp.status}")
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RunFailed(f"POST {url} {body} -> HTTP {e.code}: {e.read()[:1000].decode(errors='replace')}") from e
        except OSError as e:
            raise RunFailed(f"POST {url} -> {e!r}") from e

    def _odata_run(self, data: Path, server: Server | None) -> Run:
        if server is not None:
            return self._server_run(server)
        cmd = [self.args.python, "-m", "odata_sync", "run", JOB, "--data-dir", str(data)]
        # Wide enough that rich does not wrap the summary line (its own timer is read from it).
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        return measure(cmd, env=env, cwd=REPO, tmp=self.tmp)

    def _server_run(self, server: Server) -> Run:
        """The job run by the running server: ``ExecuteJob`` waiting for the result, timed from request to answer;
        the RSS is the server process's peak so far (VmHWM)."""
        t0 = time.perf_counter()
        answer = self._post(server.root + "ExecuteJob", server.token, {"JobName": JOB, "WaitForResults": True,
                                                                        "Timeout": 0}, status=200)
        wall = time.perf_counter() - t0
        tasks = answer.get("value", []) if isinstance(answer, dict) else []
        failed = [t for t in tasks if t.get("Status") != "SUCCESS"]
        if not tasks or failed:
            raise RunFailed(f"ExecuteJob answered {json.dumps(answer)[:1000]}")
        assert server.proc is not None
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
        return Run(wall, int(hwm.group(1)) if hwm else None,
                   output=f"ExecuteJob: {', '.join(str(t.get('Detail') or t.get('RecordsAffected')) for t in tasks)}")

    @staticmethod
    def _verify(src: Endpoint, dst: Endpoint, mode: str) -> list[str]:
        checks = [("rows", "")]
        if mode == "incremental":
            checks += [("deleted ids (id % 1000 = 3)", "id % 1000 = 3"),
                       ("updated rows", "updated_at >= TIMESTAMP '2030-01-01' AND updated_at < TIMESTAMP '2030-01-02'"
                        " AND status = 'returned'"),
                       ("inserted rows", "id > 2000000")]
        warnings = []
        for label, where in checks:
            try:
                want, got = src.count(where), dst.count(where)
            except BenchError as e:
                warnings.append(f"WARNING odata-sync result not checkable ({label}): {e}")
                break
            if want != got:
                warnings.append(f"WARNING odata-sync result: {label}: {got:,} in the destination, {want:,} in the source")
        return warnings

    def odata_case(self, case_key: str, case: Case) -> Run:
        if case_key == "incr":
            src = Endpoint("pg", self.pg.create(self.pg.new_name("isrc"), template=self.source("pg").name), self.pg)
        else:
            src = self.source(case.source)
        dst = self.fresh_destination(case.destination)
        try:
            return self.run_odata_sync(src, dst, "incremental" if case_key == "incr" else "full")
        finally:
            self.discard(dst, src if case_key == "incr" else None)

    # ---- cases

    def run_case(self, key: str) -> CaseResult:
        case = CASES[key]
        result = CaseResult()
        log(f"\n== {key}: {case.title}, {self.args.rows:,} rows, {self.args.rounds} round(s)")
        self.source(case.source)
        for rnd in range(1, self.args.rounds + 1):
            for peer in case.peers:
                if peer in result.peer_errors or peer.kind.split("_")[0] not in self.args.peers:
                    continue
                try:
                    run = (self.run_dlt_incremental(peer, result) if key == "incr"
                           else self.run_peer(case, peer, self.source(case.source)))
                except (RunFailed, BenchError) as e:
                    result.peer_errors[peer] = str(e).splitlines()[0]
                    log(f"  round {rnd} {peer.label:<16} ERROR {e}")
                    continue
                result.peers.setdefault(peer, []).append(run)
                self._log_run(rnd, peer.label, run)
            if result.odata_error is None:
                try:
                    run = self.odata_case(key, case)
                except NotAvailable:
                    result.odata_error = NOT_AVAILABLE
                    log(f"  round {rnd} {'odata-sync':<16} {NOT_AVAILABLE}")
                    continue
                except (RunFailed, BenchError) as e:
                    result.odata_error = "ERROR " + str(e).splitlines()[0]
                    log(f"  round {rnd} {'odata-sync':<16} ERROR {e}")
                    continue
                result.odata.append(run)
                self._log_run(rnd, "odata-sync", run)
        return result

    @staticmethod
    def _log_run(rnd: int, label: str, run: Run, note: str = "") -> None:
        own = f" (own timer {run.own:.2f} s)" if run.own is not None else ""
        rows = f", {run.rows:,} rows" if run.rows is not None else ""
        log(f"  round {rnd} {label:<16} {run.wall:8.2f} s{own}, peak RSS {mb(run.rss_kb)}{rows}{note}")
        if label == "odata-sync":
            last = [line for line in run.output.strip().splitlines() if line.strip()]
            if last:
                log(f"    last output line: {last[-1][:200]}")
        for check in run.checks:
            log(f"    {check}")

    def rss_5m(self, base_rss_kb: int | None) -> tuple[int | None, int | None, str | None]:
        """(peak RSS at --rows, at 5M rows, error) of odata-sync's PostgreSQL -> PostgreSQL full load."""
        if not self.check_odata():
            return base_rss_kb, None, NOT_AVAILABLE
        log("\n== rss: odata-sync PostgreSQL -> PostgreSQL full load at 5,000,000 rows (peak RSS)")
        try:
            if base_rss_kb is None:
                base = self.odata_case("pgpg", CASES["pgpg"])
                self._log_run(1, "odata-sync", base, " (the baseline load)")
                if any(c.startswith("WARNING") for c in base.checks):
                    return None, None, f"the {self.args.rows:,}-row load failed its check"
                base_rss_kb = base.rss_kb
            src = self.make_source("pg", 5_000_000, "src5m")
            dst = self.fresh_destination("pg")
            try:
                run = self.run_odata_sync(src, dst, "full")
            finally:
                self.discard(dst, src)
        except (RunFailed, BenchError) as e:
            log(f"  ERROR {e}")
            return base_rss_kb, None, "ERROR " + str(e).splitlines()[0]
        self._log_run(1, "odata-sync", run, " (the 5M-row load)")
        if any(c.startswith("WARNING") for c in run.checks):
            return base_rss_kb, run.rss_kb, "INVALID: the 5,000,000-row load failed its check (see WARNING above)"
        return base_rss_kb, run.rss_kb, None


# --------------------------------------------------------------------------------------------------------------------
# report


def best(runs: list[Run]) -> tuple[float, float | None, int | None]:
    """(min wall time, min own time, max peak RSS) over the rounds."""
    owns = [r.own for r in runs if r.own is not None]
    rss = [r.rss_kb for r in runs if r.rss_kb is not None]
    return min(r.wall for r in runs), min(owns) if owns else None, max(rss) if rss else None


def report(args: argparse.Namespace, results: dict[str, CaseResult], rss5: tuple | None) -> None:
    head = (f"{'case':<10} {'peer':<24} {'peer time':>10} {'(own)':>8} {'odata-sync':>11} {'ratio':>8} {'strict':>8}"
            f"  {'target':<18} {'verdict':<7} {'peer RSS':>9} {'odata RSS':>9}")
    log("\n" + "=" * len(head))
    how = ("odata-sync: ExecuteJob on a running server, request to answer" if args.via == "server"
           else "odata-sync: a whole `odata-sync run` process")
    log(f"orders, {args.rows:,} rows; best of {args.rounds} round(s); wall-clock times: peers whole processes, {how}")
    log(head)
    log("-" * len(head))
    for key, res in results.items():
        case = CASES[key]
        incr = key == "incr"
        o_wall = o_rss = None
        if res.odata:
            o_wall, _, o_rss = best(res.odata)
        odata_cell = f"{o_wall:.2f} s" if o_wall is not None else "—"
        valid = not any(c.startswith("WARNING") for run in res.odata for c in run.checks)
        rows: list[tuple[str, list[Run] | None, float | None, str | None]] = []
        dlt_runs = {p: r for p, r in res.peers.items() if p.kind == "dlt"}
        for peer in case.peers:
            target = case.raw_target if peer.kind != "dlt" else (case.dlt_target if len(
                [p for p in case.peers if p.kind == "dlt"]) == 1 else None)
            rows.append((peer.label, res.peers.get(peer), target, res.peer_errors.get(peer)))
        if len(dlt_runs) > 1:
            fastest = min(dlt_runs, key=lambda p: best(dlt_runs[p])[0])
            rows.append((f"dlt fastest ({fastest.backend})", dlt_runs[fastest], case.dlt_target, None))
        for label, runs, target, error in rows:
            tgt = "" if target is None else (f"odata <= {target}x dlt" if incr else f">= {target}x")
            if error or not runs:
                log(f"{key:<10} {label:<24} {'ERROR' if error else '—':>10} {'':>8} {odata_cell:>11} {'—':>8} "
                    f"{'—':>8}  {tgt:<18} {'—':<7}  {error or ''}")
                continue
            p_wall, p_own, p_rss = best(runs)
            own = f"{p_own:.2f}" if p_own is not None else "—"
            if o_wall is None:
                log(f"{key:<10} {label:<24} {p_wall:>8.2f} s {own:>8} {'—':>11} {'—':>8} {'—':>8}  {tgt:<18} "
                    f"{'—':<7} {mb(p_rss):>9} {'—':>9}  {res.odata_error or ''}")
                continue
            if incr:
                ratio = o_wall / p_wall
                strict = o_wall / p_own if p_own else None
                verdict = "" if target is None else ("met" if ratio <= target else "MISSED")
                strict_ok = "" if target is None or strict is None else ("" if strict <= target else "*")
            else:
                ratio = p_wall / o_wall
                strict = p_own / o_wall if p_own else None
                verdict = "" if target is None else ("met" if ratio >= target else "MISSED")
                strict_ok = "" if target is None or strict is None else ("" if strict >= target else "*")
            strict_cell = "—" if strict is None else f"{strict:.2f}x{strict_ok}"
            if verdict and not valid:
                verdict = "INVALID"
            log(f"{key:<10} {label:<24} {p_wall:>8.2f} s {own:>8} {odata_cell:>11} {ratio:>7.2f}x {strict_cell:>8}  "
                f"{tgt:<18} {verdict:<7} {mb(p_rss):>9} {mb(o_rss):>9}")
        if incr and res.dlt_missed_deletes is not None:
            log(f"{'':<10} (dlt's incremental run left {res.dlt_missed_deletes:,} deleted rows in its destination)")
        for run in res.odata:
            for check in run.checks:
                if check.startswith("WARNING"):
                    log(f"{'':<10} {check}")
    log("-" * len(head))
    log("ratio: peer time / odata-sync time (incr: odata-sync / dlt); strict: with the peer's own in-process timer;"
        " * = strict figure misses the target; INVALID = odata-sync's result failed the check (see WARNING)")

    # memory
    log("")
    full_rss = [(k, best(r.odata)[2], any(c.startswith("WARNING") for run in r.odata for c in run.checks))
                for k, r in results.items() if r.odata and k != "incr"]
    scale = "" if args.rows == 1_000_000 else f" (the target is for 1,000,000 rows; this run has {args.rows:,})"
    if full_rss:
        for key, rss, invalid in full_rss:
            verdict = "—" if rss is None else ("met" if rss / 1024 <= RSS_LIMIT_MB else "MISSED")
            verdict += " (but the result failed its check)" if invalid else ""
            log(f"odata-sync peak RSS, {key}: {mb(rss)}  target <= {RSS_LIMIT_MB:.0f} MB: {verdict}{scale}")
    elif results:
        log(f"odata-sync peak RSS: {next((r.odata_error for r in results.values() if r.odata_error), '—')}")
    if rss5 is not None:
        base, five, error = rss5
        if error:
            log(f"odata-sync peak RSS at 5,000,000 rows: {error}")
        elif base and five:
            growth = five / base
            log(f"odata-sync peak RSS at 5,000,000 rows: {mb(five)} = {growth:.2f}x the {args.rows:,}-row load "
                f"({mb(base)}); target <= {RSS_5M_GROWTH:.2f}x: {'met' if growth <= RSS_5M_GROWTH else 'MISSED'}")
    log("")
    log(f"machine: nproc={os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}. Figures are "
        "ratios from one run, every side on this machine, alternating A B; compare ratios, not absolute numbers.")
    log(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")


# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the source table (default 1,000,000)")
    p.add_argument("--rounds", type=int, default=1, help="A B rounds per case (default 1)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {','.join(CASES)} (default all)")
    p.add_argument("--rss-5m", action="store_true", help="also load 5,000,000 rows with odata-sync and compare its "
                   "peak RSS with the --rows load (long)")
    p.add_argument("--peers", default="raw,dlt", help="which peers run: raw, dlt or both (default raw,dlt); "
                   "odata-sync always runs")
    p.add_argument("--keep", action="store_true", help="leave the databases and the temp dir, and print their names")
    p.add_argument("--dlt-venv", type=Path, default=DEFAULT_DLT_VENV,
                   help=f"virtualenv of the dlt peer, made by setup_dlt.sh if missing (default {DEFAULT_DLT_VENV})")
    p.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH_DIR,
                   help=f"the shared bench helpers (default {DEFAULT_BENCH_DIR}, or $ODATA_BENCH_DIR)")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432",
                   help="PostgreSQL server URL, without a database (default postgresql://postgres@127.0.0.1:5432)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs odata-sync (default: this one)")
    p.add_argument("--job-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra property of the odata-sync Job, e.g. BatchSize=50000 (repeatable)")
    p.add_argument("--via", choices=("cli", "server"), default="cli",
                   help="how odata-sync runs the job: cli = a `python -m odata_sync run JOB` process timed whole "
                        "(default); server = ExecuteJob on a running `odata-sync serve`, timed from request to answer")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds to wait for odata-sync serve to be ready")
    a = p.parse_args(argv)
    a.cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    a.peers = {p.strip() for p in a.peers.split(",") if p.strip()}
    unknown = [c for c in a.cases if c not in CASES]
    if unknown or not a.cases:
        p.error(f"--cases takes names from {','.join(CASES)}; unknown: {','.join(unknown)}")
    if a.rows < 10_000:
        p.error("--rows must be at least 10000 (change_source.sql inserts 5,000 rows)")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    extra = {}
    for item in a.job_extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--job-extra takes KEY=VALUE, got {item!r}")
        with contextlib.suppress(ValueError):
            value = json.loads(value)
        extra[key] = value
    a.job_extra = extra
    a.dlt_venv = a.dlt_venv.expanduser().absolute()
    if a.dlt_venv == REPO or REPO in a.dlt_venv.parents:
        p.error("--dlt-venv must be outside the repository")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [t for t in ("psql", "bash") if shutil.which(t) is None]
    if not os.access("/usr/bin/time", os.X_OK):
        missing.append("/usr/bin/time (apt-get install time)")
    if missing:
        log("missing tools: " + ", ".join(missing))
        return 2
    for f in ("setup_dlt.sh", "dlt_run.py", "make_source.py", "change_source.sql", "raw_pg_copy.sh", "raw_sqlite.py"):
        if not (args.bench_dir / f).is_file():
            log(f"not found: {args.bench_dir / f} (use --bench-dir)")
            return 2

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    pg = PgServer(args.pg, f"bench_sync_{os.getpid()}")
    bench = Bench(args, tmp, pg)
    try:
        try:
            pg.scalar("postgres", "SELECT 1")
        except BenchError as e:
            raise BenchError(f"PostgreSQL at {args.pg} is not reachable: {e}") from e
        log(f"machine: nproc={os.cpu_count()}, usable CPUs={len(os.sched_getaffinity(0))}; temp dir {tmp}; "
            f"databases {pg.prefix}_*")
        if "dlt" in args.peers:
            bench.setup_dlt()
        bench.check_odata()
        results: dict[str, CaseResult] = {}
        for key in args.cases:
            results[key] = bench.run_case(key)
        rss5 = None
        if args.rss_5m:
            base = best(results["pgpg"].odata)[2] if "pgpg" in results and results["pgpg"].odata else None
            rss5 = bench.rss_5m(base)
        report(args, results, rss5)
        return 0
    except BenchError as e:
        log(f"\nERROR: {e}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted")
        return 130
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            if args.keep:
                log(f"\n--keep: temp dir {tmp}; databases: {', '.join(pg.created) or 'none'} "
                    f"(drop with: DROP DATABASE ... WITH (FORCE))")
            else:
                failed = pg.drop_all()
                shutil.rmtree(tmp, ignore_errors=True)
                if failed:
                    log(f"could not drop: {', '.join(failed)}")


if __name__ == "__main__":
    sys.exit(main())
