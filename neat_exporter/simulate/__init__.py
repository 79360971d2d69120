"""Fleet simulation of VM consolidation on PlanetLab traces, reproducing CloudSim 3.0.3.

from neat_exporter.simulate import parse_policy, simulate_day
result = simulate_day(percent_traces, parse_policy("lr-mmt-1.2"), day="20110303")
"""

from neat_exporter.simulate.accounting import DayResult
from neat_exporter.simulate.fleet import FleetSpec, simulate_day
from neat_exporter.simulate.policies import PAPER_POLICIES, Policy, parse_policy

__all__ = ["PAPER_POLICIES", "DayResult", "FleetSpec", "Policy", "parse_policy", "simulate_day"]
