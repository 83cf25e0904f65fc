"""The SSH transport's engine: one pooled paramiko connection per login node and remote account,
carrying every command as its own channel, plus the port forwards of the tunnel feature.

- argv stays argv: the remote command line is ``shlex.join(argv)`` for the remote account's POSIX
  shell; ``input`` goes to the command's stdin, which is then closed.
- Host keys come only from the target's known_hosts file; an unknown or changed key is refused
  (HostKeyRefused, naming host:port and the SHA256 fingerprint), never added. Only the target's
  key file authenticates: no agent, no ~/.ssh keys of the hub.
- A dead connection is dropped and made again on the next call; failed logins back off
  exponentially, and calls during a backoff fail at once with LoginUnreachable.
- A connection that ran no command for its idle timeout is closed (each is also an sshd on the
  login node), unless a port forward uses it; the next call logs in again.
- What a command writes is kept up to a limit per call; beyond it the command is stopped.
- paramiko blocks; all of its calls that wait on the network run in the pool's threads, never on
  the event loop. Forwarded TCP connections are all pumped by one relay thread (a poll loop), not a
  thread each, and are capped per forward and over the pool: beyond a cap a connection is refused.
- A remote forward is *held* only while the login node has granted it on the live connection. A
  re-request the login node refuses (after a reconnect, someone else took the port) leaves it dead:
  it is asked for again with backoff, and ``RemoteForward.ensure_held`` refuses to hand it out.

The relay that copies the forwarded connections' bytes, and the caps on them, are in
hpchub.transports.forwards. Over 500 lines because the rest is one connection's life: logging in,
commands as channels, the forwards that ride on it (held across reconnects, kept open past the idle
timeout) and closing it; splitting it would spread one state machine over several files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paramiko
from paramiko.common import OPEN_FAILED_CONNECT_FAILED, cMSG_CHANNEL_REQUEST

from ..core import metrics
from .forwards import CHUNK, Cap, Link, Relay
from .runner import DEFAULT_MAX_OUTPUT, CommandError, CommandResult, CommandTimeout, OutputTooLarge

log = logging.getLogger("hpchub.sshpool")

CONNECT_TIMEOUT = 15.0
"""Seconds for TCP connect, SSH handshake and authentication of one login."""
KEEPALIVE = 15
"""Seconds of silence after which the connection sends a keepalive; with TCP_USER_TIMEOUT below a
dead peer (unacknowledged data) breaks the connection within about a minute."""
TCP_USER_TIMEOUT_MS = 45_000
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
MAX_SESSIONS = 8
"""Session channels open at once per connection. OpenSSH's default MaxSessions is 10, but sshd
counts a closed session until its main loop collects it: the slack keeps refusals rare."""
CHANNEL_OPEN_TIMEOUT = 15.0
IDLE_TIMEOUT = 300.0
"""Seconds after which a connection that ran no command (and carries no port forward) is closed."""
MAX_FORWARDED = 1024
"""Forwarded TCP connections open at once over the whole pool (all tunnels and reverse forwards);
beyond it a new one is refused. Each costs FDS_PER_FORWARDED descriptors."""
MAX_PER_LOCAL_FORWARD = 64
"""Connections at once through one local forward (one server's tunnel: a browser's HTTP and websockets)."""
MAX_PER_REMOTE_FORWARD = 512
"""Connections at once through one remote forward (a cluster's reverse forward: every job's calls to the hub)."""
FDS_PER_FORWARDED = 3
"""Descriptors one forwarded connection holds: its socket and the pipe paramiko polls a channel by."""


def descriptors_needed(max_forwarded: int = MAX_FORWARDED) -> int:
    """The open-file limit a hub forwarding ``max_forwarded`` connections at once should have: theirs,
    plus 1024 for everything else (the database, the proxy's and users' connections, SSH, logs)."""
    return max_forwarded * FDS_PER_FORWARDED + 1024


def descriptor_limit_problem(max_forwarded: int = MAX_FORWARDED) -> str | None:
    """Why this process's open-file limit is too low for the forward caps; None: it is not."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = descriptors_needed(max_forwarded)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (f"the open-file limit is {soft} (soft), below the {needed} that {max_forwarded} forwarded connections "
            f"at once ({FDS_PER_FORWARDED} descriptors each) and the rest of the hub need: at the limit every "
            "user's connections fail; set LimitNOFILE={needed} or more in the hub's systemd unit "
            "(examples/hpchub-hub.service)")


@dataclass(frozen=True)
class SSHTarget:
    """A login node and the remote account to log in as, with the files that authenticate it, and
    how long its connection may stay idle (None: the pool's default; not part of its identity)."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    idle_timeout: float | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class LoginUnreachable(CommandError):
    """The login node could not be used (network, authentication, backoff): nothing was run."""

    def __init__(self, argv: Sequence[str], target: SSHTarget, reason: str, operation: str | None = None):
        self.target = target
        self.operation = operation or f"command `{shlex.join(argv)}`"
        super().__init__(argv, None, reason=reason)

    def _describe(self) -> str:
        return f"{self.operation} not run: {self.reason}"


class HostKeyRefused(LoginUnreachable):
    """The login node's host key is not the one in known_hosts (unknown or changed)."""


