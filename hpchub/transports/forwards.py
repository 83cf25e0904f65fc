"""The SSH pool's port forwards, below the pool: the bytes of every forwarded TCP connection copied
both ways between its socket and its SSH channel by ONE relay thread (``Relay``, a poll loop over
``Link``s, honouring half-closes), and the caps on how many connections a forward and the pool
carry at once (``Cap``). The forwards themselves (hpchub.transports.sshpool.LocalForward and
RemoteForward) open the channels on the pool's connection and hand them to the relay.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence

import paramiko

log = logging.getLogger("hpchub.sshpool")  # one logger for the SSH transport, as before the split

CHUNK = 65536
"""Bytes moved per read from a socket or a channel."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections of one forward (the rest are counted)."""


class Cap:
    """Connections forwarded at once through one forward, within the pool's overall count; refusals
    are logged at most once per REFUSAL_LOG_INTERVAL per forward (a flood must not flood the log)."""

    _lock = threading.Lock()

    def __init__(self, limit: int, total: Cap | None = None):
        self.limit = limit
        self.total = total
        self.used = 0
        self.refused = 0
        self._unlogged = 0
        self._logged_at = -math.inf

    def acquire(self, what: object) -> bool:
        """Take a slot for one connection; False (and logged): over this cap or the pool's."""
        with self._lock:
            full = self if self.used >= self.limit else self.total if (
                self.total is not None and self.total.used >= self.total.limit) else None
            if full is None:
                self.used += 1
                if self.total is not None:
                    self.total.used += 1
                return True
            self.refused += 1
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged_at < REFUSAL_LOG_INTERVAL:
                return False
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        which = "this forward's" if full is self else "the hub's overall"
        log.warning("%s: refused %d forwarded connection(s): %s cap of %d connections at once is reached",
                    what, count, which, full.limit)
        return False

    def release(self) -> None:
        with self._lock:
            self.used -= 1
            if self.total is not None:
                self.total.used -= 1


class Link:
    """One forwarded connection: a TCP socket, its channel, and the bytes read but not yet written."""

    def __init__(self, sock: socket.socket, channel: paramiko.Channel, on_end: Callable[[], None]):
        sock.setblocking(False)
        self.sock = sock
        self.channel = channel
        self.on_end = on_end
        self.sock_fd = sock.fileno()
        self.channel_fd = channel.fileno()
        self.to_channel = bytearray()
        self.to_sock = bytearray()
        self.sock_eof = False  # the socket's peer sent FIN: shut the channel's write side once flushed
        self.channel_eof = False
        self.channel_shut = False
        self.sock_shut = False
        self.sock_hung_up = False  # both directions of the socket are gone (a reset, or both FINs)
        self.stopping = False

    def events(self) -> tuple[int | None, int]:
        """What to poll the socket (None: not at all) and the channel for."""
        sock_events = None if self.sock_hung_up else (
            select.POLLIN if not self.sock_eof and not self.to_channel else 0) | (select.POLLOUT if self.to_sock else 0)
        return sock_events, select.POLLIN if not self.channel_eof and not self.to_sock else 0

    def step(self, sock_revents: int) -> bool:
        """Move what can be moved without blocking; True: the connection is over."""
        sock, channel = self.sock, self.channel
        if self.stopping or sock_revents & (select.POLLERR | select.POLLNVAL):
            return True
        if sock_revents & select.POLLHUP:
            # Nothing more can be written to the socket; what it sent may still be on its way.
            self.sock_hung_up = self.sock_eof = True
            self.to_sock.clear()
            if not self.to_channel:
                return True
        if not self.sock_eof and not self.to_channel:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                pass
            else:
                if data:
                    self.to_channel += data
                else:
                    self.sock_eof = True
        while self.to_channel and channel.send_ready():
            sent = channel.send(bytes(self.to_channel[:CHUNK]))
            if sent <= 0:
                return True  # the channel is closed or sent EOF: nothing more can go that way
            del self.to_channel[:sent]
        if self.sock_eof and not self.to_channel and not self.channel_shut:
            channel.shutdown_write()
            self.channel_shut = True
        if not self.channel_eof and not self.to_sock:
            if channel.recv_ready():
                self.to_sock += channel.recv(CHUNK)
            elif channel.eof_received or channel.closed:
                self.channel_eof = True
        if self.to_sock and not self.sock_hung_up:
            try:
                del self.to_sock[:sock.send(self.to_sock)]
            except BlockingIOError:
                pass
        if self.channel_eof and not self.to_sock and not self.sock_shut:
            if not self.sock_hung_up:
                sock.shutdown(socket.SHUT_WR)
            self.sock_shut = True
        # Done when both sides are shut, or the channel is gone (the connection or the far end):
        # nothing more can be relayed either way.
        return (self.channel_shut and self.sock_shut) or (channel.closed and self.channel_eof and not self.to_sock)

    def end(self) -> None:
        try:
            self.channel.close()
        except Exception:  # a connection already gone
            pass
        self.sock.close()
        self.on_end()



