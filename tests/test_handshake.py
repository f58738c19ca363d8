"""The pre-flight handshake of a multi-process run, attacked: coordinator addresses a resolver
would misread, strangers on the port, a coordinator that is not one, and where it listens.

Every socket here is on 127.0.0.1 (or ::1 where the machine has it); processes are threads.
"""

from __future__ import annotations

import socket
import threading
import time

import jax
import pytest

from jdrop import montecarlo
from jdrop._src import distributed as mc_src

# ----------------------------------------------------------------------------
# The address parser, as a unit.


@pytest.mark.parametrize(
  "address, host",
  [
    ("127.0.0.1:1234", "127.0.0.1"),
    ("localhost:1", "localhost"),
    ("node-1.cluster.example.org:65535", "node-1.cluster.example.org"),
    ("node-1.example.org.:80", "node-1.example.org."),  # a fully qualified name
    ("[::1]:1234", "::1"),
    ("[fe80::1%eth0]:1234", "fe80::1%eth0"),
    ("1e3:80", "1e3"),  # a hostname label, not a number to a resolver
  ],
)
def test_good_addresses(address, host):
  assert mc_src.address_problem(address) is None
  assert mc_src.parse_address("f", address) == (host, int(address.rsplit(":", 1)[1]))


@pytest.mark.parametrize(
  "address, reason",
  [
    ("999:1234", "'999' is neither a dotted IPv4 address"),  # 0.0.3.231 to a resolver
    ("2130706433:1234", "is neither"),  # 127.0.0.1 as one integer
    ("127.1:1234", "'127.1' is neither"),
    ("0x7f.1:1234", "is neither"),
    ("0x7f:1234", "is neither"),
    ("017700000001:1234", "is neither"),  # octal
    ("127.000.000.001:1234", "is neither"),
    ("256.0.0.1:1234", "is neither"),
    ("1.2.3.4.5:1234", "is neither"),
    ("example.123:1234", "is neither"),  # a numeric top-level domain
    ("::1:1234", "an IPv6 address goes in brackets"),
    ("[::1:1234", "has a bracket without its pair"),
    ("::1]:1234", "has a bracket without its pair"),
    ("[127.0.0.1]:1234", "is not an IPv6 address"),
    ("[zz::1]:1234", "is not an IPv6 address"),
    ("host_name:1234", "is not a hostname"),
    ("-host:1234", "is not a hostname"),
    ("host-:1234", "is not a hostname"),
    ("a..b:1234", "is not a hostname"),
    ("h" * 64 + ":1234", "is not a hostname"),
    (("a." * 127) + "b:1234", "is not a hostname"),  # 255 characters
    ("héllo:1234", "is not a hostname"),
    ("127.0.0.1 :1234", "is neither"),
    ("nohost", "no port in 1..65535"),
    ("host:", "no port"),
    ("host:0", "no port"),
    ("host:65536", "no port"),
    ("host:-1", "no port"),
    ("host:８０", "no port"),  # full-width digits
    ("host:1e3", "no port"),
    (":1234", "no host before the ':'"),
    ("", "no port"),
    (None, "a str"),
    (1234, "a str"),
  ],
)
def test_bad_addresses_say_what_is_wrong(address, reason):
  problem = mc_src.address_problem(address)
  assert problem is not None and reason in problem, problem
  assert problem.startswith("must be HOST:PORT, HOST a hostname or a dotted or [bracketed] IP")
  with pytest.raises(ValueError) as exc:
    montecarlo.initialize(address, num_processes=2, process_id=0, timeout=1)
  assert str(exc.value).startswith("jdrop.montecarlo.initialize: `coordinator_address` must be")
  assert reason in str(exc.value)


# ----------------------------------------------------------------------------
# Strangers on the coordinator's port, and coordinators that are not one.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
  outcome: list = []

  def run():
    try:
      fn(*args, **kwargs)
      outcome.append(None)
    except Exception as err:  # collected for the assertions
      outcome.append(err)

  thread = threading.Thread(target=run)
  thread.start()
  return thread, outcome


def stranger(port: int, payload: bytes) -> bytes:
  """Connects to 127.0.0.1:port, sends ``payload``, returns what came back."""
  data = b""
  with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
    try:  # process 0 may hang up before all of a long payload is sent
      conn.sendall(payload)
      conn.shutdown(socket.SHUT_WR)
      while chunk := conn.recv(4096):
        data += chunk
    except OSError:
      pass
  return data


def connect_when_listening(port: int) -> None:
  deadline = time.monotonic() + 10
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      return
    except OSError:
      assert time.monotonic() < deadline
      time.sleep(0.02)


@pytest.mark.parametrize(
  "payload",
  [
    b"GET / HTTP/1.0\r\n\r\n",  # an HTTP client, a port scanner
    b"\x00\xff" * 100 + b"\n",  # binary junk
    b'{"num_processes": 2, "process_id": 1}\n',  # the right shape without the protocol
    b'{"protocol": "jdrop-rendezvous/0", "num_processes": 2, "process_id": 1, "study": {}}\n',
    b"[1, 2, 3]\n",
    b"x" * 200_000,  # more than a hello can be, no newline
    b"",  # connects and hangs up
  ],
)
def test_a_stranger_is_turned_away_and_the_real_process_still_joins(payload, monkeypatch):
  port = free_port()
  hello = dict(num_processes=2, timeout=10.0, study={"rate": 0.5})
  coordinator, result = in_thread(mc_src.rendezvous, f"127.0.0.1:{port}", process_id=0, **hello)
  connect_when_listening(port)  # itself a stranger that says nothing: turned away
  answer = stranger(port, payload)
  assert b"jdrop-rendezvous/1" in answer or answer == b""
  mc_src.rendezvous(f"127.0.0.1:{port}", process_id=1, **hello)
  coordinator.join(15)
  assert result == [None]


