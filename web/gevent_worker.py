"""gunicorn's gevent worker with a deadline on reading request bodies.

Why gevent: an event stream (/api/v1/jobs/<id>/events) waits for minutes; as a greenlet it costs a
few kilobytes, not one of a handful of threads, so open streams cannot starve /healthz or submits
(docs/RELIABILITY.md, "Hostile traffic").  gunicorn's gevent worker already gives up on headers not
complete within --keep-alive seconds, but the body is read by the app with no limit: a client that
announces 19 MB and sends 5 bytes a second would hold its connection for days.  Here the whole body
must arrive within BODY_S, else the app sees a 408.

    gunicorn --worker-class web.gevent_worker.DeadlineGeventWorker ...
"""
from __future__ import annotations

import os
import time

import gevent
from gunicorn.workers.ggevent import GeventWorker
from werkzeug.exceptions import RequestTimeout

# 20 MB at 1 Mbit/s takes ~170 s; slower uploads than that are not worth a connection.
BODY_S = float(os.environ.get("DREAMQ_BODY_TIMEOUT_S", "180"))


class BodyTimeout(RequestTimeout):
    description = "the request body did not arrive in time"


class _DeadlineBody:
    """gunicorn's request body, whose reads all together must end by `deadline`.

    The deadline is for reading the body, nothing else: once the body is read to its end (or has
    none), reads need no deadline.  gunicorn reads what is left of a body after the response, to
    find the next request on a kept-alive connection; an event stream that outlived the deadline
    used to turn that empty read into a 408 and an unsolicited 500 on the connection.
    """

    def __init__(self, body, deadline: float):
        self._body, self._deadline = body, deadline
        self._ended = False
        self.timed_out = False

    def _nothing_left(self) -> bool:
        if self._ended:
            return True
        reader = getattr(self._body, "reader", None)  # a Content-Length body counts down what is left
        buffered = getattr(self._body, "buf", None)
        return getattr(reader, "length", None) == 0 and (buffered is None or buffered.tell() == 0)

    def _call(self, method, *args):
        if self._nothing_left():
            return method(*args)
        left = self._deadline - time.monotonic()
        try:
            if left <= 0:
                raise BodyTimeout()
            with gevent.Timeout(left, BodyTimeout()):
                data = method(*args)
        except BodyTimeout:
            self.timed_out = True
            raise
        if not data and not (args and args[0] == 0):  # the end of the body (a read of 0 bytes is not)
            self._ended = True
        return data

    def read(self, *args):
        return self._call(self._body.read, *args)

    def readline(self, *args):
        return self._call(self._body.readline, *args)

    def readlines(self, *args):
        return self._call(self._body.readlines, *args)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name):
        return getattr(self._body, name)


class DeadlineGeventWorker(GeventWorker):
    def handle_request(self, listener_name, req, sock, addr):
        req.body = body = _DeadlineBody(req.body, time.monotonic() + BODY_S)
        super().handle_request(listener_name, req, sock, addr)
        if body.timed_out:  # the rest of that body is not worth reading: close the connection
            raise StopIteration("request body timed out")
