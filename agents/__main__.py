"""``python -m agents``: the same as ``pilotfish agent``."""

from agents.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m agents"))
