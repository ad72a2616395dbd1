"""`rnnlm serve`: models loaded once behind an HTTP JSON API, with a playground page.

    client --JSON--> FastAPI route (validate, tokenize, bound) --> Batcher (per model and kind)
           <--JSON-- ................................ one compiled call for many requests

`schemas` are the request bodies, `limits` bounds every request, `served` holds the loaded
models, `batcher` merges concurrent requests, `app` holds the routes, `errors` the refusals
(one-line 4xx), `server` runs uvicorn (drains in-flight requests on SIGTERM). FastAPI and
uvicorn come from the optional `rnnlm[serve]` extra; nothing imports them until a service is
started.
"""