class ConnectionLost(CommandError):
    """The connection broke while the command ran: it may or may not have run (to the end)."""


class ForwardRefused(LoginUnreachable):
    """The login node refused a remote forward the hub had (the port may be someone else's now)."""


class _LoginFailure(Exception):
    def __init__(self, reason: str, host_key: bool = False):
        super().__init__(reason)
        self.host_key = host_key


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _LoginFailure(
            f"host key refused: {hostname} offers {key.get_name()} {key.fingerprint}, which is not in "
            f"{self.known_hosts} (unknown host; hpchub never adds host keys: add the login node's key there)",
            host_key=True)


def _host_key_name(target: SSHTarget) -> str:
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"


def _connect_blocking(target: SSHTarget) -> paramiko.SSHClient:
    """Log in to ``target`` (blocking; run in a thread). Raises _LoginFailure with the reason."""
    try:
        key = paramiko.PKey.from_path(target.key_file)
    except (OSError, paramiko.SSHException, ValueError) as error:
        raise _LoginFailure(f"cannot use key file {target.key_file}: {error}") from None
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(target.known_hosts)
    except OSError as error:
        raise _LoginFailure(f"cannot read known_hosts {target.known_hosts}: {error}", host_key=True) from None
    client.set_missing_host_key_policy(_RefuseUnknownHostKey(target.known_hosts))
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((target.host, target.port), timeout=CONNECT_TIMEOUT)
        _tune_socket(sock)
        client.connect(
            target.host, port=target.port, username=target.user, pkey=key, sock=sock,
            timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
            channel_timeout=CHANNEL_OPEN_TIMEOUT, allow_agent=False, look_for_keys=False)
    except _LoginFailure:
        client.close()
        raise
    except paramiko.BadHostKeyException as error:
        client.close()
        raise _LoginFailure(
            f"host key refused: {_host_key_name(target)} offers {error.key.get_name()} {error.key.fingerprint}, "
            f"but {target.known_hosts} has {error.expected_key.get_name()} {error.expected_key.fingerprint} "
            "(the host key CHANGED: a different machine, or a reinstalled login node)", host_key=True) from None
    except paramiko.AuthenticationException as error:
        client.close()
        raise _LoginFailure(f"authentication as {target.user} with {target.key_file} failed: {error}") from None
    except (OSError, EOFError, paramiko.SSHException) as error:
        client.close()
        if sock is not None:
            sock.close()
        raise _LoginFailure(str(error) or type(error).__name__) from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(KEEPALIVE)
    return client


