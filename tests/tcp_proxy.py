"""A TCP proxy on loopback that can stop forwarding, for tests of a peer that hangs: while stopped it
still accepts connections and TCP still acknowledges every byte, but nothing reaches the other side
and no answer comes back, as with a hung database server or a firewall that drops a flow."""
from __future__ import annotations

import selectors
import socket
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop_forwarding(self) -> None:
        """Hold every connection, old and new, open and silent."""
        self.forwarding.clear()

    def resume(self) -> None:
        """Forward again, on new connections; the held ones are closed, as a recovered peer's would be."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                if sock is not None:
                    sock.close()
        self.forwarding.set()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self.resume()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self.forwarding.is_set():
            with self._lock:
                self._pairs.append((client, None))    # accepted, never connected onward, never answered
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self._pairs.append((client, server))
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    if not self.forwarding.is_set():
                        continue                      # read nothing more: the kernel buffers, then TCP backs off
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                if not self.forwarding.is_set():
                    self.forwarding.wait(0.2)
        except OSError:
            return
        finally:
            selector.close()
