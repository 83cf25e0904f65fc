"""The SSH pool against a real sshd (Debian's openssh-server) of its own on loopback: argv
quoting, stdin, errors, timeouts, one login for many commands, host keys, reconnect and backoff,
local and remote port forwards, and the latency against an `ssh` process per command."""

from __future__ import annotations

import asyncio
import http.server
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpchub.transports.runner import CommandError, CommandTimeout, OutputTooLarge
from hpchub.transports.sshpool import ConnectionLost, ForwardRefused, HostKeyRefused, LoginUnreachable, SSHPool, SSHTarget

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.ssh


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)


def _fingerprint(public_key: Path) -> str:
    """As ssh prints it: SHA256:..."""
    return subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture(scope="module")
def keys() -> Iterator[Path]:
    """Host keys and alice's and bob's keys; sshd reads DIR/USER.pub as the user (hence 0755/0644)."""
    if not os.path.exists(SSHD):
        message = f"{SSHD} is missing (apt-get install openssh-server)"
        if os.environ.get("HPCHUB_REQUIRE_CLUSTERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="hpchub-sshpool-"))
    directory.chmod(0o755)
    for name in ("host_key", "other_host_key", "alice.key", "bob.key"):
        _keygen(directory / name)
    for user in ("alice", "bob"):
        shutil.copy(directory / f"{user}.key.pub", directory / f"{user}.pub")
        (directory / f"{user}.pub").chmod(0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class LoginNode:
    """An sshd of this test on 127.0.0.1:PORT (started as root with -D, stopped by pid)."""

    def __init__(self, keys: Path, workdir: Path):
        self.keys = keys
        self.port = _free_port()
        self.log = workdir / "sshd.log"
        self.config = workdir / "sshd_config"
        self.config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {keys}/host_key\nPidFile none\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {keys}/%u.pub\nStrictModes no\nAllowUsers alice bob\nAllowTcpForwarding yes\n"
            "LogLevel VERBOSE\n")
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(keys / 'host_key.pub').read_text()}")
        self.process: subprocess.Popen | None = None

    def target(self, user: str = "alice", known_hosts: Path | None = None) -> SSHTarget:
        return SSHTarget("127.0.0.1", self.port, user, str(self.keys / f"{user}.key"),
                         str(known_hosts or self.known_hosts))

    def start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text() if self.log.exists() else "sshd exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("sshd did not listen")

    def stop(self) -> None:
        """Stop the listening sshd and the connections it forked."""
        self.kill_connections()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def connection_pids(self) -> list[int]:
        """Every process below the listening sshd (per connection: `sshd: USER [priv]` and its child)."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def kill_connections(self) -> None:
        if self.process is None:
            return
        for pid in self.connection_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.connection_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def accepted(self, user: str = "alice") -> int:
        return self.log.read_text().count(f"Accepted publickey for {user} ")


@pytest.fixture
def login_node(keys: Path, tmp_path: Path) -> Iterator[LoginNode]:
    node = LoginNode(keys, tmp_path)
    node.start()
    yield node
    node.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


@pytest.fixture
async def pool() -> Iterator[SSHPool]:
    pool = SSHPool()
    yield pool
    await pool.close()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def test_argv_arrives_literally(login_node: LoginNode, pool: SSHPool, tmp_path: Path):
    canary = tmp_path / "canary"
    args = ["a b", "it's", 'say "hi"', f"$(touch {canary})", "`id`", "line1\nline2", "*", "", "$HOME", ";|&", "\\"]
    result = await pool.run(login_node.target(), ["printf", "[%s]\\n", *args], timeout=10)
    assert result.stdout == "".join(f"[{arg}]\n" for arg in args)
    assert result.argv == ("printf", "[%s]\\n", *args) and result.returncode == 0
    assert not canary.exists()
    assert (await pool.run(login_node.target("bob"), ["id", "-un"], timeout=10)).stdout == "bob\n"


async def test_input_goes_to_stdin_and_is_closed(login_node: LoginNode, pool: SSHPool):
    text = "#!/bin/bash\necho 'hi' $USER\nü\n" * 1000
    assert (await pool.run(login_node.target(), ["cat"], input=text, timeout=10)).stdout == text
    # Without input the command's stdin is closed too (cat ends at once).
    assert (await pool.run(login_node.target(), ["cat"], timeout=10)).stdout == ""


async def test_exit_code_and_stderr_in_the_error(login_node: LoginNode, pool: SSHPool):
    with pytest.raises(CommandError) as caught:
        await pool.run(login_node.target(), ["sh", "-c", "echo partial; echo 'sbatch: error: bad' >&2; exit 3",
                                             "arg with space"], timeout=10)
    error = caught.value
    assert type(error) is CommandError
    assert (error.returncode, error.stdout, error.stderr) == (3, "partial\n", "sbatch: error: bad\n")
    assert "exited with code 3" in str(error) and "'arg with space'" in str(error) and "sbatch: error: bad" in str(error)


async def test_timeout_returns_in_time_and_stops_the_remote_command(login_node: LoginNode, pool: SSHPool):
    target = login_node.target()
    await pool.run(target, ["true"], timeout=10)  # logged in: the bound below is the command's
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await pool.run(target, ["sh", "-c", "echo started; exec sleep 31.7"], timeout=1)
    assert time.monotonic() - started < 1.5
    assert caught.value.stdout == "started\n" and "timed out after 1 s" in str(caught.value)

    def remote_sleeps() -> list[int]:
        return [pid for pid in login_node.connection_pids() if b"31.7" in _cmdline(pid)]

    deadline = time.monotonic() + 5
    while remote_sleeps() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not remote_sleeps(), "the timed-out remote command got no SIGTERM"
    assert (await pool.run(target, ["echo", "still fine"], timeout=10)).stdout == "still fine\n"
    assert pool.logins(target) == 1


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_output_over_the_limit_stops_the_remote_command(login_node: LoginNode, pool: SSHPool, stream: str):
    # Printing forever is stopped at the limit, long before the timeout, as a timeout stops it
    # (TERM, channel closed); the error keeps only the head; the connection stays usable.
    target = login_node.target()
    marker = f"flood-{stream}-31.9"
    started = time.monotonic()
    with pytest.raises(OutputTooLarge) as caught:
        await pool.run(target, ["sh", "-c", f"exec yes {marker} {'>&2' if stream == 'stderr' else ''}"],
                       timeout=30, max_output=256 * 1024)
    assert time.monotonic() - started < 3
    error = caught.value
    assert (error.stream, error.limit) == (stream, 256 * 1024) and f"more than 256 KiB to {stream}" in str(error)
    assert getattr(error, stream).startswith(f"{marker}\n") and len(getattr(error, stream)) <= 2000

    def remote_floods() -> list[int]:
        return [pid for pid in login_node.connection_pids() if marker.encode() in _cmdline(pid)]

    deadline = time.monotonic() + 5
    while remote_floods() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not remote_floods(), "the remote command was not stopped"
    assert (await pool.run(target, ["echo", "still fine"], timeout=10)).stdout == "still fine\n"
    assert pool.logins(target) == 1


async def test_many_commands_in_parallel_over_one_login(login_node: LoginNode, pool: SSHPool):
    target = login_node.target()
    for batch in range(2):  # 20 commands, 10 at a time; the first 10 also race for the login
        started = time.monotonic()
        results = await asyncio.gather(*(pool.run(target, ["sh", "-c", "sleep 0.5; echo $0", f"{batch}-{n}"],
                                                  timeout=20) for n in range(10)))
        assert [result.stdout for result in results] == [f"{batch}-{n}\n" for n in range(10)]
        assert time.monotonic() - started < 2.5, "the commands did not run in parallel"
    # More than sshd's MaxSessions (10) at once: they queue for a session, none is refused.
    results = await asyncio.gather(*(pool.run(target, ["echo", str(n)], timeout=20) for n in range(25)))
    assert [result.stdout for result in results] == [f"{n}\n" for n in range(25)]
    assert pool.logins(target) == 1
    assert login_node.accepted() == 1


async def test_idle_timeout_spares_a_running_command_and_closes_the_idle_connection(login_node: LoginNode):
    """The pool's own idle timeout (no target setting): a command longer than it keeps its
    connection; once idle for it, the connection is closed (sshd's side too) and the next command
    logs in again."""
    pool = SSHPool(idle_timeout=0.5)
    try:
        target = login_node.target()
        assert (await pool.run(target, ["sh", "-c", "sleep 1.5; echo done"], timeout=10)).stdout == "done\n"
        assert pool.logins(target) == 1 and pool.connections() == {f"127.0.0.1:{login_node.port}": 1}
        deadline = time.monotonic() + 5
        while (pool.connections() or login_node.connection_pids()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not pool.connections() and not login_node.connection_pids()
        assert (await pool.run(target, ["echo", "again"], timeout=10)).stdout == "again\n"
        assert pool.logins(target) == 2 and login_node.accepted() == 2
    finally:
        await pool.close()


async def test_short_commands_never_make_the_login_node_drop_the_connection(login_node: LoginNode, pool: SSHPool):
    """A command that ends at once: the hub's EOF (its stdin closed) must not follow its answer to
    the login node's CLOSE, for which OpenSSH drops the whole connection, every command on it
    with it (paramiko's shutdown_write left that window: about one connection per 100 commands)."""
    target = login_node.target()
    for _ in range(40):
        results = await asyncio.gather(*(pool.run(target, ["true"], timeout=20) for _ in range(8)),
                                       return_exceptions=True)
        assert not [result for result in results if isinstance(result, Exception)]
    assert pool.logins(target) == 1
    assert "nonexistent channel" not in login_node.log.read_text()


async def test_sessions_refused_by_max_sessions_are_waited_for(login_node: LoginNode):
    """A pool allowing more sessions than the login node (MaxSessions 10): the refused ones wait
    for a free session instead of failing."""
    pool = SSHPool(max_sessions=30)
    try:
        target = login_node.target()
        results = await asyncio.gather(*(pool.run(target, ["sh", "-c", "sleep 0.3; echo $0", str(n)], timeout=20)
                                         for n in range(25)))
        assert [result.stdout for result in results] == [f"{n}\n" for n in range(25)]
        assert login_node.log.read_text().count("no more sessions") > 0  # sshd did refuse some
        assert pool.logins(target) == 1
    finally:
        await pool.close()


async def test_timeout_bounds_a_login_that_hangs(keys: Path, pool: SSHPool, tmp_path: Path):
    """A login node that accepts TCP but never speaks SSH: the call's timeout still holds."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = SSHTarget("127.0.0.1", port, "alice", str(keys / "alice.key"), str(tmp_path / "known_hosts"))
        (tmp_path / "known_hosts").write_text("")
        started = time.monotonic()
        with pytest.raises(CommandTimeout, match="waiting for a session or a login"):
            await pool.run(target, ["true"], timeout=1)
        assert time.monotonic() - started < 1.5


async def test_changed_host_key_is_refused_and_nothing_runs(login_node: LoginNode, pool: SSHPool, tmp_path: Path):
    keys = login_node.keys
    known_hosts = tmp_path / "changed_known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{login_node.port} {(keys / 'other_host_key.pub').read_text()}")
    canary = tmp_path / "canary"
    with pytest.raises(HostKeyRefused) as caught:
        await pool.run(login_node.target(known_hosts=known_hosts), ["touch", str(canary)], timeout=10)
    message = str(caught.value)
    assert f"[127.0.0.1]:{login_node.port}" in message and "CHANGED" in message
    assert _fingerprint(keys / "host_key.pub") in message and _fingerprint(keys / "other_host_key.pub") in message
    assert not canary.exists() and login_node.accepted() == 0
    assert pool.logins(login_node.target(known_hosts=known_hosts)) == 0


async def test_unknown_host_is_refused(login_node: LoginNode, pool: SSHPool, tmp_path: Path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other_port = tmp_path / "other_port_known_hosts"  # the right key, but for another port: another host
    other_port.write_text(f"[127.0.0.1]:{login_node.port + 1} {(login_node.keys / 'host_key.pub').read_text()}")
    for known_hosts in (empty, other_port):
        with pytest.raises(HostKeyRefused) as caught:
            await pool.run(login_node.target(known_hosts=known_hosts), ["true"], timeout=10)
        message = str(caught.value)
        assert f"[127.0.0.1]:{login_node.port}" in message and "not in" in message and str(known_hosts) in message
        assert _fingerprint(login_node.keys / "host_key.pub") in message
    assert login_node.accepted() == 0


async def test_killed_connection_is_made_again(login_node: LoginNode, pool: SSHPool):
    target = login_node.target()
    assert (await pool.run(target, ["echo", "one"], timeout=10)).stdout == "one\n"
    login_node.kill_connections()
    assert (await pool.run(target, ["echo", "two"], timeout=10)).stdout == "two\n"
    assert pool.logins(target) == 2 and login_node.accepted() == 2

    # A command running when the connection dies: ConnectionLost, and the next call logs in again.
    running = asyncio.ensure_future(pool.run(target, ["sleep", "20"], timeout=30))
    await asyncio.sleep(0.5)
    login_node.kill_connections()
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as caught:
        await running
    assert time.monotonic() - started < 3 and "may or may not have run" in str(caught.value)
    assert (await pool.run(target, ["echo", "three"], timeout=10)).stdout == "three\n"
    assert pool.logins(target) == 3 and login_node.accepted() == 3


async def test_login_node_down_fails_fast_with_backoff_then_recovers(login_node: LoginNode, pool: SSHPool):
    target = login_node.target()
    await pool.run(target, ["true"], timeout=10)
    login_node.stop()
    with pytest.raises(LoginUnreachable) as first:
        await pool.run(target, ["squeue"], timeout=10)
    assert "unreachable (next attempt in 1 s)" in str(first.value) and "`squeue` not run" in str(first.value)
    assert first.value.returncode is None

    started = time.monotonic()  # during the backoff: no login attempt, an answer at once
    with pytest.raises(LoginUnreachable, match=r"unreachable \(next attempt in 1 s\): .*refused"):
        await pool.run(target, ["squeue"], timeout=10)
    assert time.monotonic() - started < 0.1

    await asyncio.sleep(1.1)  # the next attempt fails too: the backoff doubles
    with pytest.raises(LoginUnreachable, match=r"next attempt in 2 s"):
        await pool.run(target, ["squeue"], timeout=10)

    login_node.start()
    with pytest.raises(LoginUnreachable):  # still in the backoff, though the node is back
        await pool.run(target, ["true"], timeout=10)
    await asyncio.sleep(2.1)
    assert (await pool.run(target, ["echo", "back"], timeout=10)).stdout == "back\n"
    assert pool.logins(target) == 2


async def test_local_forward_reaches_a_server_and_survives_a_reconnect(login_node: LoginNode, pool: SSHPool,
                                                                       http_port: int):
    target = login_node.target()
    forward = await pool.open_local_forward(target, "127.0.0.1", http_port)
    assert forward.port != http_port
    assert await asyncio.to_thread(_get, f"http://127.0.0.1:{forward.port}/one") == "hello from /one"
    bodies = await asyncio.gather(*(asyncio.to_thread(_get, f"http://127.0.0.1:{forward.port}/p{n}") for n in range(8)))
    assert bodies == [f"hello from /p{n}" for n in range(8)]
    assert pool.logins(target) == 1

    login_node.kill_connections()
    assert await asyncio.to_thread(_get, f"http://127.0.0.1:{forward.port}/two") == "hello from /two"
    assert pool.logins(target) == 2  # the new connection carried it

    forward.close()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{forward.port}/three")


async def test_local_forward_refused_with_a_wrong_host_key(login_node: LoginNode, pool: SSHPool, tmp_path: Path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRefused, match="port forward to 127.0.0.1:9 not run"):
        await pool.open_local_forward(login_node.target(known_hosts=empty), "127.0.0.1", 9)


async def test_remote_forward_reaches_the_hub_and_is_renewed_after_a_reconnect(login_node: LoginNode, pool: SSHPool,
                                                                              http_port: int):
    target = login_node.target()
    forward = await pool.open_remote_forward(target, "127.0.0.1", 0, "127.0.0.1", http_port)
    assert forward.port > 0 and forward.port != http_port
    fetch = ["python3", "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"]
    url = f"http://127.0.0.1:{forward.port}/from-the-login-node"
    assert (await pool.run(target, [*fetch, url], timeout=20)).stdout == "hello from /from-the-login-node\n"

    login_node.kill_connections()
    assert (await pool.run(target, [*fetch, url], timeout=20)).stdout == "hello from /from-the-login-node\n"
    assert pool.logins(target) == 2

    await forward.close()
    with pytest.raises(CommandError):
        await pool.run(target, [*fetch, url], timeout=20)


async def test_latency_pool_against_ssh_per_command(login_node: LoginNode, pool: SSHPool):
    target = login_node.target()
    runs = 20
    await pool.run(target, ["true"], timeout=10)  # the pool's one login, as in a running hub
    pooled = []
    cpu_before = time.process_time()  # this process, the pool's threads included
    for _ in range(runs):
        started = time.monotonic()
        await pool.run(target, ["true"], timeout=10)
        pooled.append(time.monotonic() - started)
    pooled_cpu_ms = (time.process_time() - cpu_before) / runs * 1000
    ssh = ["ssh", "-F", "/dev/null", "-i", target.key_file, "-p", str(login_node.port), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={target.known_hosts}",
           "-o", "IdentitiesOnly=yes", "alice@127.0.0.1", "true"]
    per_process = []
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        started = time.monotonic()
        await asyncio.to_thread(subprocess.run, ssh, check=True, capture_output=True, timeout=30)
        per_process.append(time.monotonic() - started)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ssh_cpu_ms = ((children_after.ru_utime + children_after.ru_stime)
                  - (children_before.ru_utime + children_before.ru_stime)) / runs * 1000
    pooled_ms, ssh_ms = statistics.median(pooled) * 1000, statistics.median(per_process) * 1000
    print(f"\nper-command latency, median of {runs}: pool {pooled_ms:.1f} ms, ssh per command {ssh_ms:.1f} ms, "
          f"ratio {ssh_ms / pooled_ms:.1f}x; client CPU per command: pool {pooled_cpu_ms:.1f} ms, "
          f"ssh {ssh_cpu_ms:.1f} ms")
    assert pooled_ms < ssh_ms
    assert pooled_ms < 30, "Nagle's delay is back (TCP_NODELAY): ~40 ms per command"
    assert pool.logins(target) == 1 and login_node.accepted() == 1 + runs


@pytest.fixture
async def echo_port() -> Iterator[int]:
    """An echo server on the test's own event loop (no thread of its own): connections stay open."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _echoes(port: int, text: bytes) -> tuple[asyncio.StreamWriter, bytes]:
    """Connect to ``port``, send ``text``; the open connection and what came back ('' when refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text)
    back = b""
    while len(back) < len(text):
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            break
        back += data
    return writer, back


async def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_forwarded_connections_take_no_thread_each_and_are_capped(login_node: LoginNode, echo_port: int,
                                                                        caplog: pytest.LogCaptureFixture):
    """Each forwarded connection used to cost a thread, with no bound: now one relay thread pumps
    them all, and beyond the cap per forward (and the pool's) a connection is closed at once."""
    pool = SSHPool(max_forwarded=30, max_per_local_forward=20, max_per_remote_forward=5)
    open_connections: list[asyncio.StreamWriter] = []
    try:
        target = login_node.target()
        forward = await pool.open_local_forward(target, "127.0.0.1", echo_port)
        writer, back = await _echoes(forward.port, b"warm-up")  # the relay thread and a channel-opening thread
        assert back == b"warm-up"
        writer.close()
        threads = threading.active_count()
        for n in range(20):  # one at a time: the pool's channel-opening threads are reused
            writer, back = await _echoes(forward.port, f"ping {n}".encode() * 1000)
            assert back == f"ping {n}".encode() * 1000
            open_connections.append(writer)
        assert threading.active_count() <= threads + 4, "a thread per forwarded connection"

        for _n in range(3):  # over this forward's cap: refused, the others unharmed
            writer, back = await _echoes(forward.port, b"one too many")
            assert back == b""
            writer.close()
        assert forward.cap.refused == 3
        # Logged, but not once per connection: a flood must not flood the log.
        assert caplog.text.count(f"{forward!r}: refused 1 forwarded connection(s): this forward's cap of 20 "
                                 "connections at once is reached") == 1

        # The pool's overall cap counts every forward's connections: 20 + 10 = 30.
        second = await pool.open_local_forward(target, "127.0.0.1", echo_port)
        for _n in range(10):
            writer, back = await _echoes(second.port, b"second")
            assert back == b"second"
            open_connections.append(writer)
        writer, back = await _echoes(second.port, b"over the pool's cap")
        assert back == b"" and second.cap.refused == 1
        assert "the hub's overall cap of 30 connections at once is reached" in caplog.text
        writer.close()

        # The remote forward's own cap (5), with room left in the pool once the second forward's are gone.
        for writer in open_connections[20:]:
            writer.close()
        del open_connections[20:]
        await _wait_for(lambda: second.cap.used == 0)
        remote = await pool.open_remote_forward(target, "127.0.0.1", 0, "127.0.0.1", echo_port)
        for _n in range(5):  # the login node's port (sshd on loopback here) back to the echo server
            writer, back = await _echoes(remote.port, b"remote")
            assert back == b"remote"
            open_connections.append(writer)
        writer, back = await _echoes(remote.port, b"over the remote forward's cap")
        assert back == b"" and remote.cap.refused == 1
        writer.close()
        assert threading.active_count() <= threads + 4  # executors may add a worker or two, not one per connection

        # Closed connections give their slots back; the forwards work as before.
        for writer in open_connections:
            writer.close()
        open_connections.clear()
        await _wait_for(lambda: forward.cap.used == 0 and remote.cap.used == 0 and pool._forwarded.used == 0)
        writer, back = await _echoes(forward.port, b"after")
        assert back == b"after"
        writer.close()
    finally:
        for writer in open_connections:
            writer.close()
        await pool.close()


async def test_a_refused_remote_forward_is_dead_until_the_hub_holds_it_again(
        login_node: LoginNode, pool: SSHPool, http_port: int, echo_port: int, caplog: pytest.LogCaptureFixture):
    """The hub's connection drops; bob binds the login node's port before the hub asks for it
    again. The forward is dead (never handed out, logged), asked for again with backoff, and held
    again once bob lets go."""
    target = login_node.target()
    forward = await pool.open_remote_forward(target, "127.0.0.1", 0, "127.0.0.1", http_port)
    assert forward.held and forward.refusals == 0
    await forward.ensure_held()

    login_node.kill_connections()  # the login node forgets the hub's forward: its port is free
    squatter = SSHPool()
    try:
        squat = await squatter.open_remote_forward(login_node.target("bob"), "127.0.0.1", forward.port,
                                                   "127.0.0.1", echo_port)
        assert squat.port == forward.port
        await pool.run(target, ["true"], timeout=10)  # logs in again, asks for the forward again: refused
        assert not forward.held and forward.refusals == 1
        with pytest.raises(ForwardRefused, match=rf"refused to forward 127\.0\.0\.1:{forward.port} .*someone else"):
            await forward.ensure_held()
        assert f"remote forward 127.0.0.1:{forward.port} on {target} refused by the login node" in caplog.text

        await _wait_for(lambda: forward.refusals >= 2, timeout=5)  # asked again in the background
        assert not forward.held
        await squat.close()  # bob lets go
    finally:
        await squatter.close()
    await _wait_for(lambda: forward.held, timeout=10)
    await forward.ensure_held()
    fetch = ["python3", "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"]
    url = f"http://127.0.0.1:{forward.port}/back"
    assert (await pool.run(target, [*fetch, url], timeout=20)).stdout == "hello from /back\n"