class Relay:
    """Copies bytes both ways between every forwarded TCP socket and its channel in ONE thread (a
    poll loop), honouring half-closes: forwarded connections cost no thread each. The thread starts
    with the first connection; ``stop`` and ``close`` may come from any thread."""

    WINDOW_WAIT_MS = 20  # a channel with no send window gives no event: look again this soon

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: set[Link] = set()
        self._added: list[Link] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self, sock: socket.socket, channel: paramiko.Channel, on_end: Callable[[], None]) -> Link:
        link = Link(sock, channel, on_end)
        with self._lock:
            closed = self._closed
            if not closed:
                self._added.append(link)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="hpchub-ssh-relay", daemon=True)
                    self._thread.start()
        if closed:  # the pool is closed: nobody relays any more
            link.end()
        else:
            self._wake()
        return link

    def stop(self, links: Sequence[Link]) -> None:
        for link in links:
            link.stopping = True
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            started = self._thread is not None
        if started:
            self._wake()
        else:
            self._close_wake_pipe()

    def _wake(self) -> None:
        with self._lock:  # never a write to a closed (and maybe reused) descriptor
            if self._wake_write >= 0:
                try:
                    os.write(self._wake_write, b"x")
                except BlockingIOError:  # already woken: the pipe is full
                    pass

    def _close_wake_pipe(self) -> None:
        with self._lock:
            os.close(self._wake_read)
            os.close(self._wake_write)
            self._wake_read = self._wake_write = -1

    def _run(self) -> None:
        links = self._links
        while True:
            with self._lock:
                links.update(self._added)
                self._added.clear()
                closed = self._closed
            if closed:
                break
            poller = select.poll()
            poller.register(self._wake_read, select.POLLIN)
            by_fd: dict[int, Link] = {}
            waiting_for_window = False
            for link in links:
                sock_events, channel_events = link.events()
                if sock_events is not None:
                    poller.register(link.sock_fd, sock_events)  # 0: still told of a hang-up or an error
                    by_fd[link.sock_fd] = link
                if channel_events:
                    poller.register(link.channel_fd, channel_events)
                    by_fd[link.channel_fd] = link
                waiting_for_window = waiting_for_window or bool(link.to_channel) or link.stopping
            ready = poller.poll(self.WINDOW_WAIT_MS if waiting_for_window else None)
            due = {by_fd[fd] for fd, _ in ready if fd in by_fd}
            due.update(link for link in links if link.to_channel or link.stopping)
            sock_revents = {fd: revents for fd, revents in ready}
            if self._wake_read in sock_revents:
                try:
                    while os.read(self._wake_read, 4096):
                        pass
                except BlockingIOError:
                    pass
            for link in due:
                try:
                    over = link.step(sock_revents.get(link.sock_fd, 0))
                except (OSError, EOFError, paramiko.SSHException):
                    over = True
                if over:
                    links.discard(link)
                    link.end()
        with self._lock:
            links.update(self._added)
            self._added.clear()
        for link in links:
            link.end()
        links.clear()
        self._close_wake_pipe()
