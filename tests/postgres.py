"""A private PostgreSQL server for the tests: its own cluster in a temporary directory, on a
loopback port, stopped by PID and removed afterwards.

PostgreSQL refuses to run as root. As root, the server runs as the ``postgres`` account that
Debian's package creates (through ``setpriv``), in a directory that account owns; no user is
created and nothing outside the directory is touched. As any other user, it runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from services import Process, free_port, wait_until


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql as root)")
    return Path(found[-1]).parent


def _as_server_user() -> tuple[list[str], int, int]:
    """The command prefix to run as the server's user, and that user's uid and gid."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no 'postgres' account exists to run PostgreSQL as")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing")
    prefix = [
        setpriv,
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
    ]
    return prefix, account.pw_uid, account.pw_gid


class PostgreSQL:
    """``url``: a SQLAlchemy URL of the ``postgres`` database, trust authentication."""

    def __init__(self) -> None:
        binaries = _binaries()
        prefix, uid, gid = _as_server_user()
        # Under /tmp rather than pytest's tmp_path: the server's user must reach the folder.
        self.root = Path(tempfile.mkdtemp(prefix="tun-pg-"))
        os.chown(self.root, uid, gid)
        data = self.root / "data"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        subprocess.run(
            [
                *prefix,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "--encoding=UTF8",  # the C locale alone gives SQL_ASCII: bytes, not text
                "--locale=C",
                "--username=postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=self.root,
        )
        self.port = free_port()
        log = self.root / "postgres.log"
        log.touch()
        os.chown(log, uid, gid)
        self.process = Process(
            [
                *prefix,
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.root),  # its unix socket stays in the private folder
                "-c",
                "fsync=off",
            ],
            log,
            env=env,
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        wait_until(self._ready, 30, "PostgreSQL accepting connections", 0.2)

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"):
            return True

    def stop(self) -> None:
        self.process.stop(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)
