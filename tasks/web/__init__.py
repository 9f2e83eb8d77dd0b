"""The review web app (``shotline review serve``): the queue in a browser and the HTTP API.

A front to the same catalog functions the CLI uses (``catalog.review``); no review logic of
its own. Modules: ``app`` builds it, ``state`` holds what requests share, ``auth`` logs in and
checks sessions, CSRF and bearer tokens, ``pages`` renders HTML, ``api`` speaks JSON,
``thumbs`` caches the 384-px WebP thumbnails.
"""
