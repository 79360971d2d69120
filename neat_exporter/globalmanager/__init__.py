"""The global manager: Neat's ``PUT /`` protocol answered with live migrations and host power.

Data flow: fleet (Prometheus) → planning (pure, Neat's execute_underload/execute_overload) →
service (locks, caps, cooldown, opt-outs, state, audit) → executors (migrations) and power
backends (hosts off and on). Nothing below this package imports it.
"""
