"""`neat-exporter tune`: multi-objective search of consolidation policies by fleet simulation.

space (what is searched) → study (Optuna trials, each a simulation) → report (front, choice).
"""
