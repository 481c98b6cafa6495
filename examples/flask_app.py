"""A Flask app, unmodified, served by prefork.

    pip install flask
    prefork examples.flask_app:app --workers 4 --bind 127.0.0.1:8000

Nothing here knows about prefork: it is the Flask you would run under gunicorn. The routes
cover what a real app does (and what tests/test_frameworks.py checks):

    GET  /                 a page, with the pid of the worker that answered
    GET  /form, POST /form an HTML form and its submission (urlencoded)
    POST /upload           a multipart file upload: replies with its size and sha256
    GET  /stream?n=5       a streamed response (chunked: no Content-Length up front)
    GET  /static/<file>    static files (examples/static/): Flask's send_file hands the
                           open file to wsgi.file_wrapper, and prefork sends it with sendfile(2)

In production, put nginx in front for static files and TLS (README: Behind nginx).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

from flask import Flask, Response, render_template_string, request, stream_with_context

app = Flask(__name__)  # static files from examples/static/, at /static/

FORM = """<!doctype html>
<title>prefork + Flask</title>
<form method="post" action="/form">
  <label>Name <input name="name"></label>
  <button>Send</button>
</form>
{% if name %}<p>Hello, {{ name }}!</p>{% endif %}
"""


@app.get("/")
def index() -> str:
    return f"Hello from Flask, worker pid {os.getpid()}\n"


@app.route("/form", methods=["GET", "POST"])
def form() -> str:
    return render_template_string(FORM, name=request.form.get("name", ""))


@app.post("/upload")
def upload() -> dict[str, object]:
    file = request.files["file"]
    data = file.read()
    return {"filename": file.filename, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/stream")
def stream() -> Response:
    count = request.args.get("n", 5, type=int)

    @stream_with_context
    def lines() -> Iterator[str]:
        for i in range(count):
            yield f"line {i} at {time.monotonic():.3f}\n"

    return Response(lines(), mimetype="text/plain")


if __name__ == "__main__":
    from prefork import serve

    serve(app, bind=["127.0.0.1:8000"], workers=2)
