"""A real OpenStack control plane for the tests, started from PyPI packages in a private venv.

:class:`OpenStackCloud` brings up, all on 127.0.0.1 with free ports and every file in one
temporary directory:

- a private RabbitMQ broker (Debian's rabbitmq-server, with its own epmd, configuration, data and
  Erlang cookie; no system service is touched);
- Keystone (SQLite, Fernet tokens) with an ``admin`` user in project ``admin`` and the catalogue
  entries of the services below;
- Placement (SQLite);
- Nova: the compute API, conductor, scheduler and two nova-compute services (``compute1``,
  ``compute2``) with Nova's fake virt driver that live-migrates (``FakeLiveMigrateDriver``: a
  migration takes about 5 s unless it is aborted). Databases are SQLite files (API, cell0,
  cell1). Glance and Neutron are not run: each Nova process gets Nova's own functional-test
  stand-ins for them (see openstack_service.py), so servers boot from the fixtures' images with
  ``networks: none``;
- Watcher: its API (Keystone authentication) and decision engine (which syncs Watcher's goals
  and strategies into its database and runs triggered audits against this Nova).

Every service runs as its own process in a venv of its own (``make test`` installs it under
``~/.cache/neat-exporter``, pinned by tests/openstack-requirements.txt), so the project's venv
stays small: the tests talk
to the cloud over HTTP with openstacksdk and keystoneauth1 only. Processes are stopped by PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from services import Process, free_port

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "openstack-requirements.txt"


def _default_venv() -> Path:
    """Where the Makefile puts the services' venv: outside the clone, keyed by the pins."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "neat-exporter" / f"venv-openstack-{digest}"


VENV = Path(os.environ.get("NEAT_OPENSTACK_VENV") or _default_venv())
RUNNER = Path(__file__).with_name("openstack_service.py")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
DATABASES = ("keystone", "placement", "nova_api", "nova", "nova_cell0", "watcher")
EPMD = "epmd"
NOBODY = 65534  # PostgreSQL runs as nobody/nogroup, which Debian always has
NOBODY_GROUP = 65534
REGION = "RegionOne"
COMPUTE_HOSTS = ("compute1", "compute2")
IMAGE_UUID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"  # GlanceFixture.image1, in every process
FLAVOR = "ost-small"
FLAVOR_RAM_MB = 512
BRING_UP_TIMEOUT = 240.0
STOP_GRACE = 5.0


def missing_parts() -> str | None:
    """Why the control plane cannot start on this machine, or None when it can."""
    if not (VENV / "bin" / "nova-compute").exists():
        return f"the OpenStack services venv {VENV} is missing (make test installs it)"
    if not RABBITMQ_SERVER.exists() or shutil.which(EPMD) is None:
        return "rabbitmq-server is not installed (scripts/install-system-packages.sh)"
    if POSTGRES_BIN is None:
        return "postgresql is not installed (scripts/install-system-packages.sh)"
    return None