def _tune_socket(sock: socket.socket) -> None:
    """No Nagle delay (small request/reply messages: without it each command waits ~40 ms for a
    delayed ACK), and TCP keepalive and a user timeout: a peer that vanished breaks the connection."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE), ("TCP_KEEPINTVL", KEEPALIVE), ("TCP_KEEPCNT", 3),
                          ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _wait_readable(sources: Sequence[Any]) -> list[Any]:
    """The sockets or channels (anything with ``fileno``) that are readable, closed or failed;
    blocks until one is. poll, not select: a busy hub may have descriptors above 1024."""
    poller = select.poll()
    by_fd = {}
    for source in sources:
        by_fd[source.fileno()] = source
        poller.register(source.fileno(), select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll()]


class _TransportGone(Exception):
    """The channel could not be opened because the connection is dead: nothing was run."""


def _transport_error(transport: paramiko.Transport) -> str:
    error = transport.get_exception()
    return str(error) or type(error).__name__ if error is not None else "connection closed"


def _open_channel(transport: paramiko.Transport, kind: str, dest: tuple[str, int] | None = None,
                  origin: tuple[str, int] | None = None) -> paramiko.Channel:
    try:
        return transport.open_channel(kind, dest, origin, timeout=CHANNEL_OPEN_TIMEOUT)
    except (paramiko.SSHException, EOFError, OSError) as error:
        if not transport.is_active():
            raise _TransportGone(str(error) or "connection closed") from None
        raise


def _send_eof(channel: paramiko.Channel) -> None:
    """Close the remote command's stdin (``shutdown_write``, but the EOF is sent under the channel's
    lock). paramiko sends it after releasing the lock: a command that ends at once can have its
    transport thread answer the login node's CLOSE in between, and OpenSSH drops the whole
    connection for an EOF after CLOSE ("ieof packet referred to nonexistent channel")."""
    with channel.lock:
        if channel.closed:  # the command ended and paramiko sent EOF with its CLOSE
            return
        message = channel._send_eof()
        if message is not None:
            # Holding the lock while sending: paramiko's CLOSE for this channel waits until the EOF is out.
            channel.transport._send_user_message(message)


class _RemoteCommand:
    """One command on its own session channel (``run`` blocks; ``abort`` may come from another thread)."""

    def __init__(self, transport: paramiko.Transport, command: str, input: str | None, max_output: int):
        self.transport = transport
        self.command = command
        self.input = input
        self.max_output = max_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow: str | None = None
        """The stream ("stdout" or "stderr") that went over ``max_output``: the command was stopped."""
        self.channel: paramiko.Channel | None = None
        self._aborted = threading.Event()

    def run(self) -> int | None:
        """The exit status; None when the channel closed without one (connection lost) or when an
        output went over ``max_output`` (``overflow``; the command was stopped as on an abort)."""
        channel = self._started_session()
        if channel is None:
            return None
        try:
            if self.input is not None:
                channel.sendall(self.input.encode())
            _send_eof(channel)
            while True:
                _wait_readable([channel])
                # Checked per chunk: a fast writer keeps recv_ready true as long as it writes.
                while channel.recv_ready():
                    if not self._keep("stdout", self.stdout, channel.recv(CHUNK)):
                        return None
                while channel.recv_stderr_ready():
                    if not self._keep("stderr", self.stderr, channel.recv_stderr(CHUNK)):
                        return None
                if (channel.eof_received or channel.closed) and not (channel.recv_ready()
                                                                     or channel.recv_stderr_ready()):
                    break
            channel.status_event.wait()  # set by exit-status or by the close of the channel
            # -1: closed without exit-status (connection lost, or exit-signal, which paramiko ignores)
            return None if channel.exit_status == -1 else channel.exit_status
        finally:
            channel.close()

    def _keep(self, stream: str, kept: bytearray, data: bytes) -> bool:
        """Add ``data`` to ``kept``; over ``max_output``: keep the limit's bytes, stop the command as
        an abort does (TERM and close) and return False."""
        kept += data[:self.max_output - len(kept) + 1]
        if len(kept) <= self.max_output:
            return True
        del kept[self.max_output:]
        self.overflow = stream
        self._aborted.set()
        self._signal_and_close()
        return False

    def _started_session(self) -> paramiko.Channel | None:
        """A session channel running the command. A session the login node closes before the
        command starts (sshd under load refuses it that way too; paramiko then reports a stale or
        empty error) ran nothing, so another is opened. None: aborted."""
        pause = 0.02
        while True:
            channel = self.channel = self._open_session()
            if channel is None or self._aborted.is_set():
                return None
            try:
                channel.exec_command(self.command)
                return channel
            except (paramiko.SSHException, EOFError):
                channel.close()
                if not self.transport.is_active():
                    raise
            if self._aborted.wait(pause):
                return None
            pause = min(2 * pause, 0.5)

    def _open_session(self) -> paramiko.Channel | None:
        """A new session channel, waiting while the login node has no session to spare: OpenSSH
        refuses sessions beyond its MaxSessions ("no more sessions") until closed ones are collected,
        which may lag behind the close, and while timed-out commands still run. None: aborted."""
        pause = 0.02
        while True:
            try:
                return _open_channel(self.transport, "session")
            except paramiko.ChannelException as error:
                if error.code != OPEN_FAILED_CONNECT_FAILED:
                    raise
            except paramiko.SSHException as error:
                # paramiko keeps the reason of a refused channel in one slot per connection: with
                # several refusals at once, the others get this generic error instead.
                if str(error) != "Unable to open channel.":
                    raise
            if self._aborted.wait(pause):  # the caller's timeout bounds the waiting
                return None
            pause = min(2 * pause, 0.5)

    def abort(self) -> None:
        """Stop waiting for a session; signal the remote command's process group (TERM: OpenSSH's
        sshd honours the "signal" request) and close the channel, in a thread of its own (paramiko
        may block on a send). Nobody waits for the remote process."""
        self._aborted.set()
        threading.Thread(target=self._signal_and_close, name="hpchub-ssh-abort", daemon=True).start()

    def _signal_and_close(self) -> None:
        channel = self.channel
        if channel is None or channel.closed:
            return
        try:
            message = paramiko.Message()
            message.add_byte(cMSG_CHANNEL_REQUEST)
            message.add_int(channel.remote_chanid)
            message.add_string("signal")
            message.add_boolean(False)
            message.add_string("TERM")
            # paramiko has no public call for this request (RFC 4254 6.9).
            channel.transport._send_user_message(message)
        except Exception:  # best effort: the channel is closed below anyway
            pass
        channel.close()

    def text(self, output: bytearray) -> str:
        return bytes(output).decode(errors="replace")



@dataclass(eq=False)
class _RemoteForwardSpec:
    bind: str
    port: int
    local_host: str
    local_port: int
    cap: Cap
    active: bool = True
    transport: paramiko.Transport | None = None
    """The connection on which the login node granted the forward: held while it is the live one."""
    refusals: int = 0
    last_refusal: str = ""
    retry_at: float = 0.0
    retrying: asyncio.Task[None] | None = None

    def held(self) -> bool:
        return self.active and self.transport is not None and self.transport.is_active()


@dataclass
class _TargetState:
    client: paramiko.SSHClient | None = None
    connecting: asyncio.Future[paramiko.Transport] | None = None
    logins: int = 0
    failures: int = 0
    retry_at: float = 0.0
    last_failure: _LoginFailure | None = None
    sessions: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_SESSIONS))
    """Limits the session channels open at once (the login node's MaxSessions)."""
    forward_requests: asyncio.Lock = field(default_factory=asyncio.Lock)
    remote_forwards: dict[int, _RemoteForwardSpec] = field(default_factory=dict)
    idle_timeout: float = IDLE_TIMEOUT
    busy: int = 0
    """Commands in progress on the connection (a forward's channels need no count: the forward keeps it)."""
    last_used: float = 0.0
    idle_check: asyncio.TimerHandle | None = None

    def live_transport(self) -> paramiko.Transport | None:
        transport = self.client.get_transport() if self.client is not None else None
        return transport if transport is not None and transport.is_active() else None



class LocalForward:
    """A listening port on 127.0.0.1 of the hub; each connection to it goes through the pooled
    connection (a direct-tcpip channel) to ``remote_host:remote_port`` as seen from the login node.
    Connections made after a reconnect use the new connection. At most ``pool.max_per_local_forward``
    connections at once (and the pool's overall cap): more are closed at once, and logged."""

    def __init__(self, pool: SSHPool, target: SSHTarget, remote_host: str, remote_port: int, listener: socket.socket):
        self.pool = pool
        self.target = target
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.port: int = listener.getsockname()[1]
        self.cap = Cap(pool.max_per_local_forward, pool._forwarded)
        self._listener = listener
        self._links: set[Link] = set()
        self._links_lock = threading.Lock()
        self._closed = False
        self._accepting = asyncio.ensure_future(self._accept())

    def __repr__(self) -> str:
        return f"<LocalForward 127.0.0.1:{self.port} -> {self.remote_host}:{self.remote_port} via {self.target}>"

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._listener)
            except OSError as error:  # out of descriptors, say: keep the port, try again soon
                log.warning("%r: accept failed: %s", self, error)
                await asyncio.sleep(1)
                continue
            if not self.cap.acquire(self):
                conn.close()
                continue
            task = asyncio.ensure_future(self._forward(conn, peer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _forward(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            channel = await self.pool._open_direct_tcpip(self.target, (self.remote_host, self.remote_port), peer)
        except Exception as error:
            log.warning("%r: connection from %s:%s not forwarded: %s", self, peer[0], peer[1], error)
            conn.close()
            self.cap.release()
            return
        if self._closed:
            conn.close()
            self.pool._close_in_background(channel)
            self.cap.release()
            return
        links: list[Link] = []

        def ended() -> None:
            self.cap.release()
            with self._links_lock:
                self._links.difference_update(links)

        with self._links_lock:  # before the relay may end it, so that ``ended`` finds it
            link = self.pool._relay.add(conn, channel, ended)
            links.append(link)
            self._links.add(link)

    def close(self) -> None:
        """Stop listening and end the forwarded connections."""
        if self._closed:
            return
        self._closed = True
        self._accepting.cancel()
        self._listener.close()
        with self._links_lock:
            links = list(self._links)
        self.pool._relay.stop(links)
        self.pool._local_forwards.discard(self)


class RemoteForward:
    """A port on the login node (``bind:port``) whose connections reach ``local_host:local_port``
    on the hub's side; requested again after each reconnect. ``held``: the login node has granted
    it on the live connection. A refused request leaves it dead (someone else may have taken the
    port while the hub did not hold it): it is asked for again with backoff until it is held."""

    def __init__(self, pool: SSHPool, target: SSHTarget, spec: _RemoteForwardSpec):
        self.pool = pool
        self.target = target
        self._spec = spec

    @property
    def bind(self) -> str:
        return self._spec.bind

    @property
    def port(self) -> int:
        return self._spec.port

    @property
    def held(self) -> bool:
        return self._spec.held()

    @property
    def refusals(self) -> int:
        """How many requests for this forward the login node refused (since it was opened)."""
        return self._spec.refusals

    @property
    def cap(self) -> Cap:
        return self._spec.cap

    def __repr__(self) -> str:
        return f"<RemoteForward {self.bind}:{self.port} on {self.target} -> {self._spec.local_host}:{self._spec.local_port}>"

    async def ensure_held(self) -> None:
        """Return once the hub holds the forward on the live connection (logging in again, which asks
        for it again, if the connection is gone). ForwardRefused: the login node refused it; it is
        asked for again in the background. LoginUnreachable: no connection."""
        spec = self._spec
        transport = await self.pool._transport(self.target, (), operation=f"remote forward {spec.bind}:{spec.port}")
        if spec.held() and spec.transport is transport:
            return
        wait = max(1, math.ceil(spec.retry_at - time.monotonic()))
        raise ForwardRefused((), self.target, (
            f"the login node {self.target} refused to forward {spec.bind}:{spec.port} to the hub again "
            f"({spec.refusals} refusals; next attempt in {wait} s): someone else may hold that port, so no job "
            f"is told to use it: {spec.last_refusal}"), f"remote forward {spec.bind}:{spec.port}")

    async def close(self) -> None:
        await self.pool._cancel_remote_forward(self.target, self._spec)


class SSHPool:
    """Pooled SSH connections, one per target, used from one asyncio event loop.

    ``max_forwarded``: forwarded TCP connections open at once over all forwards of the pool;
    ``max_per_local_forward`` and ``max_per_remote_forward``: through one forward. A connection
    beyond a cap is refused (closed at once) and logged."""

    def __init__(self, *, backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX,
                 max_sessions: int = MAX_SESSIONS, max_threads: int = 64, max_forwarded: int = MAX_FORWARDED,
                 max_per_local_forward: int = MAX_PER_LOCAL_FORWARD,
                 max_per_remote_forward: int = MAX_PER_REMOTE_FORWARD, idle_timeout: float = IDLE_TIMEOUT):
        self.backoff_first = backoff_first
        self.max_sessions = max_sessions
        self.backoff_max = backoff_max
        self.max_per_local_forward = max_per_local_forward
        self.max_per_remote_forward = max_per_remote_forward
        self.idle_timeout = idle_timeout
        """Seconds of no command after which a connection is closed (a target's own setting wins)."""
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="hpchub-ssh")
        self._targets: dict[SSHTarget, _TargetState] = {}
        self._local_forwards: set[LocalForward] = set()
        self._forwarded = Cap(max_forwarded)
        self._relay = Relay()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop remote forwards' connections are made on
        self._connecting: set[asyncio.Task[None]] = set()
        self._limit_checked = False
        self._closed = False
        metrics.SSH_CONNECTIONS.track(self)

    def _check_descriptor_limit(self) -> None:
        """Once, at the first forward: say so in the log when the open-file limit is below what the caps need."""
        if not self._limit_checked:
            self._limit_checked = True
            problem = descriptor_limit_problem(self._forwarded.limit)
            if problem is not None:
                log.warning("SSH forwards: %s", problem)

    def has_forwards(self, target: SSHTarget) -> bool:
        """Whether a local or remote forward uses ``target``'s connection (closing it would break them)."""
        state = self._targets.get(target)
        return (state is not None and bool(state.remote_forwards)) or any(
            forward.target == target for forward in self._local_forwards)

    def logins(self, target: SSHTarget) -> int:
        """How many times the pool logged in to ``target`` (successful logins)."""
        state = self._targets.get(target)
        return state.logins if state is not None else 0

    def connections(self) -> dict[str, int]:
        """Open connections by login node ("host:port"), whatever their accounts."""
        counts: dict[str, int] = {}
        for target, state in list(self._targets.items()):
            if state.client is not None:
                node = f"{target.host}:{target.port}"
                counts[node] = counts.get(node, 0) + 1
        return counts

    async def run(self, target: SSHTarget, argv: Sequence[str], *, input: str | None = None,
                  timeout: float, max_output: int = DEFAULT_MAX_OUTPUT) -> CommandResult:
        """Run ``argv`` on the login node as ``target.user``; raise CommandError unless it exits 0.

        ``timeout`` bounds the whole call (waiting for a session slot and a login included); on
        expiry the remote command's process group gets SIGTERM and the channel is closed, without
        waiting for the remote process. ``max_output`` bounds what is kept of stdout and of stderr
        (bytes each; the remote account's shell startup files write there too): over it, the command
        is stopped the same way. Errors: LoginUnreachable / HostKeyRefused (nothing ran),
        ConnectionLost (may have run), CommandTimeout, OutputTooLarge, CommandError (non-zero exit)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError(f"argv must be a list of arguments, not a command line: {argv!r}")
        argv = tuple(argv)
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise TypeError(f"argv must be a non-empty sequence of str, got {argv!r}")
        self._check_open()
        started = time.monotonic()
        jobs: list[_RemoteCommand] = []
        try:
            status, transport = await asyncio.wait_for(
                self._run_channel(target, argv, input, max_output, jobs), timeout)
        except asyncio.TimeoutError:
            stdout, stderr = (jobs[-1].text(jobs[-1].stdout), jobs[-1].text(jobs[-1].stderr)) if jobs else ("", "")
            where = "" if jobs else f" (waiting for a session or a login to {target})"
            raise CommandTimeout(argv, None, stdout, stderr, reason=f"timed out after {timeout:g} s{where}") from None
        job = jobs[-1]
        stdout, stderr = job.text(job.stdout), job.text(job.stderr)
        if job.overflow is not None:
            raise OutputTooLarge(argv, job.overflow, max_output, stdout, stderr)
        if status is None:
            if transport.is_active():
                raise CommandError(argv, None, stdout, stderr,
                                   reason=f"ended without an exit status on {target} (killed by a signal?)")
            self._drop(self._state(target), transport)
            raise ConnectionLost(argv, None, stdout, stderr, reason=(
                f"lost its connection to {target} (it may or may not have run): {_transport_error(transport)}"))
        if status != 0:
            raise CommandError(argv, status, stdout, stderr)
        return CommandResult(argv, status, stdout, stderr, time.monotonic() - started)

    async def _run_channel(self, target: SSHTarget, argv: tuple[str, ...], input: str | None, max_output: int,
                           jobs: list[_RemoteCommand]) -> tuple[int | None, paramiko.Transport]:
        """Run the command on a session channel (waiting for a free one); the exit status (None:
        the channel closed without one) and the connection used. Cancelled: the command is aborted."""
        state = self._state(target)
        with self._in_use(target, state):
            return await self._run_on_session(target, state, argv, input, max_output, jobs)

    async def _run_on_session(self, target: SSHTarget, state: _TargetState, argv: tuple[str, ...], input: str | None,
                              max_output: int, jobs: list[_RemoteCommand]) -> tuple[int | None, paramiko.Transport]:
        loop = asyncio.get_running_loop()
        async with state.sessions:
            for attempt in (1, 2):
                transport = await self._transport(target, argv)
                job = _RemoteCommand(transport, shlex.join(argv), input, max_output)
                jobs.append(job)
                running = loop.run_in_executor(self._executor, job.run)
                running.add_done_callback(_retrieve)  # an aborted run may end in an error nobody awaits
                try:
                    return await asyncio.shield(running), transport
                except asyncio.CancelledError:
                    job.abort()
                    raise
                except _TransportGone as error:
                    # The channel was never opened, so the command never ran: safe to log in again.
                    self._drop(state, transport)
                    if attempt == 2:
                        raise LoginUnreachable(argv, target, f"connection to {target} lost: {error}") from None
                except (paramiko.SSHException, EOFError, OSError) as error:
                    if not transport.is_active():
                        self._drop(state, transport)
                        raise ConnectionLost(argv, None, job.text(job.stdout), job.text(job.stderr), reason=(
                            f"lost its connection to {target} (it may or may not have run): "
                            f"{_transport_error(transport)}")) from None
                    raise CommandError(argv, None, reason=f"could not be run on {target}: {error!r}") from None
        raise AssertionError("unreachable")

    # -- connections -----------------------------------------------------------------------------
    def _state(self, target: SSHTarget) -> _TargetState:
        state = self._targets.get(target)
        if state is None:
            state = self._targets[target] = _TargetState(sessions=asyncio.Semaphore(self.max_sessions))
        state.idle_timeout = target.idle_timeout if target.idle_timeout is not None else self.idle_timeout
        return state

    # -- idle connections ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _in_use(self, target: SSHTarget, state: _TargetState) -> Iterator[None]:
        """The connection is busy meanwhile; its idle time starts when the last use ends."""
        state.busy += 1
        try:
            yield
        finally:
            state.busy -= 1
            self._used(target, state)

    def _used(self, target: SSHTarget, state: _TargetState) -> None:
        state.last_used = time.monotonic()
        if state.idle_check is None and not self._closed:
            self._check_idle_in(target, state, state.idle_timeout)

    def _check_idle_in(self, target: SSHTarget, state: _TargetState, delay: float) -> None:
        # A timer, not a task: nothing is left pending when the event loop closes.
        state.idle_check = asyncio.get_running_loop().call_later(delay, self._close_if_idle, target, state)

    def _close_if_idle(self, target: SSHTarget, state: _TargetState) -> None:
        """Close the target's connection if it ran nothing for its idle timeout and no forward uses
        it; else look again when that could have changed."""
        state.idle_check = None
        if self._closed or state.client is None:
            return  # the next login starts the watch again
        idle = time.monotonic() - state.last_used
        if state.busy or state.forward_requests.locked() or self.has_forwards(target):
            self._check_idle_in(target, state, state.idle_timeout)
        elif idle < state.idle_timeout:
            self._check_idle_in(target, state, state.idle_timeout - idle)
        else:
            log.info("closing the connection to %s: no command for %.0f s", target, idle)
            self._drop(state, None)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("SSHPool is closed")

    async def _transport(self, target: SSHTarget, argv: Sequence[str], operation: str | None = None
                         ) -> paramiko.Transport:
        """The live connection to ``target``, logging in if there is none (one login at a time per
        target; everybody waiting shares it). During a backoff: LoginUnreachable at once."""
        state = self._state(target)
        transport = state.live_transport()
        if transport is not None:
            return transport
        if state.client is not None:
            self._drop(state, None)
        if state.connecting is None:
            wait = state.retry_at - time.monotonic()
            if wait > 0 and state.last_failure is not None:
                raise self._unreachable(argv, target, state.last_failure, wait, operation)
            state.connecting = asyncio.ensure_future(self._login(target, state))
            state.connecting.add_done_callback(_retrieve)  # every waiter may have timed out before it ended
        try:
            return await asyncio.shield(state.connecting)
        except _LoginFailure as failure:
            raise self._unreachable(argv, target, failure, state.retry_at - time.monotonic(), operation) from None

    def _unreachable(self, argv: Sequence[str], target: SSHTarget, failure: _LoginFailure, wait: float,
                     operation: str | None) -> LoginUnreachable:
        kind = HostKeyRefused if failure.host_key else LoginUnreachable
        when = f"next attempt in {max(1, math.ceil(wait))} s"
        return kind(argv, target, f"login node {target} unreachable ({when}): {failure}", operation)

    async def _login(self, target: SSHTarget, state: _TargetState) -> paramiko.Transport:
        loop = asyncio.get_running_loop()
        try:
            client = await loop.run_in_executor(self._executor, self._login_blocking, target, state)
        except _LoginFailure as failure:
            state.failures += 1
            delay = min(self.backoff_max, self.backoff_first * 2 ** (state.failures - 1))
            state.retry_at = time.monotonic() + delay
            state.last_failure = failure
            log.warning("login to %s failed (next attempt in %g s): %s", target, delay, failure)
            raise
        finally:
            state.connecting = None
        if self._closed:  # closed while logging in
            self._close_in_background(client)
            raise _LoginFailure("the SSH pool was closed")
        state.client = client
        state.failures = 0
        state.last_failure = None
        state.logins += 1
        self._used(target, state)
        log.info("logged in to %s (login %d)", target, state.logins)
        transport = client.get_transport()
        assert transport is not None
        for spec in state.remote_forwards.values():
            if not spec.held():
                self._retry_remote_forward(target, state, spec)
        return transport

    def _login_blocking(self, target: SSHTarget, state: _TargetState) -> paramiko.SSHClient:
        client = _connect_blocking(target)
        transport = client.get_transport()
        assert transport is not None
        # Remote forwards belong to a connection: ask for them again on the new one, before anybody
        # else uses it (paramiko waits for one global request at a time). One the login node refuses
        # is dead (``_login`` has it asked for again), never handed out.
        for spec in list(state.remote_forwards.values()):
            self._request_remote_forward(target, state, spec, transport)
        return client

    def _request_remote_forward(self, target: SSHTarget, state: _TargetState, spec: _RemoteForwardSpec,
                                transport: paramiko.Transport) -> bool:
        """Ask (again) for ``spec`` on ``transport`` (blocking); True: held."""
        try:
            transport.request_port_forward(spec.bind, spec.port, self._remote_forward_handler(state))
        except (paramiko.SSHException, EOFError, OSError) as error:
            spec.transport = None
            if transport.is_active():  # refused, not a connection gone
                spec.refusals += 1
                spec.last_refusal = str(error) or type(error).__name__
                log.warning("remote forward %s:%s on %s refused by the login node (someone else may hold the port; "
                            "no job is told to use it until the hub holds it again): %s",
                            spec.bind, spec.port, target, spec.last_refusal)
            return False
        spec.transport = transport
        return True

    def _retry_remote_forward(self, target: SSHTarget, state: _TargetState, spec: _RemoteForwardSpec) -> None:
        """Ask for a dead forward again, with backoff, in the background, until it is held or closed."""
        if spec.retrying is not None and not spec.retrying.done():
            return
        spec.retrying = asyncio.ensure_future(self._retry_remote_forward_loop(target, state, spec))
        spec.retrying.add_done_callback(_retrieve)

    async def _retry_remote_forward_loop(self, target: SSHTarget, state: _TargetState,
                                         spec: _RemoteForwardSpec) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff_first
        operation = f"remote forward {spec.bind}:{spec.port}"
        while spec.active and not self._closed:
            spec.retry_at = time.monotonic() + delay
            await asyncio.sleep(delay)
            delay = min(2 * delay, self.backoff_max)
            try:
                transport = await self._transport(target, (), operation)  # a new login asks for it itself
            except LoginUnreachable:
                continue
            async with state.forward_requests:
                if not spec.active or self._closed:
                    return
                held = spec.held() or await loop.run_in_executor(
                    self._executor, self._request_remote_forward, target, state, spec, transport)
            if held:
                log.info("remote forward %s:%s on %s is held again", spec.bind, spec.port, target)
                return

    def _drop(self, state: _TargetState, transport: paramiko.Transport | None) -> None:
        """Forget the target's connection (if it still is ``transport``) and close it in a thread."""
        client = state.client
        if client is None or (transport is not None and client.get_transport() is not transport):
            return
        state.client = None
        self._close_in_background(client)

    def _close_in_background(self, closable: paramiko.SSHClient | paramiko.Channel) -> None:
        try:
            self._executor.submit(closable.close)
        except RuntimeError:  # executor shut down
            threading.Thread(target=closable.close, daemon=True).start()

    # -- port forwards ---------------------------------------------------------------------------
    async def open_local_forward(self, target: SSHTarget, remote_host: str, remote_port: int,
                                 local_port: int = 0) -> LocalForward:
        """Listen on 127.0.0.1:``local_port`` (0: a free port) and forward each connection to
        ``remote_host:remote_port`` through the login node. Connects (or fails) now so that a wrong
        host key shows at once."""
        self._check_open()
        self._check_descriptor_limit()
        await self._transport(target, (), operation=f"port forward to {remote_host}:{remote_port}")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", local_port))
        listener.listen(128)
        listener.setblocking(False)
        forward = LocalForward(self, target, remote_host, remote_port, listener)
        self._local_forwards.add(forward)
        return forward

    async def _open_direct_tcpip(self, target: SSHTarget, dest: tuple[str, int],
                                 origin: tuple[str, int]) -> paramiko.Channel:
        loop = asyncio.get_running_loop()
        operation = f"port forward to {dest[0]}:{dest[1]}"
        state = self._state(target)
        for attempt in (1, 2):
            transport = await self._transport(target, (), operation)
            try:
                return await loop.run_in_executor(self._executor, _open_channel, transport, "direct-tcpip", dest, origin)
            except _TransportGone as error:
                self._drop(state, transport)
                if attempt == 2:
                    raise LoginUnreachable((), target, f"connection to {target} lost: {error}", operation) from None
        raise AssertionError("unreachable")

    async def open_remote_forward(self, target: SSHTarget, remote_bind: str, remote_port: int,
                                  local_host: str, local_port: int, *, keep_refused: bool = False) -> RemoteForward:
        """Ask the login node to listen on ``remote_bind:remote_port`` (0: a free port, see
        ``.port``) and send its connections to ``local_host:local_port`` on the hub's side. Binding
        other than loopback needs ``GatewayPorts clientspecified`` (or yes) in the login node's sshd.
        Refused: LoginUnreachable, unless ``keep_refused`` (a port jobs already use: the forward is
        returned dead and asked for again with backoff, see RemoteForward.held)."""
        self._check_open()
        self._check_descriptor_limit()
        loop = self._loop = asyncio.get_running_loop()
        state = self._state(target)
        operation = f"remote forward {remote_bind}:{remote_port}"
        async with state.forward_requests:
            transport = await self._transport(target, (), operation)
            spec = _RemoteForwardSpec(remote_bind, remote_port, local_host, local_port,
                                      Cap(self.max_per_remote_forward, self._forwarded))
            try:
                port = await loop.run_in_executor(self._executor, transport.request_port_forward, remote_bind,
                                                  remote_port, self._remote_forward_handler(state))
            except paramiko.SSHException as error:
                if not keep_refused or remote_port == 0 or not transport.is_active():
                    raise LoginUnreachable((), target, f"the login node {target} refused it: {error}", operation) from None
                spec.refusals, spec.last_refusal = 1, str(error)
                log.warning("remote forward %s:%s on %s refused by the login node (someone else may hold the port; "
                            "no job is told to use it until the hub holds it again): %s",
                            remote_bind, remote_port, target, error)
            else:
                spec.port, spec.transport = port, transport
            state.remote_forwards[spec.port] = spec
        if not spec.held():
            self._retry_remote_forward(target, state, spec)
        return RemoteForward(self, target, spec)

    def _remote_forward_handler(self, state: _TargetState) -> Callable[..., None]:
        def handle(channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
            # Called in paramiko's transport thread: connecting to the local end happens on the loop.
            spec = state.remote_forwards.get(server[1])
            loop = self._loop
            if spec is None or not spec.active or loop is None or self._closed:
                channel.close()
                return
            if not spec.cap.acquire(f"remote forward {spec.bind}:{spec.port}"):
                channel.close()
                return
            try:
                loop.call_soon_threadsafe(self._connect_remote_channel, channel, spec)
            except RuntimeError:  # the loop is closed
                spec.cap.release()
                channel.close()

        return handle

    def _connect_remote_channel(self, channel: paramiko.Channel, spec: _RemoteForwardSpec) -> None:
        task = asyncio.ensure_future(self._connect_and_relay(channel, spec))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_relay(self, channel: paramiko.Channel, spec: _RemoteForwardSpec) -> None:
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            family, kind, proto, _, address = (await loop.getaddrinfo(
                spec.local_host, spec.local_port, type=socket.SOCK_STREAM))[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as error:
            log.warning("remote forward: cannot connect to %s:%s: %s", spec.local_host, spec.local_port,
                        error or type(error).__name__)
            if sock is not None:
                sock.close()
            self._close_in_background(channel)
            spec.cap.release()
            return
        except BaseException:
            if sock is not None:
                sock.close()
            self._close_in_background(channel)
            spec.cap.release()
            raise
        self._relay.add(sock, channel, spec.cap.release)

    async def _cancel_remote_forward(self, target: SSHTarget, spec: _RemoteForwardSpec) -> None:
        state = self._state(target)
        spec.active = False
        if spec.retrying is not None:
            spec.retrying.cancel()
        if state.remote_forwards.get(spec.port) is spec:
            del state.remote_forwards[spec.port]
        transport = state.live_transport()
        if transport is None or spec.transport != transport:
            return  # not held: nothing to cancel
        cancel = transport.cancel_port_forward
        async with state.forward_requests:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, cancel, spec.bind, spec.port)
            except (paramiko.SSHException, EOFError, OSError) as error:
                log.warning("remote forward %s:%s on %s not cancelled: %s", spec.bind, spec.port, target, error)

    async def close(self) -> None:
        """Close every forward and connection; the pool is unusable afterwards."""
        if self._closed:
            return
        self._closed = True
        for forward in list(self._local_forwards):
            forward.close()
        clients = [state.client for state in self._targets.values() if state.client is not None]
        for state in self._targets.values():
            state.client = None
            for spec in state.remote_forwards.values():
                spec.active = False
                if spec.retrying is not None:
                    spec.retrying.cancel()
            state.remote_forwards.clear()
            if state.idle_check is not None:
                state.idle_check.cancel()
                state.idle_check = None
        for task in list(self._connecting):
            task.cancel()
        self._relay.close()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, client.close) for client in clients))
        self._executor.shutdown(wait=False)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (it is reported where it matters)."""
    if not future.cancelled():
        future.exception()

