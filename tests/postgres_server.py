"""A throwaway PostgreSQL server on 127.0.0.1 for tests.

`PostgresServer.start()` runs `initdb` into a fresh folder under /tmp (once) and starts the
server on a free TCP port with fsync off; `stop()` is a fast shutdown and a later `start()`
brings the same server back on the same port with the same data, so a test can take the
database away while an app is writing. `cleanup()` stops it and deletes the folder. The
server refuses to run as root, so when we are root the folder belongs to the `postgres`
user and the server programs run as that user through `runuser`. Every failure raises
`PostgresServerError` saying which command failed and ending with the server log's tail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"
INSTALL_HINT = ("install PostgreSQL's server (Debian: apt-get install postgresql; "
                "scripts/setup.sh does it when run as root)")
_names = itertools.count(1)


class PostgresServerError(RuntimeError):
    """The test server could not be set up, started or stopped."""


class PostgresUnavailable(PostgresServerError):
    """This machine cannot run a PostgreSQL server at all (nothing installed, no user)."""


def find_bindir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: pg_config's, else the newest Debian one."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(d) for d in debian), key=_major_version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _major_version(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(
                "no PostgreSQL server programs (initdb, pg_ctl) in `pg_config --bindir` or "
                f"/usr/lib/postgresql/*/bin; {INSTALL_HINT}")
        self.bindir = found
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="byllm-distill-pg-", dir="/tmp"))
        if self.as_root:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError as exc:
                self.cleanup()
                raise PostgresUnavailable(
                    f"running as root, and PostgreSQL refuses to; there is no "
                    f"{SERVER_USER!r} user to run it as ({INSTALL_HINT})") from exc
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "log"
        self.port = _free_port()
        self.running = False
        self.started_once = False

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server (creating its data folder the first time); a no-op if running."""
        if self.running:
            return
        if not self.data.exists():
            # UTF8 whatever the locale: records hold non-ASCII text.
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SERVER_USER,
                      "-E", "UTF8", "--locale=C", "--no-sync")
        for attempt in range(3):
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l",
                          str(self.log), "-o", options, "start")
                break
            except PostgresServerError as exc:
                # Another program may take the free port before the server binds it; only
                # a first start may move, a restart must come back where clients expect it.
                if self.started_once or attempt == 2 or "already in use" not in str(exc):
                    raise
                self.port = _free_port()
        self.running = self.started_once = True

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, the data stays for a later `start()`."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")
        self.running = False

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        """A new, empty database with a name unique to this server; returns its URL."""
        name = f"test_{os.getpid()}_{next(_names)}"
        self._sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database`, cutting any connection still open."""
        name = url.rsplit("/", 1)[1]
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _sql(self, statement: str) -> None:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=SERVER_USER,
                                 dbname="postgres", autocommit=True, connect_timeout=10) as conn:
                conn.execute(statement)
        except psycopg.Error as exc:
            raise PostgresServerError(
                f"{statement!r} failed on the test server: {exc}{self._log_tail()}") from exc

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # The server user may not be able to enter our working directory; run from its own.
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise PostgresServerError(
                f"`{shlex.join(command)}` exited with {done.returncode}: {output}"
                f"{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log (last lines):\n" + "\n".join(tail) if tail else ""
