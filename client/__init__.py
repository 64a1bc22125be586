"""occ-client: a command-line client and small library for the OCC gateway (see client/cli.py)."""
