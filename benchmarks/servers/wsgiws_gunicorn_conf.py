"""gunicorn settings for the benchmark's wsgiws servers: the hook of the recommended
configuration (``wsgiws.gunicorn_conf``: the drain, and under ``-k gevent`` WebSockets
that leave gunicorn's request at their 101), without its access log, which the floor
and the other peers do not write either. Everything else comes from the command line.
"""


def post_worker_init(worker):
    # Imported here, once the app is loaded: the benchmark may serve another checkout
    # (--wsgiws, --fanout-baseline), and this must be that checkout's wsgiws.
    from wsgiws.gunicorn import post_worker_init as hook

    hook(worker)
