"""What every HTTP double shares: a real server on a loopback port, in a daemon thread, as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Serve ``handler`` on ``127.0.0.1`` at a free port; each request handler reaches the double as ``double``.

    Subclasses name their handler class in ``request_handler``.
    """

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def request_handler(self) -> type[BaseHTTPRequestHandler]:
        """The handler class; its requests reach this double as ``self.double``."""
        raise NotImplementedError

    def start(self) -> Self:
        bound = type("Handler", (self.request_handler(),), {"double": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), bound)
        # A short poll keeps stop() fast: shutdown() waits for the loop's next poll (0.5 s by default).
        poll = {"poll_interval": 0.05}
        name = f"{type(self).__name__}-double"
        threading.Thread(target=self._httpd.serve_forever, kwargs=poll, name=name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
