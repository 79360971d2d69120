from neat_exporter.cli import main

raise SystemExit(main())