def test_a_silent_stranger_does_not_hold_the_others_up(monkeypatch):
  monkeypatch.setattr(mc_src, "_HELLO_SECONDS", 0.3)
  port = free_port()
  coordinator, result = in_thread(
    mc_src.rendezvous, f"127.0.0.1:{port}", num_processes=2, process_id=0, timeout=10.0
  )
  connect_when_listening(port)
  with socket.create_connection(("127.0.0.1", port), timeout=10):  # says nothing, stays
    start = time.monotonic()
    mc_src.rendezvous(f"127.0.0.1:{port}", num_processes=2, process_id=1, timeout=10.0)
    assert time.monotonic() - start < 5
  coordinator.join(15)
  assert result == [None]


def test_strangers_are_counted_when_the_real_processes_never_come():
  port = free_port()
  coordinator, result = in_thread(
    mc_src.rendezvous, f"127.0.0.1:{port}", num_processes=3, process_id=0, timeout=1.5
  )
  connect_when_listening(port)
  stranger(port, b"hello?\n")
  coordinator.join(10)
  (err,) = result
  assert isinstance(err, TimeoutError)
  assert "missing process ids: [1, 2]" in str(err)
  assert "2 connection(s) that did not speak jdrop-rendezvous/1 were turned away" in str(err)


def fake_coordinator(port: int, reply: bytes | None) -> threading.Thread:
  """A server on 127.0.0.1:port that reads one line and answers ``reply`` (None: closes)."""
  server = socket.create_server(("127.0.0.1", port))

  def serve():
    with server:
      conn, _ = server.accept()
      with conn:
        conn.settimeout(5)
        conn.recv(65536)
        if reply is not None:
          conn.sendall(reply)

  thread = threading.Thread(target=serve)
  thread.start()
  return thread


@pytest.mark.parametrize(
  "reply, needle",
  [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "something other than a jdrop coordinator answered"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "something other than a jdrop coordinator"),
    (b'{"ok": true}\n', "something other than a jdrop coordinator"),  # no protocol
    (b'{"protocol": "jdrop-rendezvous/2", "ok": true}\n', "the same jdrop version"),
    (b"{half a line", "something other than a jdrop coordinator"),
    (None, "closed the connection without answering (did process 0 stop?)"),
  ],
)
def test_a_coordinator_that_is_not_one_is_named_as_such(reply, needle):
  port = free_port()
  server = fake_coordinator(port, reply)
  with pytest.raises(ValueError) as exc:
    montecarlo.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=1, timeout=5)
  server.join(10)
  assert str(exc.value).startswith("jdrop.montecarlo.initialize: ") and needle in str(exc.value)
  assert f"127.0.0.1:{port}" in str(exc.value) or reply is not None


# ----------------------------------------------------------------------------
# Where process 0 listens.


def test_process_0_listens_on_the_coordinator_address_only(monkeypatch):
  bound = []
  listener = mc_src._listener

  def recording(host, port):
    server = listener(host, port)
    bound.append(server.getsockname()[:2])
    return server

  monkeypatch.setattr(mc_src, "_listener", recording)
  port = free_port()
  mc_src.rendezvous(f"127.0.0.1:{port}", num_processes=1, process_id=0, timeout=1.0)
  mc_src.rendezvous(f"localhost:{port}", num_processes=1, process_id=0, timeout=1.0)
  assert bound[0] == ("127.0.0.1", port)  # never "" or 0.0.0.0
  assert bound[1][0] in ("127.0.0.1", "::1") and bound[1][1] == port


def ipv6_loopback() -> bool:
  try:
    with socket.socket(socket.AF_INET6) as s:
      s.bind(("::1", 0))
  except OSError:
    return False
  return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_handshake_over_ipv6_loopback():
  with socket.socket(socket.AF_INET6) as s:
    s.bind(("::1", 0))
    port = s.getsockname()[1]
  coordinator, result = in_thread(
    mc_src.rendezvous, f"[::1]:{port}", num_processes=2, process_id=0, timeout=10.0
  )
  mc_src.rendezvous(f"[::1]:{port}", num_processes=2, process_id=1, timeout=10.0)
  coordinator.join(15)
  assert result == [None]


def test_a_host_that_does_not_resolve_is_one_line(monkeypatch):
  def no_such_host(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
  with pytest.raises(OSError) as exc:
    mc_src.rendezvous("node-7.example.org:1234", num_processes=1, process_id=0, timeout=1)
  text = str(exc.value)
  assert "process 0 cannot listen on node-7.example.org:1234" in text
  assert "Name or service not known" in text and "\n" not in text


def test_initialize_binds_jax_where_the_handshake_listened(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  port = free_port()
  montecarlo.initialize(f"127.0.0.1:{port}", num_processes=1, process_id=0, timeout=3)
  ((args, kwargs),) = calls
  assert args == (f"127.0.0.1:{port}",)
  assert kwargs["coordinator_bind_address"] == f"127.0.0.1:{port}"  # not JAX's [::]:port
  assert kwargs["heartbeat_timeout_seconds"] == kwargs["shutdown_timeout_seconds"] == 10
  assert 1 <= kwargs["initialization_timeout"] <= 3


@pytest.mark.parametrize("timeout", [1e12, float(mc_src.MAX_TIMEOUT) + 1])
def test_initialize_refuses_a_timeout_jax_cannot_take(timeout):
  with pytest.raises(ValueError, match="`timeout` must be at most 604800 seconds"):
    montecarlo.initialize("127.0.0.1:1234", num_processes=2, process_id=0, timeout=timeout)
