"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries, a cluster in a
temporary folder, a free localhost port, stopped and removed afterwards.

:func:`start_postgres` returns a :class:`PostgresServer` (a context manager) or raises
:class:`PostgresUnavailable` naming what is missing, which the fixture turns into a skip.
PostgreSQL refuses to run as root, so as root the cluster is owned and run by the
``postgres`` system user that Debian's package creates (through ``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Where Debian installs the server binaries (initdb and pg_ctl are not on PATH there).
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The system user Debian's package creates; the server runs as it when the tests run as root.
SERVER_USER = "postgres"
#: The database role and database the tests use (trust authentication, localhost only).
ROLE = "dse_tune"
DATABASE = "dse_tune"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No server can be started here; the message says what is missing."""


def find_server_binaries() -> Path:
    """The folder that holds ``initdb`` and ``pg_ctl``: Debian's newest version, else PATH."""

    def version(folder: str) -> tuple[int, ...]:
        name = Path(folder).parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob(DEBIAN_BIN_GLOB), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return Path(folder)
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl, createdb) not found in {DEBIAN_BIN_GLOB} "
        "or on PATH; install Debian's postgresql package (`make test` does, as root)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; :attr:`url` is a SQLAlchemy/Optuna storage URL for its database."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.run_as, "--", *command] if self.run_as else command

    def run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            self.command(tool, *args), capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.is_file() else ""
            raise PostgresUnavailable(
                f"{tool} {' '.join(args)} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}\n{log}".rstrip()
            )

    def start(self) -> PostgresServer:
        # --no-sync / fsync=off: a test cluster needs no durability, and it starts faster.
        self.run("initdb", "-D", str(self.data_dir), "-U", ROLE, "--auth=trust",
                 "--encoding=UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                 "-w", "-t", str(START_TIMEOUT_S), "start")
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, DATABASE)
        return self

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").is_file():
            subprocess.run(
                self.command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                capture_output=True, timeout=START_TIMEOUT_S,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def server_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root, then ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no '{SERVER_USER}' user to run PostgreSQL as "
            "(the server refuses root); install Debian's postgresql package, which creates it"
        ) from None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` is missing (util-linux)")
    return SERVER_USER


def start_postgres() -> PostgresServer:
    """Start a fresh cluster with database :data:`DATABASE`; raises PostgresUnavailable."""
    bin_dir = find_server_binaries()
    run_as = server_user()
    # Directly under /tmp, not pytest's tmp_path: that is private to root (0700), and the
    # server user must reach its data folder and socket.
    root = Path(tempfile.mkdtemp(prefix="dse-tune-postgres-"))
    if run_as:
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir, root, free_port(), run_as)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise
