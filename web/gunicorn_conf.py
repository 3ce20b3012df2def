"""gunicorn's settings for the web: one place for `dreamq up`, docker-compose.yml and the image.

    gunicorn -c python:web.gunicorn_conf --bind 127.0.0.1:8000 'web:create_app()'

Command-line options given after ``-c`` override these (the bind address, ``--workers``).
"""
# gevent: an open event stream or a slow client costs a greenlet, not one of a few threads
# (docs/RELIABILITY.md, "Hostile traffic"); the worker adds a deadline on request bodies.
worker_class = "web.gevent_worker.DeadlineGeventWorker"
workers = 2
worker_connections = 1000
keepalive = 5  # headers must arrive within this many seconds, too
timeout = 120
graceful_timeout = 10
accesslog = "-"
# No request-count recycling (max_requests): it tripped every process in the same burst, each
# then drained its event streams for graceful_timeout, and none accepted meanwhile.  20,000
# mixed requests showed no growth to recycle away (docs/RELIABILITY.md, "Second wave").
max_requests = 0
