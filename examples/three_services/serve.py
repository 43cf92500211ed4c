"""Runs auth or the backend as an HTTP service: ``python -m examples.three_services.serve auth|backend
[--host H] [--port P] ...``; prints ``READY http://HOST:PORT`` once it listens.

gevent's WSGI server, with the standard library patched first, so that every request, the
backend's subscriber and the database and Redis calls are cooperative greenlets in one process.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

from examples.three_services import common  # noqa: E402

SERVICES = ("auth", "backend")


class NoDelayHandler(WSGIHandler):
    """pywsgi sends a response's headers and body in separate writes: with Nagle's algorithm on,
    the body waits for the client's delayed ACK, 40 ms on every keep-alive request."""

    def handle(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SERVICES:
        print(f"usage: python -m examples.three_services.serve {{{','.join(SERVICES)}}} ...", file=sys.stderr)
        return 2
    name = args[0]
    module = importlib.import_module(f"examples.three_services.{name}")
    parser = argparse.ArgumentParser(prog=f"three_services {name}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    module.add_arguments(parser)
    parsed = parser.parse_args(args[1:])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"{name}: %(levelname)s %(message)s")
    service = module.make(parsed)
    # log=None: an access log line per request would cost more than the request itself.
    server = WSGIServer(
        (parsed.host, parsed.port), common.json_app(service.routes()), log=None, handler_class=NoDelayHandler
    )
    server.start()
    common.announce(f"http://{parsed.host}:{server.server_port}")
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    stop.wait()
    server.stop(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
