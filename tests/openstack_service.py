"""Runs one OpenStack service of the test control plane; executed by the services' own venv.

    python openstack_service.py wsgi MODULE PORT [--nova-fixtures] [-- ARGS...]
        serve MODULE's ``application`` (Keystone, Placement, Nova's API) on 127.0.0.1:PORT with
        the standard library's threaded WSGI server; configuration comes from the usual
        OS_*_CONFIG_DIR / OS_*_CONFIG_FILES environment variables
    python openstack_service.py main MODULE [--nova-fixtures] -- ARGS...
        run MODULE's ``main()`` with ARGS as its command line (nova-conductor, nova-compute, ...)

``--nova-fixtures`` puts Nova's own functional-test stand-ins for Glance and Neutron
(``nova.tests.fixtures.GlanceFixture`` and ``NeutronFixture``, shipped in the nova wheel) in
place before the service starts: Nova only needs those neighbours to exist, and every process
gets the same fixed image catalogue. Servers are booted with ``networks: none``, so no process
needs another's Neutron ports.

This file is not part of the test suite: tests/openstack_cloud.py starts it.
"""

from __future__ import annotations

import importlib
import sys


class _FixtureHost:
    """What Nova's fixtures expect of a test case: stub_out, flags, useFixture."""

    def useFixture(self, fixture):
        fixture.setUp()
        return fixture

    def stub_out(self, target: str, replacement) -> None:
        import fixtures

        self.useFixture(fixtures.MonkeyPatch(target, replacement))

    def flags(self, group: str | None = None, **overrides) -> None:
        from oslo_config import cfg

        for name, value in overrides.items():
            cfg.CONF.set_override(name, value, group)


def _install_nova_fixtures() -> None:
    from nova.tests.fixtures import GlanceFixture, NeutronFixture

    host = _FixtureHost()
    host.useFixture(GlanceFixture(host))
    host.useFixture(NeutronFixture(host))


def _serve(module_name: str, port: int, argv: list[str], nova_fixtures: bool) -> None:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    sys.argv = [module_name, *argv]  # the apps parse the command line for oslo.config options
    application = importlib.import_module(module_name).application
    if nova_fixtures:
        _install_nova_fixtures()

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):  # the services log requests themselves
            pass

    server = make_server("127.0.0.1", port, application, Server, QuietHandler)
    server.serve_forever()


def _main(module_name: str, argv: list[str], nova_fixtures: bool) -> None:
    module = importlib.import_module(module_name)  # nova.cmd patches threading/eventlet first
    if nova_fixtures:
        _install_nova_fixtures()
    sys.argv = [module_name, *argv]
    sys.exit(module.main())


if __name__ == "__main__":
    args = sys.argv[1:]
    rest: list[str] = []
    if "--" in args:
        split = args.index("--")
        args, rest = args[:split], args[split + 1 :]
    use_fixtures = "--nova-fixtures" in args
    args = [arg for arg in args if arg != "--nova-fixtures"]
    if args[0] == "wsgi":
        _serve(args[1], int(args[2]), rest, use_fixtures)
    elif args[0] == "main":
        _main(args[1], rest, use_fixtures)
    else:
        sys.exit(f"unknown command {args[0]!r}: wsgi or main")
