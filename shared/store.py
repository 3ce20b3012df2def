"""Where images live: input, previews and result of each job, addressed by URL.

``file://`` (default, a shared volume in compose) and ``s3://`` (s3fs) through
fsspec, so that workers on other hosts need only Redis and the bucket.
Keys are always ``<job uuid>/<fixed name>``: nothing a client sends becomes a path.
"""
from __future__ import annotations

import uuid

import fsspec

INPUT, PREVIEW, RESULT = "input.png", "preview.png", "result.png"


class StoreError(RuntimeError):
    """The store could not be written or read (disk full, permissions, bucket gone)."""


def open_store(settings) -> "Store":
    """The store the settings name (``DREAMQ_STORE_URL``, ``DREAMQ_S3_ENDPOINT_URL``)."""
    options = {}
    if settings.s3_endpoint_url and settings.store.startswith("s3://"):
        options["endpoint_url"] = settings.s3_endpoint_url
    return Store(settings.store, **options)


class Store:
    def __init__(self, url: str, **storage_options):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        self.local = self.fs.protocol in ("file", "local") or "file" in self.fs.protocol

    def _path(self, job_id: str, name: str) -> str:
        uuid.UUID(job_id)  # a job id is a UUID, nothing else reaches the file system
        return f"{self.root}/{job_id}/{name}"

    def url_of(self, job_id: str, name: str) -> str:
        return f"{self.url}/{job_id}/{name}"

    def put(self, job_id: str, name: str, data: bytes) -> str:
        path = self._path(job_id, name)
        try:
            if self.local:
                # Write then rename, so a reader never sees half a PNG.
                self.fs.makedirs(f"{self.root}/{job_id}", exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                try:
                    self.fs.pipe_file(tmp, data)
                    self.fs.mv(tmp, path)
                except BaseException:
                    if self.fs.exists(tmp):  # a failed write leaves no half file behind
                        self.fs.rm(tmp)
                    raise
            else:
                self.fs.pipe_file(path, data)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot write {name} of job {job_id} to {self.url}: {exc}") from exc
        return self.url_of(job_id, name)

    def get(self, job_id: str, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(job_id, name))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {name} of job {job_id} from {self.url}: {exc}") from exc

    def delete(self, job_id: str) -> None:
        try:
            self.fs.rm(f"{self.root}/{self._path(job_id, '')[len(self.root) + 1:].rstrip('/')}", recursive=True)
        except FileNotFoundError:
            pass
