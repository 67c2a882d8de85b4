# A mod_wsgi-style script: loadable by path although it does not end in .py.
import json
import sys


def application(environ, start_response):
    body = json.dumps({"name": "site.wsgi", "argv": sys.argv, "module": __name__}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
