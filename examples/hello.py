"""The smallest WSGI app: `prefork examples.hello:app --workers 4`."""

import os


def app(environ, start_response):
    body = f"Hello, world! (worker pid {os.getpid()})\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
