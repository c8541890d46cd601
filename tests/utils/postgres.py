"""A real PostgreSQL for tests: Debian's `postgresql` (15) on loopback, with password auth.

scripts/install-test.sh installs the package. `initdb` and `pg_ctl` refuse to run as root, so as
root they run as the `postgres` system user the package creates, on a folder that user owns
(a fresh temporary folder under /tmp, which it can reach wherever the repository lives). TCP is
on 127.0.0.1 only, with scram-sha-256 passwords: the server under test signs in as a
non-superuser role that owns its database, as in production. Fast to start (a copy of a data
folder initdb made once per machine, then `pg_ctl start`: under a second) and to stop
(`-m immediate`, no checkpoint), so a test can stop the database mid-request, or kill it, and
start it again on the same data and port.

    with PostgresServer() as postgres:          # or a package-scoped fixture around it
        settings = Settings(database_url=postgres.url)
        postgres.stop()                          # the database goes away mid-request
        postgres.start()                         # and comes back, data kept
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import asyncpg
import psutil

from tests.utils.server import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
IPC_RMID = 0  # shmctl: remove the segment
COMMAND_TIMEOUT_S = 60
# Durability against a machine crash is not what tests check: a stopped or killed server keeps
# every committed row anyway (the WAL is written at commit; only fsync is skipped).
SERVER_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    # Dynamic shared memory as files in the data folder, not POSIX segments in /dev/shm: a server
    # a test kills (-9) leaves its /dev/shm segments behind, and they hold the machine's memory
    # until it reboots; in the data folder they go with the test's temporary folder.
    "dynamic_shared_memory_type": "mmap",
}


# initdb's options: they shape the template every server's data folder is copied from, so they
# name it (a change makes a new template).
INITDB_OPTIONS = (
    f"--username={SUPERUSER}",
    # The socket (in the server's private folder) is the harness's own way in; TCP always asks
    # for a password.
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "--encoding=UTF8",
    "--locale=C",
    "--no-sync",
    "--no-instructions",
)
TEMPLATE = Path(
    "/tmp/lingshu-postgres-15-template-"
    + hashlib.sha256(" ".join(INITDB_OPTIONS).encode()).hexdigest()[:12]
)
AS_POSTGRES = os.geteuid() == 0  # initdb and pg_ctl refuse to run as root


def _command(*args: str) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *args] if AS_POSTGRES else list(args)


def _owned_folder(prefix: str) -> Path:
    """A new folder under /tmp that the server's user owns (it may not reach pytest's tmp_path
    or a repository under /root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if AS_POSTGRES:
        shutil.chown(folder, SUPERUSER, SUPERUSER)
    return folder


