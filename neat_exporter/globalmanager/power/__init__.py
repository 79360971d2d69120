"""Host power for the global manager: Redfish, IPMI (ipmitool) or command templates."""

from neat_exporter.globalmanager.power.base import PowerBackend, PowerError, PowerState
from neat_exporter.globalmanager.power.config import build_power_backend

__all__ = ["PowerBackend", "PowerError", "PowerState", "build_power_backend"]
