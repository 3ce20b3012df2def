"""Where images live: input, previews and result of each job, addressed by URL.

``file://`` (default, a shared volume in compose) and ``s3://`` (s3fs) through
fsspec, so that workers on other hosts need only Redis and the bucket.
Keys are always ``<job uuid>/<name>``, the names fixed by the job's kind (shared/kinds):
nothing a client sends becomes a path.  A name may have folders (``frames/00000.png``);
local stores create them.  Whole objects go in and out as bytes (``put``, ``get``); big
ones stream: ``put_file`` uploads a local file, ``open`` returns a binary file object
that reads (and seeks) without loading the object, ``size`` its length in bytes.
"""
from __future__ import annotations

import posixpath
import uuid
from typing import IO

import fsspec


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
        if name and (name.startswith("/") or "\\" in name
                     or any(part in ("", ".", "..") for part in name.split("/"))):
            raise ValueError(f"not a store name: {name!r}")  # names are the kinds', but stay in the job's folder
        return f"{self.root}/{job_id}/{name}"

    def url_of(self, job_id: str, name: str) -> str:
        return f"{self.url}/{job_id}/{name}"

    def put(self, job_id: str, name: str, data: bytes) -> str:
        return self._write(job_id, name, lambda fs, path: fs.pipe_file(path, data))

    def put_file(self, job_id: str, name: str, local_path: str) -> str:
        """Store the local file ``local_path`` as ``name`` without reading it into memory."""
        return self._write(job_id, name, lambda fs, path: fs.put_file(local_path, path))

    def _write(self, job_id: str, name: str, write) -> str:
        path = self._path(job_id, name)
        try:
            if self.local:
                # Write then rename, so a reader never sees half a file.
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                try:
                    write(self.fs, tmp)
                    self.fs.mv(tmp, path)
                except BaseException:
                    if self.fs.exists(tmp):  # a failed write leaves no half file behind
                        self.fs.rm(tmp)
                    raise
            else:
                write(self.fs, path)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot write {name} of job {job_id} to {self.url}: {exc}") from exc
        return self.url_of(job_id, name)

    def open(self, job_id: str, name: str) -> IO[bytes] | None:
        """A binary file object reading ``name`` (seekable: ranges read only what they need),
        or None when there is none.  The caller closes it (``with``)."""
        path = self._path(job_id, name)
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {name} of job {job_id} from {self.url}: {exc}") from exc

    def size(self, job_id: str, name: str) -> int | None:
        """Bytes of ``name``, or None when there is none."""
        path = self._path(job_id, name)
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {name} of job {job_id} from {self.url}: {exc}") from exc

    def exists(self, job_id: str, name: str) -> bool:
        path = self._path(job_id, name)
        try:
            return bool(self.fs.isfile(path))
        except OSError as exc:
            raise StoreError(f"cannot read {name} of job {job_id} from {self.url}: {exc}") from exc

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
