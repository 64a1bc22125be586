"""Request class that streams uploaded files to the staging directory, never to memory."""

from __future__ import annotations

import tempfile
from typing import IO

from flask import Request, current_app


class StagingRequest(Request):
    """Multipart file parts are written to STORAGE_DIR/staging (same filesystem as the nodes)."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        staging = current_app.extensions["occ"].settings.staging_dir
        # delete=True: the temp file vanishes when closed, including on errors
        return tempfile.NamedTemporaryFile(dir=staging, prefix=".upload-", delete=True)
