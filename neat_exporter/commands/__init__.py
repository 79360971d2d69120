"""One module per `neat-exporter` subcommand: its arguments and its entry point, nothing more."""
