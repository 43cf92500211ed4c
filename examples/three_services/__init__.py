"""A sample system of three services: auth owns the users, backend caches them, frontend pushes changes.

See docs/three-services.md. The services run as processes (``python -m examples.three_services.serve``
and ``python -m examples.three_services.frontend``); :mod:`examples.three_services.target` drives them.
"""
