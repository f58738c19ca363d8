"""Several processes: the coordinator address, a handshake before JAX's distributed start-up,
and :func:`initialize`, which the ``mc`` command and library users call."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import re
import socket
import time
from typing import Any

import jax
import numpy as np

from jdrop._src import errors

PREFIX = "jdrop.montecarlo."  # initialize is public as jdrop.montecarlo.initialize
MAX_TIMEOUT = 7 * 24 * 3600  # seconds, for initialize


# ----------------------------------------------------------------------------
# Several processes.


_PROTOCOL = "jdrop-rendezvous/1"  # in every handshake message; anything else is a stranger
_MAX_MESSAGE = 2**16  # bytes; a hello is a few hundred
_HELLO_SECONDS = 5.0  # how long process 0 waits for a new connection's hello
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # one label of a hostname (RFC 1123)
_ADDRESS_FORM = (
  "must be HOST:PORT, HOST a hostname or a dotted or [bracketed] IP address, PORT in 1..65535"
)


def address_problem(address: Any) -> str | None:
  """What is wrong with ``address`` as ``"HOST:PORT"`` (a clause for an error), or None.

  HOST is a hostname (``node-1.example.org``), a dotted IPv4 address (``127.0.0.1``) or a
  bracketed IPv6 address (``[::1]``). What a resolver would read as a number is refused:
  ``999`` is the IPv4 address 0.0.3.231, ``127.1`` is 127.0.0.1, ``0x7f`` is 0.0.0.127.

  >>> address_problem("node-1:1234") is None, address_problem("[::1]:80")
  (True, None)
  >>> address_problem("999:1234")  # doctest: +ELLIPSIS
  "must be HOST:PORT, ... ('999' is neither a dotted IPv4 address ... nor a hostname (...))"
  """
  if not isinstance(address, str):
    return f"{_ADDRESS_FORM} (a str)"
  host, colon, port = address.rpartition(":")
  reason = None
  if not colon or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
    reason = "no port in 1..65535 after the last ':'"
  elif not host:
    reason = "no host before the ':'"
  elif host.startswith("[") or host.endswith("]"):
    if not (host.startswith("[") and host.endswith("]")):
      reason = f"{host} has a bracket without its pair"
    elif not _is_ip(host[1:-1], ipaddress.IPv6Address):
      reason = f"{host} is not an IPv6 address"
  elif ":" in host:
    reason = f"an IPv6 address goes in brackets, e.g. [{host}]:{port}"
  elif _is_ip(host, ipaddress.IPv4Address):
    pass
  elif _reads_as_number(host):
    reason = f"{errors.short(host)} is neither a dotted IPv4 address (four numbers 0..255) nor a"
    reason += " hostname (a resolver would read it as a number)"
  elif len(host) > 253 or not all(_LABEL.fullmatch(p) for p in host.removesuffix(".").split(".")):
    reason = f"{errors.short(host)} is not a hostname (letters, digits and '-' between dots)"
  return None if reason is None else f"{_ADDRESS_FORM} ({reason})"


def _is_ip(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
  try:
    kind(text)
  except ValueError:
    return False
  return True


def _reads_as_number(host: str) -> bool:
  """Whether a resolver reads ``host`` as a number (``999``, ``127.1``, ``0x7f``, ``1.2.3.4.5``)."""
  if host.removesuffix(".").rsplit(".", 1)[-1].isdigit():  # a top-level domain is never numeric
    return True
  try:
    socket.inet_aton(host)
  except OSError:
    return False
  return True


def parse_address(fn: str, address: Any, *, arg: str = "coordinator_address") -> tuple[str, int]:
  """``"HOST:PORT"`` as ``(host, port)`` (an IPv6 host without its brackets), or a clear
  error naming ``fn`` and ``arg`` (see :func:`address_problem`)."""
  problem = address_problem(address)
  if problem is not None:
    raise errors.value_error(
      fn,
      arg,
      problem,
      errors.short(address),
      "Pass e.g. '127.0.0.1:12345' (the address of process 0).",
    )
  host, _, port = address.rpartition(":")
  return host.removeprefix("[").removesuffix("]"), int(port)


class _Refused(Exception):
  """Process 0 refused the study: ``timeout`` says whether it was for lack of time."""

  def __init__(self, message: str, *, timeout: bool = False):
    super().__init__(message)
    self.timeout = timeout

  def raised(self) -> Exception:
    kind = TimeoutError if self.timeout else ValueError
    return kind(f"{PREFIX}initialize: {self}.")


class _Stranger(Exception):
  """The other end does not speak this handshake (another program, or another jdrop)."""


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
  conn.sendall((json.dumps({"protocol": _PROTOCOL, **message}) + "\n").encode())


def _receive(conn: socket.socket, deadline: float) -> dict[str, Any] | None:
  """One handshake message from ``conn`` before ``deadline``; None if the peer closed first.

  Raises:
    _Stranger: for anything but one JSON line of this protocol, or more than
      ``_MAX_MESSAGE`` bytes.
    OSError: on a time-out or a network error.
  """
  data = b""
  while not data.endswith(b"\n"):
    if len(data) > _MAX_MESSAGE:
      raise _Stranger
    conn.settimeout(max(deadline - time.monotonic(), 1e-3))
    chunk = conn.recv(4096)
    if not chunk:
      if data:
        raise _Stranger
      return None
    data += chunk
  try:
    message = json.loads(data)
  except ValueError:
    raise _Stranger from None
  if not isinstance(message, dict) or message.get("protocol") != _PROTOCOL:
    raise _Stranger
  return message


def rendezvous(
  address: str,
  *,
  num_processes: int,
  process_id: int,
  timeout: float,
  study: dict[str, Any] | None = None,
) -> None:
  """Checks, before JAX's runtime starts, that the processes agree; raises if they do not.

  Process 0 listens on the coordinator's address (that address only, so it must be one of
  process 0's machine); every other process connects (retrying until ``timeout``) and sends
  its ``num_processes``, ``process_id`` and ``study`` (a JSON dict describing the
  computation), tagged with the handshake's protocol name. Process 0 checks that every id in
  1..N-1 arrives once, with its own N and study, answers everyone, and frees the port for
  JAX's coordinator. A connection that does not speak the protocol (a port scanner, another
  program on the port) is turned away without failing the others; a process that reaches
  something other than a jdrop coordinator says so. ``jax.distributed.initialize`` itself
  aborts the process (a C++ fatal error with a stack trace, after its timeout) when the
  coordinator is unreachable or a process is missing; this turns those cases into Python
  exceptions within ``timeout`` seconds, in every process that is running.

  Raises:
    TimeoutError: the coordinator could not be reached, or processes were missing, within
      ``timeout`` seconds.
    ValueError: the processes disagree on the number of processes, an id, or the study, or
      something other than a jdrop coordinator answered.
    OSError: process 0 cannot listen on the coordinator's address.
  """
  host, port = parse_address(PREFIX + "initialize", address)
  deadline = time.monotonic() + timeout
  hello = {"num_processes": num_processes, "process_id": process_id, "study": study or {}}
  try:
    if process_id != 0:
      _join(host, port, hello, deadline, timeout)
    else:  # also alone: listening proves that the address is this machine's
      _gather(host, port, hello, deadline, timeout)
  except _Refused as refused:
    raise refused.raised() from None


def _join(host: str, port: int, hello: dict[str, Any], deadline: float, timeout: float) -> None:
  """A process other than 0: reach process 0, say hello, and wait for its verdict."""
  last_error: OSError | None = None
  while (remaining := deadline - time.monotonic()) > 0:
    try:
      conn = socket.create_connection((host, port), timeout=min(remaining, 5.0))
      break
    except OSError as err:
      last_error = err
      time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
  else:
    raise _Refused(
      f"could not reach the coordinator at {host}:{port} within {timeout:g} s"
      f" ({last_error}); start process 0, and check the address, the port and the firewall",
      timeout=True,
    )
  with conn:
    try:
      _send(conn, hello)
      reply = _receive(conn, deadline)
    except _Stranger:
      raise _Refused(
        f"something other than a jdrop coordinator answered at {host}:{port} (it does not"
        f" speak {_PROTOCOL}); check the address and the port, and that every process runs"
        " the same jdrop version"
      ) from None
    except OSError:
      reply = {"error": f"no answer from the coordinator within {timeout:g} s", "timeout": True}
  if reply is None:
    raise _Refused(
      f"the coordinator at {host}:{port} closed the connection without answering (did"
      " process 0 stop?)"
    )
  if not reply.get("ok"):
    message = reply.get("error", f"the coordinator at {host}:{port} refused without a reason")
    raise _Refused(str(message), timeout=bool(reply.get("timeout")))


def _listener(host: str, port: int) -> socket.socket:
  """A socket listening on ``host:port`` only, or an OSError that says why it cannot."""
  try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    server = socket.socket(family, kind, proto)
  except OSError as err:
    raise OSError(
      f"{PREFIX}initialize: process 0 cannot listen on {host}:{port} ({err}); pass an"
      " address of process 0's machine as the coordinator."
    ) from err
  try:
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
  except OSError as err:
    server.close()
    raise OSError(
      f"{PREFIX}initialize: process 0 cannot listen on {host}:{port} ({err.strerror});"
      " pass an address of process 0's machine and a free port as the coordinator."
    ) from err
  return server


def _gather(host: str, port: int, hello: dict[str, Any], deadline: float, timeout: float) -> None:
  """Process 0: wait for every other process, check it, answer all of them."""
  num_processes = hello["num_processes"]
  joined: set[int] = set()
  conns: list[socket.socket] = []
  strangers = 0
  refused: _Refused | None = None
  with _listener(host, port) as server:
    server.listen(num_processes)
    try:
      while refused is None and len(joined) < num_processes - 1:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          missing = sorted(set(range(1, num_processes)) - joined)
          turned_away = (
            f"; {strangers} connection(s) that did not speak {_PROTOCOL} were turned away"
            if strangers
            else ""
          )
          refused = _Refused(
            f"only {len(joined)} of the {num_processes - 1} other processes joined within"
            f" {timeout:g} s (missing process ids: {missing}); start them with the same"
            f" number of processes and the coordinator's address{turned_away}",
            timeout=True,
          )
          break
        server.settimeout(remaining)
        try:
          conn, _ = server.accept()
        except OSError:
          continue
        try:
          message = _receive(conn, min(deadline, time.monotonic() + _HELLO_SECONDS))
        except (_Stranger, OSError):
          message = None
        if message is None:  # not a jdrop process: turn it away, keep waiting for the others
          strangers += 1
          with contextlib.suppress(OSError):
            _send(conn, {"error": f"this port is a {_PROTOCOL} coordinator"})
          conn.close()
          continue
        conns.append(conn)
        problem = _check_peer(hello, message, joined)
        if problem is None:
          joined.add(message["process_id"])
        else:
          refused = _Refused(problem)
      reply: dict[str, Any] = {"ok": True}
      if refused is not None:
        reply = {"error": str(refused), "timeout": refused.timeout}
      for conn in conns:
        try:
          _send(conn, reply)
          conn.settimeout(max(deadline - time.monotonic(), 1.0))
          conn.recv(1)  # let the peer close first, so no TIME_WAIT is left on this port
        except OSError:
          pass
    finally:
      for conn in conns:
        conn.close()
  if refused is not None:
    raise refused


def _check_peer(mine: dict[str, Any], theirs: dict[str, Any], joined: set[int]) -> str | None:
  """Why another process's hello does not match process 0's, or None."""
  process_id, count = theirs.get("process_id"), theirs.get("num_processes")
  if not isinstance(process_id, int) or not isinstance(count, int):
    return "something other than a jdrop process connected to the coordinator's port"
  if count != mine["num_processes"]:
    return (
      f"mismatched process counts: process {process_id} was started with"
      f" num_processes={count}, process 0 with num_processes={mine['num_processes']}"
    )
  if not 0 < process_id < count:
    return f"process id {process_id} is out of range for {count} processes (0..{count - 1})"
  if process_id in joined:
    return f"two processes were started with process_id={process_id}"
  theirs_study = theirs.get("study", {})
  differ = sorted(
    k for k in {*mine["study"], *theirs_study} if mine["study"].get(k) != theirs_study.get(k)
  )
  if differ:
    return (
      f"process {process_id} runs a different study from process 0 (they differ in"
      f" {', '.join(differ)}); start every process with the same arguments"
    )
  return None


def initialize(
  coordinator_address: str,
  *,
  num_processes: int,
  process_id: int,
  timeout: float = 60.0,
  study: dict[str, Any] | None = None,
) -> None:
  """Starts ``jax.distributed`` for a multi-process study, failing fast on one line.

  Runs :func:`rendezvous` (every process reaches process 0 and agrees on the number of
  processes and on ``study``), then ``jax.distributed.initialize`` with CPU collectives
  over gloo. Afterwards ``jax.devices()`` lists every process's devices and
  :func:`compare_orders` shards its masks over all of them. Call it before any other JAX
  computation, in every process, with the same ``coordinator_address`` (process 0's host
  and a free port) and ``num_processes``. Forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``) give each process several CPU
  devices.

  Once started, JAX's runtime watches every process: when one dies or stops answering for
  ``max(10, timeout)`` seconds, it ends every other process with a C++ fatal error (SIGABRT
  and a stack trace), which no Python code can catch. ``python -m jdrop mc`` therefore runs
  this, and the computation, in a child process and reports the child's fate on one line.

  Args:
    coordinator_address: ``"HOST:PORT"`` of process 0, an address of process 0's machine
      (JAX's coordinator listens there only, as does the handshake).
    num_processes: the number of processes, at least 1.
    process_id: this process's id in ``0 .. num_processes - 1``.
    timeout: seconds to wait for the other processes (also JAX's initialization timeout,
      and at least 10, its heartbeat and shutdown timeouts).
    study: a JSON-serialisable dict that must be equal in every process.

  Raises:
    TimeoutError, ValueError, OSError: see :func:`rendezvous`.
  """
  fn = PREFIX + "initialize"
  parse_address(fn, coordinator_address)
  num_processes = errors.check_count(fn, "num_processes", num_processes, upper=2**16, example="2")
  if isinstance(process_id, (bool, np.bool_)) or not isinstance(process_id, (int, np.integer)):
    raise errors.type_error(
      fn, "process_id", "must be an integer", errors.short(process_id), "Pass e.g. process_id=0."
    )
  if not 0 <= process_id < num_processes:
    raise errors.value_error(
      fn,
      "process_id",
      f"must be in 0..{num_processes - 1} for num_processes={num_processes}",
      int(process_id),
      "Number the processes 0, 1, ..., num_processes - 1.",
    )
  timeout = errors.check_real(fn, "timeout", timeout, positive=True)
  if timeout > MAX_TIMEOUT:  # JAX's timeouts are C ints of seconds
    raise errors.value_error(
      fn, "timeout", f"must be at most {MAX_TIMEOUT} seconds (a week)", timeout,
      "Pass e.g. timeout=60.",
    )  # fmt: skip
  start = time.monotonic()
  rendezvous(
    coordinator_address,
    num_processes=num_processes,
    process_id=int(process_id),
    timeout=timeout,
    study=study,
  )
  # JAX reads its options as dynamic attributes, which mypy cannot see.
  if jax.config.jax_cpu_collectives_implementation is None:  # type: ignore[attr-defined]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  remaining = max(1, math.ceil(timeout - (time.monotonic() - start)))
  seconds = max(10, math.ceil(timeout))
  jax.distributed.initialize(
    coordinator_address,
    num_processes=num_processes,
    process_id=int(process_id),
    initialization_timeout=remaining,
    coordinator_bind_address=coordinator_address,  # where the handshake listened, not [::]
    heartbeat_timeout_seconds=seconds,
    shutdown_timeout_seconds=seconds,
  )
