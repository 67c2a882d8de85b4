"""A small real Flask application (tests/test_fw_flask.py): a form post, a streamed
response and ``send_file`` of the file named by ``GM_FLASK_FILE``."""

import os

from flask import Flask, Response, request, send_file, stream_with_context

app = Flask(__name__)


@app.get("/")
def home():
    return "hello from flask"


@app.post("/form")
def form():
    return {
        "name": request.form["name"],
        "tags": request.form.getlist("tag"),
        "content_type": request.mimetype,
    }


@app.get("/stream")
def stream():
    count = int(request.args.get("n", "5"))

    def generate():
        # stream_with_context keeps the request available while the body is sent.
        for i in range(count):
            yield f"{request.path} {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/file")
def file():
    return send_file(os.environ["GM_FLASK_FILE"], mimetype="application/octet-stream", etag=False)
