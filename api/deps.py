"""Accessors views use: the process runtime (settings, store, Redis, jobs)."""

from __future__ import annotations

from flask import current_app

from workers.runtime import Runtime


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["occ"]
    return rt