@dataclass
class OpenStackCloud:
    """Start with :meth:`start`, stop with :meth:`stop`; see the module docstring."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ost-cloud-")))
    password: str = field(default_factory=lambda: secrets.token_hex(12), repr=False)
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self):
        self.ports = {
            name: free_port()
            for name in (
                "rabbit",
                "epmd",
                "dist",
                "postgres",
                "keystone",
                "placement",
                "nova",
                "watcher",
            )
        }
        self.auth_url = f"http://127.0.0.1:{self.ports['keystone']}/v3"
        self.compute_url = f"http://127.0.0.1:{self.ports['nova']}/v2.1"
        self.placement_url = f"http://127.0.0.1:{self.ports['placement']}"
        self.watcher_url = f"http://127.0.0.1:{self.ports['watcher']}"
        self.transport_url = f"rabbit://guest:guest@127.0.0.1:{self.ports['rabbit']}/"

    # -- what the tests use ---------------------------------------------------------------

    def auth(self, password: str | None = None) -> dict[str, str]:
        """openstacksdk/keystoneauth1 password auth as the admin user."""
        return {
            "auth_url": self.auth_url,
            "username": "admin",
            "password": self.password if password is None else password,
            "project_name": "admin",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }

    def os_environ(self, password: str | None = None) -> dict[str, str]:
        """The usual ``OS_*`` variables for the admin user."""
        auth = self.auth(password)
        return {
            "OS_AUTH_URL": auth["auth_url"],
            "OS_USERNAME": auth["username"],
            "OS_PASSWORD": auth["password"],
            "OS_PROJECT_NAME": auth["project_name"],
            "OS_USER_DOMAIN_NAME": auth["user_domain_name"],
            "OS_PROJECT_DOMAIN_NAME": auth["project_domain_name"],
            "OS_REGION_NAME": REGION,
            "OS_INTERFACE": "public",
        }

    def connection(self):
        """An openstacksdk connection as admin."""
        import openstack

        return openstack.connect(region_name=REGION, **self.auth())

    def log(self, name: str) -> str:
        return self.processes[name].log()

    def flavor(self, conn) -> str:
        """The id of the tests' flavor (512 MB, 1 vCPU), made on first use."""
        flavor = conn.compute.find_flavor(FLAVOR)
        if flavor is None:
            flavor = conn.compute.create_flavor(name=FLAVOR, ram=FLAVOR_RAM_MB, vcpus=1, disk=1)
        return flavor.id

    def boot(self, conn, name: str, host: str):
        """An ACTIVE server on ``host`` (the fake driver's VM: no Neutron ports)."""
        server = conn.compute.create_server(
            name=f"ost-{name}",
            flavor_id=self.flavor(conn),
            image_id=IMAGE_UUID,
            networks="none",
            availability_zone=f"nova:{host}",
        )
        return conn.compute.wait_for_server(server, wait=120, interval=0.5)

    # -- bring-up -------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        cached = (DATABASE_CACHE / "password").exists()
        if cached:  # the admin password is in the cached Keystone database
            self.password = (DATABASE_CACHE / "password").read_text()
        self._write_configs()
        self._start_rabbitmq()
        self._start_postgres()
        if cached:
            self._restore_databases()
        else:
            with ThreadPoolExecutor(3) as pool:  # the database set-ups are independent
                keystone = pool.submit(self._prepare_keystone)
                nova_db = pool.submit(self._prepare_nova_databases)
                # Watcher's own schema creation: quicker than its migrations.
                watcher_db = pool.submit(
                    self._manage, "watcher-db-manage", "watcher.conf", "create_schema"
                )
                keystone.result()
                nova_db.result()
                watcher_db.result()
            self._save_databases()
        self._start_service(
            "keystone",
            "wsgi",
            "keystone.wsgi.api",
            self.ports["keystone"],
            env={"OS_KEYSTONE_CONFIG_FILES": self._conf("keystone")},
        )
        self._start_service(
            "placement",
            "wsgi",
            "placement.wsgi.api",
            self.ports["placement"],
            env={"OS_PLACEMENT_CONFIG_DIR": str(self.workdir / "placement")},
        )
        self._register_catalogue()
        self._wait_port("rabbitmq", "rabbit", 60)
        nova_env = {"OS_NOVA_CONFIG_DIR": str(self.workdir / "nova")}
        self._start_service(
            "nova-api",
            "wsgi",
            "nova.wsgi.osapi_compute",
            self.ports["nova"],
            env=nova_env,
            fixtures=True,
        )
        for service in ("conductor", "scheduler"):
            self._start_nova(f"nova-{service}", f"nova.cmd.{service}", "nova.conf")
        for host in COMPUTE_HOSTS:
            self._start_nova(f"nova-compute-{host}", "nova.cmd.compute", f"{host}.conf")
        self._start_service(
            "watcher-api",
            "wsgi",
            "watcher.wsgi.api",
            self.ports["watcher"],
            "--",
            "--config-file",
            self._conf("watcher"),
        )
        self._start_command(
            "watcher-decision-engine",
            "watcher-decision-engine",
            "--config-file",
            self._conf("watcher"),
        )
        self._wait_for_computes()
        self._wait_for_watcher()
        self.bring_up_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop every service with its process group (its session: the workers Nova forks,
        RabbitMQ's Erlang VM under its start script): SIGTERM to all at once, SIGKILL to what
        is left after STOP_GRACE seconds; then remove the files."""
        processes = list(self.processes.values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.1, deadline - time.monotonic()))
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.stop(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- pieces ---------------------------------------------------------------------------

    def _conf(self, name: str) -> str:
        return str(self.workdir / f"{name}.conf")

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{VENV / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.workdir / "home"),
            "OS_NOVA_DISABLE_EVENTLET_PATCHING": "1",  # Nova's threading mode, as its API uses
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return {**env, **(extra or {})}

    def _manage(self, program: str, conf: str, *args: str) -> None:
        """Run one of the services' set-up commands with the configuration file ``conf`` (a
        name in the working directory); fail with its output."""
        result = subprocess.run(
            [str(VENV / "bin" / program), "--config-file", str(self.workdir / conf), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed:\n"
                f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
            )

    def _start_service(
        self, name: str, *args: object, env: dict[str, str] | None = None, fixtures: bool = False
    ) -> None:
        argv = [str(VENV / "bin" / "python"), str(RUNNER), *map(str, args)]
        if fixtures:
            argv.insert(2, "--nova-fixtures")
        self.processes[name] = Process(argv, self.workdir / f"{name}.log", env=self._env(env))

    def _start_nova(self, name: str, module: str, conf: str) -> None:
        self._start_service(
            name,
            "main",
            module,
            "--",
            "--config-file",
            str(self.workdir / "nova" / "nova.conf"),
            *(["--config-file", str(self.workdir / "nova" / conf)] if conf != "nova.conf" else []),
            fixtures=True,
        )

    def _start_command(self, name: str, program: str, *args: str) -> None:
        argv = [str(VENV / "bin" / program), *args]
        self.processes[name] = Process(argv, self.workdir / f"{name}.log", env=self._env())

    def _wait_port(self, name: str, port_name: str, timeout: float) -> None:
        import socket

        def listening() -> bool:
            process = self.processes[name]
            if not process.alive():
                raise ServiceDied(f"{name} exited:\n{process.log()[-3000:]}")
            with socket.create_connection(("127.0.0.1", self.ports[port_name]), timeout=1):
                return True

        _wait(listening, timeout, f"{name} to listen")

    def _start_rabbitmq(self) -> None:
        base = self.workdir / "rabbitmq"
        (base / "mnesia").mkdir(parents=True)
        (base / "log").mkdir()
        (self.workdir / "home").mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.ports['rabbit']}\n"
            "loopback_users = none\n"
            f"distribution.listener.interface = 127.0.0.1\n"
            f"distribution.listener.port_range.min = {self.ports['dist']}\n"
            f"distribution.listener.port_range.max = {self.ports['dist']}\n"
        )
        (base / "enabled_plugins").write_text("[].\n")
        epmd_env = {"ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(self.ports["epmd"])}
        # Our own epmd in the foreground, so that it is stopped with the rest (Erlang would
        # otherwise start a daemon that outlives the test).
        self.processes["epmd"] = Process(
            [EPMD, "-port", str(self.ports["epmd"]), "-address", "127.0.0.1"],
            self.workdir / "epmd.log",
            env=self._env(epmd_env),
        )
        self._wait_port("epmd", "epmd", 10)
        env = {
            **epmd_env,
            "RABBITMQ_NODENAME": f"ost-{self.ports['rabbit']}@localhost",
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(self.ports["dist"]),
        }
        self.processes["rabbitmq"] = Process(
            [str(RABBITMQ_SERVER)], self.workdir / "rabbitmq.log", env=self._env(env)
        )

    def _start_postgres(self) -> None:
        """A private PostgreSQL cluster, run as ``nobody`` (it refuses root; no user is added).

        SQLite cannot take the concurrent writers of a control plane (Placement's threads,
        Nova's services): they fail with "database is locked"."""
        data = self.workdir / "postgres"
        data.mkdir()
        os.chown(data, NOBODY, NOBODY_GROUP)
        self.workdir.chmod(0o711)  # nobody must reach its directory, and nothing else
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY_GROUP}", "--clear-groups"]
        result = subprocess.run(
            [*as_nobody, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "ost",
             "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
            capture_output=True, text=True, timeout=120, env=self._env(),
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        self.processes["postgres"] = Process(
            [*as_nobody, str(POSTGRES_BIN / "postgres"), "-D", str(data),
             "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-k", str(data),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            self.workdir / "postgres.log",
            env=self._env(),
        )  # fmt: skip
        self._wait_port("postgres", "postgres", 60)
        psql = [str(POSTGRES_BIN / "psql"), *self._postgres_address()]
        for name in DATABASES:
            _wait(
                lambda name=name: subprocess.run(
                    [*psql, "-d", "postgres", "-c", f"CREATE DATABASE {name}"],
                    capture_output=True, env=self._env(), timeout=30,
                ).returncode == 0,
                30,
                f"PostgreSQL to create database {name}",
            )  # fmt: skip

    # The databases as the set-up commands leave them (migrated, Keystone bootstrapped), with
    # Keystone's keys and admin password, are kept in the services' venv after the first
    # bring-up: restoring them takes seconds where the commands take minutes. Only the ports
    # differ from one bring-up to the next; they are written into the restored rows.

    def _restore_databases(self) -> None:
        for name in DATABASES:
            self._psql(name, "-f", str(DATABASE_CACHE / f"{name}.sql"))
        for keys in ("fernet-keys", "credential-keys"):
            shutil.rmtree(self.workdir / keys)
            shutil.copytree(DATABASE_CACHE / keys, self.workdir / keys)
        cell0 = "00000000-0000-0000-0000-000000000000"
        self._psql("keystone", "-c", f"UPDATE endpoint SET url = '{self.auth_url}'")
        self._psql(
            "nova_api",
            "-c",
            "UPDATE cell_mappings SET "
            f"database_connection = CASE WHEN uuid = '{cell0}' "
            f"THEN '{self._database('nova_cell0')}' ELSE '{self._database('nova')}' END, "
            f"transport_url = CASE WHEN uuid = '{cell0}' "
            f"THEN transport_url ELSE '{self.transport_url}' END",
        )

    def _save_databases(self) -> None:
        """Keep the set-up's result for the next bring-ups (atomically: a concurrent run keeps
        its own or finds a complete one)."""
        staging = Path(tempfile.mkdtemp(prefix="ost-db-cache-", dir=VENV))
        try:
            for name in DATABASES:
                result = subprocess.run(
                    [str(POSTGRES_BIN / "pg_dump"), *self._postgres_address(), "--no-owner",
                     "-d", name, "-f", str(staging / f"{name}.sql")],
                    capture_output=True, text=True, env=self._env(), timeout=120,
                )  # fmt: skip
                if result.returncode != 0:
                    raise RuntimeError(f"pg_dump {name} failed: {result.stderr[-2000:]}")
            for keys in ("fernet-keys", "credential-keys"):
                shutil.copytree(self.workdir / keys, staging / keys)
            (staging / "password").write_text(self.password)
            DATABASE_CACHE.parent.mkdir(exist_ok=True)
            for stale in DATABASE_CACHE.parent.iterdir():  # made by an older set-up
                shutil.rmtree(stale, ignore_errors=True)
            staging.rename(DATABASE_CACHE)
        except OSError:
            pass  # another bring-up saved it first, or the venv is read-only: no cache
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _postgres_address(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U", "ost"]

    def _psql(self, database: str, *args: str) -> None:
        result = subprocess.run(
            [str(POSTGRES_BIN / "psql"), *self._postgres_address(), "-q", "-v",
             "ON_ERROR_STOP=1", "-d", database, *args],
            capture_output=True, text=True, env=self._env(), timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql on {database} failed: {result.stderr[-2000:]}")

    def _prepare_keystone(self) -> None:
        for what in ("fernet_setup", "credential_setup"):
            self._manage(
                "keystone-manage", "keystone.conf", what, "--keystone-user", "root",
                "--keystone-group", "root",
            )  # fmt: skip
        self._manage("keystone-manage", "keystone.conf", "db_sync")
        self._manage(
            "keystone-manage",
            "keystone.conf",
            "bootstrap",
            "--bootstrap-password",
            self.password,
            "--bootstrap-admin-url",
            self.auth_url,
            "--bootstrap-public-url",
            self.auth_url,
            "--bootstrap-internal-url",
            self.auth_url,
            "--bootstrap-region-id",
            REGION,
        )

    def _prepare_nova_databases(self) -> None:
        def nova_manage(*args: str) -> None:
            self._manage("nova-manage", "nova/nova.conf", *args)

        nova_manage("api_db", "sync")
        nova_manage("cell_v2", "map_cell0", "--database_connection", self._database("nova_cell0"))
        nova_manage(
            "cell_v2",
            "create_cell",
            "--name",
            "cell1",
            "--database_connection",
            self._database("nova"),
            "--transport-url",
            self.transport_url,
        )
        nova_manage("db", "sync")

    def _register_catalogue(self) -> None:
        _wait(
            lambda: requests.get(self.auth_url, timeout=2).ok,
            60,
            "keystone to answer",
        )
        conn = self.connection()
        identity = conn.identity
        entries = (
            ("nova", "compute", self.compute_url),
            ("placement", "placement", self.placement_url),
            ("watcher", "infra-optim", self.watcher_url),
        )
        for name, kind, url in entries:
            service = identity.create_service(name=name, type=kind)
            for interface in ("public", "internal", "admin"):
                identity.create_endpoint(
                    service_id=service.id, interface=interface, url=url, region_id=REGION
                )
        conn.close()

    def _wait_for_computes(self) -> None:
        conn = self.connection()

        def computes_up() -> bool:
            self._check_alive()
            services = {
                s.host: s
                for s in conn.compute.services(binary="nova-compute")
                if s.state == "up" and s.host in COMPUTE_HOSTS
            }
            hypervisors = {h.name for h in conn.compute.hypervisors()}
            return len(services) == len(COMPUTE_HOSTS) and set(COMPUTE_HOSTS) <= hypervisors

        try:
            _wait(computes_up, BRING_UP_TIMEOUT, "both nova-compute services and hypervisors")
        finally:
            conn.close()

    def _wait_for_watcher(self) -> None:
        session = self.session()

        def dummy_goal() -> bool:
            self._check_alive()
            response = session.get(f"{self.watcher_url}/v1/goals", timeout=5)
            return response.ok and any(g["name"] == "dummy" for g in response.json()["goals"])

        _wait(dummy_goal, BRING_UP_TIMEOUT, "Watcher's goals (decision engine sync)")

    def session(self):
        """A keystoneauth1 session as admin."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        return session.Session(auth=v3.Password(**self.auth()))

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if not process.alive():
                raise ServiceDied(f"{name} exited:\n{process.log()[-4000:]}")

    def _database(self, name: str) -> str:
        return f"postgresql+psycopg2://ost@127.0.0.1:{self.ports['postgres']}/{name}"

    # -- configuration files ----------------------------------------------------------------

    def _authtoken(self) -> str:
        return (
            f"www_authenticate_uri = {self.auth_url}\n"
            f"auth_url = {self.auth_url}\n"
            "auth_type = password\n"
            "username = admin\n"
            f"password = {self.password}\n"
            "project_name = admin\n"
            "user_domain_name = Default\n"
            "project_domain_name = Default\n"
            f"region_name = {REGION}\n"
        )

    def _write_configs(self) -> None:
        d = self.workdir
        (d / "fernet-keys").mkdir()
        (d / "credential-keys").mkdir()
        (d / "locks").mkdir()
        (d / "nova").mkdir()
        (d / "keystone.conf").write_text(
            f"[database]\nconnection = {self._database('keystone')}\n"
            f"[fernet_tokens]\nkey_repository = {d / 'fernet-keys'}\n"
            f"[fernet_receipts]\nkey_repository = {d / 'fernet-keys'}\n"
            f"[credential]\nkey_repository = {d / 'credential-keys'}\n"
        )
        placement_dir = d / "placement"
        placement_dir.mkdir()
        (placement_dir / "placement.conf").write_text(
            f"[placement_database]\nconnection = {self._database('placement')}\n"
            "sync_on_startup = true\n"
            "[api]\nauth_strategy = keystone\n"
            f"[keystone_authtoken]\n{self._authtoken()}"
        )
        shutil.copy(VENV / "etc" / "nova" / "api-paste.ini", d / "nova" / "api-paste.ini")
        (d / "nova" / "nova.conf").write_text(
            "[DEFAULT]\n"
            f"transport_url = {self.transport_url}\n"
            "compute_driver = fake.FakeLiveMigrateDriver\n"
            f"state_path = {d / 'nova'}\n"
            f"instances_path = {d / 'nova' / 'instances'}\n"
            "my_ip = 127.0.0.1\n"
            "[api]\nauth_strategy = keystone\n"
            f"[api_database]\nconnection = {self._database('nova_api')}\n"
            f"[database]\nconnection = {self._database('nova')}\n"
            f"[keystone_authtoken]\n{self._authtoken()}"
            f"[placement]\n{self._authtoken()}"
            f"[neutron]\n{self._authtoken()}"
            f"[service_user]\nsend_service_user_token = false\n"
            f"[oslo_concurrency]\nlock_path = {d / 'locks'}\n"
            f"[wsgi]\napi_paste_config = {d / 'nova' / 'api-paste.ini'}\n"
            "[conductor]\nworkers = 1\n"
            "[scheduler]\nworkers = 1\ndiscover_hosts_in_cells_interval = 1\n"
            "[vnc]\nenabled = false\n"
            "[os_vif_linux_bridge]\n"
            "[oslo_messaging_notifications]\ndriver = noop\n"
        )
        for host in COMPUTE_HOSTS:
            (d / "nova" / f"{host}.conf").write_text(f"[DEFAULT]\nhost = {host}\n")
        (d / "watcher.conf").write_text(
            "[DEFAULT]\n"
            f"transport_url = {self.transport_url}\n"
            "[api]\nhost = 127.0.0.1\n"
            f"port = {self.ports['watcher']}\n"
            "workers = 1\n"
            f"[database]\nconnection = {self._database('watcher')}\n"
            f"[keystone_authtoken]\n{self._authtoken()}"
            f"[watcher_clients_auth]\n{self._authtoken()}"
            f"[oslo_concurrency]\nlock_path = {d / 'locks'}\n"
            "[nova_client]\nendpoint_type = publicURL\n"
            "[placement_client]\ninterface = public\n"
        )


def _set_up_digest() -> str:
    """What the cached databases depend on: the set-up code and the services' versions."""
    parts = [
        inspect.getsource(method)
        for method in (
            OpenStackCloud._write_configs,
            OpenStackCloud._prepare_keystone,
            OpenStackCloud._prepare_nova_databases,
            OpenStackCloud._start_postgres,
        )
    ]
    parts.append(ROOT.joinpath("tests", "openstack-requirements.txt").read_text())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


DATABASE_CACHE = VENV / "db-cache" / _set_up_digest()


class ServiceDied(RuntimeError):
    """A service of the control plane exited during the bring-up."""


def _wait(check, timeout: float, what: str):
    """Poll ``check`` like services.wait_until, but give up at once when a service died."""

    def checked():
        try:
            return check()
        except ServiceDied:
            raise
        except Exception:
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = checked()
        if result:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
