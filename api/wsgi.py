"""The gunicorn target: `gunicorn api.wsgi:app`; a bad setting stops start-up with one clear line."""

import sys

from api import create_app
from workers.settings import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"occ gateway: configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR: the master stops instead of respawning
