"""``python -m controlplane`` runs the ``pilotfish`` command line."""

from controlplane.cli import main

raise SystemExit(main())