def _initdb(data_dir: Path) -> None:
    # The superuser's password is never used (it signs in through the socket), but initdb wants
    # one to turn on password authentication.
    password_file = data_dir.parent / "superuser-password"
    password_file.write_text(secrets.token_hex(16))
    if AS_POSTGRES:
        shutil.chown(password_file, SUPERUSER, SUPERUSER)
    try:
        result = subprocess.run(
            _command(
                str(BIN / "initdb"),
                f"--pgdata={data_dir}",
                f"--pwfile={password_file}",
                *INITDB_OPTIONS,
            ),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    finally:
        password_file.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")


def _template() -> Path:
    """A freshly initialised data folder, made once per machine: copying it takes a tenth of a
    second, initdb a second or more on a busy machine. Made aside and renamed into place, so a
    concurrent test worker never sees half of it."""
    owner = SUPERUSER if AS_POSTGRES else None
    if (TEMPLATE / "PG_VERSION").exists() and (owner is None or TEMPLATE.owner() == owner):
        return TEMPLATE
    staging = _owned_folder("lingshu-postgres-template-")
    try:
        _initdb(staging / "data")
        try:
            (staging / "data").rename(TEMPLATE)
        except OSError:  # another worker's template got there first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TEMPLATE


def _run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class PostgresServer:
    """One PostgreSQL server in its own temporary folder, on a fixed loopback port.

    Starts on construction (`start=False` to start later); `close()` (or leaving the `with`
    block) kills it and removes its folder.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        user: str = "lingshu",
        database: str = "lingshu",
        start: bool = True,
    ) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL 15 is not installed ({BIN / 'initdb'} is missing): run "
                "scripts/install-test.sh (Debian package postgresql)"
            )
        self.port = port or free_port()
        self.user = user
        self.password = secrets.token_hex(16)
        self.database = database
        self.directory = _owned_folder("lingshu-postgres-")
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        if start:
            self.start()

    # ---------- addresses ----------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database, for `--database-url` (LINGSHU_DATABASE_URL)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return (
            f"postgresql+asyncpg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database, safe='')}"
        )

    @property
    def dsn(self) -> str:
        """The same address for asyncpg itself (`asyncpg.connect(postgres.dsn)`)."""
        return self.url.replace("postgresql+asyncpg://", "postgresql://", 1)

    # ---------- life cycle ----------

    @property
    def running(self) -> bool:
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """Start the server (initialising its data folder the first time) and wait until it
        accepts connections. Same data, port and password every time."""
        first = not (self.data_dir / "PG_VERSION").exists()
        if first:
            self._copy_template()
        result = self._pg_ctl_start()
        if result.returncode != 0 and first:
            # A template that a /tmp cleaner thinned out since it was made: make it again.
            shutil.rmtree(TEMPLATE, ignore_errors=True)
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._copy_template()
            result = self._pg_ctl_start()
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {self._failure(result)}")
        if first:
            _run_async(self._create_role_and_database())

    def stop(self) -> None:
        """Stop at once (`pg_ctl stop -m immediate`): connections drop, nothing is flushed
        beyond what committed; the next start recovers from the WAL."""
        if not self.running:
            return
        result = self._pg_ctl("stop", "-w", "-m", "immediate")
        if result.returncode != 0 and self.running:
            raise RuntimeError(f"PostgreSQL did not stop: {self._failure(result)}")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crashed host or an OOM-killed container:
        no process gets to say goodbye, every connection breaks."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        segment = self._shared_memory_id()
        try:
            postmaster = psutil.Process(pid)
            processes = [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        # Gone once exited: a zombie waiting for PID 1 to reap it holds nothing the next start
        # needs (psutil.wait_procs would wait for the reaping too, seconds in some containers).
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while any(_alive(process) for process in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Its lock files name a pid that stays "alive" to the next postmaster until the zombie
        # is reaped: the processes are gone, so are the locks.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        (self.directory / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        # And its System V shared memory header, which only a postmaster reading that lock file
        # would remove: kills would leave one behind each.
        if segment is not None:
            ctypes.CDLL(None, use_errno=True).shmctl(segment, IPC_RMID, None)

    def close(self) -> None:
        """Kill the server and remove its folder."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---------- databases ----------

    def create_database(self, name: str) -> str:
        """A new empty database owned by the server's user (one per test that needs a clean
        one); its SQLAlchemy URL."""
        _run_async(self._superuser_execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"'))
        return self.url_for(name)

    # ---------- internals ----------

    def _copy_template(self) -> None:
        copy = subprocess.run(
            ["cp", "-a", str(_template()), str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        if copy.returncode != 0:
            raise RuntimeError(f"copying the template data folder failed: {copy.stderr}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = f"-k {self.directory} -p {self.port} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {name}={value}" for name, value in SERVER_SETTINGS.items()
        )
        return self._pg_ctl("start", "-w", "-l", str(self.log_path), "-o", options)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _command(str(BIN / "pg_ctl"), "--pgdata", str(self.data_dir), *args),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    def _postmaster_pid(self) -> int | None:
        """The postmaster's pid while it runs (its lock file names it)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            # Its cwd is the data folder: not another server that reused a killed one's pid.
            alive = _alive(process) and Path(process.cwd()).resolve() == self.data_dir.resolve()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid if alive else None

    def _shared_memory_id(self) -> int | None:
        """The System V segment the running postmaster's lock file names (its 7th line: key
        and id)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[6].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _failure(self, result: subprocess.CompletedProcess[str]) -> str:
        log = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        return f"{result.stdout}{result.stderr}\n{log}"

    async def _superuser_execute(self, *statements: str) -> None:
        connection = await asyncpg.connect(
            host=str(self.directory), port=self.port, user=SUPERUSER, database="postgres"
        )
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    async def _create_role_and_database(self) -> None:
        # A plain role, as production grants: it owns its database (and so its public schema),
        # nothing more.
        await self._superuser_execute(
            f"CREATE ROLE \"{self.user}\" LOGIN PASSWORD '{self.password}'",
            f'CREATE DATABASE "{self.database}" OWNER "{self.user}"',
        )
