"""hpchub.transports.forwards alone: the relay and the caps, with a socket standing in for the SSH
channel (the real forwards through sshd are in test_sshpool and test_e2e_ssh)."""

from __future__ import annotations

import socket
import threading

from hpchub.transports.forwards import Cap, Relay


class SocketChannel:
    """The part of paramiko.Channel the relay uses, over one end of a socket pair."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock, self.closed, self.eof_received = sock, False, False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_ready(self) -> bool:
        return True

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv_ready(self) -> bool:
        try:
            peeked = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        self.eof_received = self.eof_received or not peeked
        return bool(peeked)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_relay_copies_both_ways_and_passes_each_half_close_on():
    client, hub_side = socket.socketpair()
    channel_end, far_end = socket.socketpair()
    ended = threading.Event()
    relay = Relay()
    try:
        relay.add(hub_side, SocketChannel(channel_end), ended.set)
        client.sendall(b"x" * 200_000)
        client.shutdown(socket.SHUT_WR)  # the browser is done sending: the far end sees EOF
        assert read_all(far_end) == b"x" * 200_000
        far_end.sendall(b"answer")  # the other way still works after the half-close
        far_end.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"answer"
        assert ended.wait(5)
    finally:
        relay.close()
        client.close()
        far_end.close()


def test_a_forward_over_its_cap_or_the_pools_refuses_and_a_release_makes_room():
    pool = Cap(3)
    forward = Cap(2, pool)
    other = Cap(5, pool)
    assert forward.acquire("f") and forward.acquire("f") and not forward.acquire("f")  # its own cap
    assert other.acquire("o") and not other.acquire("o")  # the pool's cap of 3
    assert (forward.refused, other.refused, pool.used) == (1, 1, 3)
    forward.release()
    assert other.acquire("o") and pool.used == 3
