"""Power through Redfish, the standard BMC API: ComputerSystem.Reset (On, ForceOff,
GracefulShutdown) and the system's PowerState, with sushy (OpenStack Ironic's Redfish client,
the optional extra ``redfish``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from neat_exporter.errors import innermost_cause
from neat_exporter.globalmanager.power.base import (
    DEFAULT_TIMING,
    SYSTEM_CLOCK,
    Clock,
    PowerError,
    PowerState,
    PowerTiming,
    checked_host_name,
    switch,
)

SHUTDOWN_RESET_TYPES = {"graceful": "GracefulShutdown", "force": "ForceOff"}
REDFISH_STATES = {"On": PowerState.ON, "Off": PowerState.OFF}


@dataclass(frozen=True)
class RedfishTarget:
    """One host's BMC: its base URL (``https://bmc.example``), the ComputerSystem's id under
    /redfish/v1/Systems/, credentials and how to switch it off."""

    url: str
    system_id: str
    username: str
    password: str = field(repr=False)
    verify: bool | str = True
    """Check the BMC's TLS certificate (True), against a CA bundle file (a path), or not."""
    shutdown: str = "graceful"
    timing: PowerTiming = DEFAULT_TIMING


def _sushy() -> Any:
    try:
        import sushy
    except ImportError:
        raise PowerError(
            "the Redfish backend needs sushy: pip install 'neat-exporter[redfish]'"
        ) from None
    return sushy


class RedfishPower:
    name = "redfish"

    def __init__(
        self,
        targets: Mapping[str, RedfishTarget],
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.targets = dict(targets)
        self.clock = clock

    def power_off(self, host: str) -> None:
        target = self._target(host)
        reset = SHUTDOWN_RESET_TYPES[target.shutdown]
        self._switch(host, target, PowerState.OFF, reset)

    def power_on(self, host: str) -> None:
        self._switch(host, self._target(host), PowerState.ON, "On")

    def power_state(self, host: str) -> PowerState:
        target = self._target(host)
        return self._call(host, target, _state)

    def _target(self, host: str) -> RedfishTarget:
        target = self.targets.get(checked_host_name(host))
        if target is None:
            raise PowerError(f"{host}: no Redfish BMC configured for this host")
        return target

    def _switch(self, host: str, target: RedfishTarget, wanted: PowerState, reset: str) -> None:
        def session(system) -> None:
            switch(
                host,
                wanted,
                lambda: _state(system, refresh=True),
                lambda: system.reset_system(_sushy().ResetType(reset)),
                target.timing,
                self.clock,
            )

        self._call(host, target, session)

    def _call(self, host: str, target: RedfishTarget, work: Callable[[Any], Any]) -> Any:
        """``work(system)`` on a fresh connection to the host's BMC, sushy's errors as one-line
        PowerErrors."""
        sushy = _sushy()
        try:
            conn = _connect(target)
            return work(conn.get_system(f"/redfish/v1/Systems/{target.system_id}"))
        except sushy.exceptions.AccessError:
            raise PowerError(
                f"{host}: the Redfish BMC at {target.url} refused the credentials"
            ) from None
        except sushy.exceptions.ConnectionError as error:
            cause = innermost_cause(error.__context__ or error)
            raise PowerError(
                f"{host}: cannot reach the Redfish BMC at {target.url}: {_one_line(cause)}"
            ) from None
        except sushy.exceptions.ResourceNotFoundError:
            raise PowerError(
                f"{host}: the Redfish BMC at {target.url} has no system {target.system_id!r}"
            ) from None
        except sushy.exceptions.SushyError as error:
            raise PowerError(f"{host}: Redfish BMC at {target.url}: {_one_line(error)}") from None


def _connect(target: RedfishTarget) -> Any:
    sushy = _sushy()
    timing = target.timing
    return sushy.Sushy(
        target.url.rstrip("/"),
        auth=sushy.auth.SessionOrBasicAuth(target.username, target.password),
        verify=target.verify,
        read_timeout=timing.request_timeout,
        connect_timeout=timing.request_timeout,
        # One try: the caller polls, and a BMC that is down should say so at once.
        server_side_retries=1,
        server_side_retries_delay=min(1.0, timing.poll_interval),
    )


def _state(system: Any, refresh: bool = False) -> PowerState:
    if refresh:
        system.refresh(force=True)
    value = system.power_state
    return REDFISH_STATES.get(getattr(value, "value", value), PowerState.UNKNOWN)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]
