"""``python -m jdrop mc``: a Monte-Carlo study of both orders of dropout.

``python -m jdrop mc tanh --rate 0.5 --num-masks 1000000 --x -2 -1 0 1 2`` runs
:func:`jdrop.montecarlo.compare_orders` on the given inputs, prints the mean, variance and
standard error of both orders next to the exact values of
:func:`jdrop.montecarlo.exact_moments`, and with ``--json PATH`` writes them as JSON. The
masks are sharded over every device; with ``--coordinator HOST:PORT --num-processes N
--process-id I`` over every device of N processes (see :func:`jdrop.montecarlo.initialize`),
and only process 0 prints and writes. Errors are one line on stderr with exit status 2 (bad
arguments), 1 (the processes could not meet, or one of them died), 130 or 143 (SIGINT or
SIGTERM).

A multi-process run is supervised. JAX's distributed runtime ends a process with a C++ fatal
error (SIGABRT and a stack trace) when another process dies or stops answering, so this
process only checks the arguments and runs the study in a child process (:func:`worker`)
whose output goes to a log file. The child sends its progress and its result, or its error,
through a pipe; if it dies instead, this process says how on one line and keeps the log.

The subcommand is registered in :mod:`jdrop._src.cli` with :func:`add_parser` and
:func:`run`; :func:`main` runs it on its own (``python -m jdrop._src.cli_mc mc ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import activations
from jdrop._src import cli_args
from jdrop._src import distributed
from jdrop._src import montecarlo
from jdrop._src import order
from jdrop._src.report import free_sibling

PROG = "python -m jdrop mc"
_PREFIX_COMPARE = "jdrop.montecarlo.compare_orders"
DEFAULT_X = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
DEFAULT_TIMEOUT = 60.0
# The child of a multi-process run (tests replace it to inject faults).
WORKER = (
  sys.executable,
  "-c",
  "import sys; from jdrop._src import cli_mc; sys.exit(cli_mc.worker())",
)
_STOP_SECONDS = 5.0  # how long the child may take to stop after SIGINT/SIGTERM is passed on
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where the child imports jdrop from


_num_masks = cli_args.checked(
  int,
  lambda v: 0 < v <= montecarlo.MAX_MASKS,
  f"must be a positive integer of at most {montecarlo.MAX_MASKS}",
)
_float32 = cli_args.checked(
  float,
  lambda v: montecarlo.representable(v, np.float32),
  "must be a finite float32 number (at most 3.4028235e+38 in magnitude)",
)
_tolerance = cli_args.checked(
  float,
  lambda v: v >= 0 and montecarlo.representable(v, np.float32),
  "must be a number >= 0, finite in float32",
)
_num_processes = cli_args.checked(
  int, lambda v: 0 < v <= 2**16, "must be a positive integer of at most 65536"
)
_process_id = cli_args.checked(int, lambda v: v >= 0, "must be an integer >= 0")
_timeout = cli_args.checked(
  float,
  lambda v: 0 < v <= distributed.MAX_TIMEOUT,
  f"must be a number of seconds in (0, {distributed.MAX_TIMEOUT}]",
)


def _coordinator(text: str) -> str:
  problem = distributed.address_problem(text)
  if problem is not None:
    raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
  return text


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
  """Adds the ``mc`` subcommand to ``subparsers`` (those of ``python -m jdrop``)."""
  mc = subparsers.add_parser(
    "mc",
    help="Monte-Carlo statistics of both orders on the same masks, with exact references",
    description=(
      "Runs pre-activation f(D(x)) and post-activation D(f(x)) dropout on the same masks"
      " and reports per-input means, variances and standard errors, the exact values, and"
      " how often the orders disagree."
    ),
  )
  mc.add_argument("activation", help="a name from jdrop.activations, e.g. tanh")
  mc.add_argument("--rate", type=cli_args.closed_rate, required=True, help="the drop probability")
  mc.add_argument("--num-masks", type=_num_masks, required=True, help="the number of masks")
  mc.add_argument(
    "--x",
    type=_float32,
    nargs="+",
    default=list(DEFAULT_X),
    metavar="V",
    help="the float32 inputs (default: %(default)s)",
  )
  mc.add_argument("--seed", type=cli_args.seed, default=0, help="seed of the key (default: 0)")
  mc.add_argument(
    "--rtol",
    type=_tolerance,
    default=None,
    help="relative tolerance for a disagreement (default: 4 float32 epsilons)",
  )
  mc.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
  mc.add_argument("--force", action="store_true", help="overwrite an existing --json file")
  group = mc.add_argument_group(
    "several processes", "all three, the same in every process except --process-id"
  )
  group.add_argument(
    "--coordinator", type=_coordinator, metavar="HOST:PORT", help="address of process 0"
  )
  group.add_argument(
    "--num-processes", type=_num_processes, metavar="N", help="number of processes"
  )
  group.add_argument("--process-id", type=_process_id, metavar="I", help="this process, 0..N-1")
  group.add_argument(
    "--timeout",
    type=_timeout,
    default=DEFAULT_TIMEOUT,
    metavar="S",
    help="seconds to wait for the other processes (default: %(default)s)",
  )
  return mc


class ProgressBar:
  """A one-line progress bar on ``stream``, drawn only when ``stream`` is a terminal."""

  def __init__(self, stream: TextIO, label: str, unit: str = "masks"):
    self.stream = stream
    self.label = label
    self.unit = unit
    self.enabled = bool(getattr(stream, "isatty", lambda: False)())
    self.start = time.monotonic()
    self.open = False  # a partial line is on the terminal

  def __call__(self, done: int, total: int) -> None:
    elapsed = max(time.monotonic() - self.start, 1e-9)
    filled = int(30 * done / total)
    rate = done / elapsed
    eta = (total - done) / rate if rate else float("inf")
    self.stream.write(
      f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {100 * done / total:3.0f}%"
      f" {done}/{total} {self.unit}, {rate:.3g} {self.unit}/s, {eta:.0f} s left "
    )
    self.open = done < total
    if not self.open:
      self.stream.write("\n")
    self.stream.flush()

  def close(self) -> None:
    """Ends a partial line, so that a message after it starts on a line of its own."""
    if self.open:
      self.stream.write("\n")
      self.stream.flush()
      self.open = False


def _check_processes(args: argparse.Namespace) -> bool:
  """Validates the multi-process options; True if this is a multi-process run."""
  given = [args.coordinator is not None, args.num_processes is not None]
  given.append(args.process_id is not None)
  if not any(given):
    return False
  if not all(given):
    raise ValueError(
      "--coordinator, --num-processes and --process-id go together; pass all three"
      " (e.g. --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0)"
    )
  if not args.process_id < args.num_processes:
    raise ValueError(
      f"--process-id must be in 0..{args.num_processes - 1} for --num-processes"
      f" {args.num_processes}, got {args.process_id}"
    )
  return True


def _check_output(path: str | None, force: bool) -> None:
  """Refuses, before anything runs, a --json that exists (without --force) or is unwritable."""
  if path is None:
    return
  target = Path(path)
  if target.is_dir():
    raise ValueError(f"--json {path} is a directory; pass a file name")
  if (target.exists() or target.is_symlink()) and not force:
    raise ValueError(f"{path} exists; pass --force to overwrite it")
  if not target.parent.is_dir():
    raise ValueError(f"cannot write {path}: the folder {target.parent} does not exist")
  try:  # os.access cannot tell: root "may write" to /proc, and to a read-only mount
    _new_file(target).unlink()
  except OSError as err:
    raise ValueError(f"cannot write {path} ({err.strerror or err}); pick another --json") from err


def _new_file(target: Path, text: str = "") -> Path:
  """A new hidden file beside ``target`` holding ``text`` (to be linked into place whole)."""
  path = target.parent / f".{target.name}.{secrets.token_hex(4)}.jdrop-tmp"
  with open(path, "x") as file:
    file.write(text)
  return path


def _write(path: str, text: str, *, force: bool) -> None:
  """Writes ``text`` to ``path`` whole (never half a file). Without ``force`` a file that
  appeared while the study ran is kept: the text goes to a free sibling name instead, and
  the OSError says where."""
  target = Path(path)
  tmp = _new_file(target, text)
  try:
    if force:
      os.replace(tmp, target)
      return
    try:
      os.link(tmp, target)  # fails, atomically, if target exists
    except FileExistsError:
      kept = free_sibling(target)
      os.replace(tmp, kept)
      raise OSError(
        f"{path} appeared while the study ran and was left alone (pass --force to replace"
        f" it); the results are in {kept}"
      ) from None
    except OSError as err:  # a file system without hard links: exclusive creation instead
      if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
        raise
      with open(target, "x") as file:
        file.write(text)
  finally:
    tmp.unlink(missing_ok=True)


def _lists(moments: montecarlo.Moments, fields: Sequence[str]) -> dict[str, list[float]]:
  return {name: np.asarray(getattr(moments, name), np.float64).tolist() for name in fields}


def report(
  args: argparse.Namespace,
  result: montecarlo.Comparison,
  exact: montecarlo.Exact | None,
  seconds: float,
) -> dict[str, Any]:
  """The JSON document of a run."""
  return {
    "activation": args.activation,
    "rate": args.rate,
    "num_masks": result.num_masks,
    "seed": args.seed,
    "x": [float(v) for v in args.x],
    "pre": _lists(result.pre, ("mean", "var", "stderr")),
    "post": _lists(result.post, ("mean", "var", "stderr")),
    "reference": np.asarray(result.reference, np.float64).tolist(),
    "mismatch_fraction": result.mismatch_fraction,
    "max_abs_diff": result.max_abs_diff,
    "rtol": result.rtol,
    "exact": None
    if exact is None
    else {
      "pre": _lists(exact.pre, ("mean", "var")),
      "post": _lists(exact.post, ("mean", "var")),
    },
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "seconds": seconds,
  }


def render(data: dict[str, Any]) -> str:
  """The human-readable summary of a run's JSON document."""
  speed = data["num_masks"] / max(data["seconds"], 1e-9)
  lines = [
    f"{data['activation']}, rate {data['rate']:g}: {data['num_masks']} masks on"
    f" {data['devices']} device(s) in {data['processes']} process(es),"
    f" {data['seconds']:.2f} s ({speed:.3g} masks/s)",
    "(exact values in brackets; a +- is one standard error)",
  ]
  exact = data["exact"]
  header = ["x", "f(x)", "pre mean", "post mean", "pre var", "post var"]
  rows = []
  for i, x in enumerate(data["x"]):
    row = [f"{x:g}", f"{data['reference'][i]:.5g}"]
    for stat in ("mean", "var"):
      for name in ("pre", "post"):
        cell = f"{data[name][stat][i]:.5g}"
        if stat == "mean":
          cell += f" +- {data[name]['stderr'][i]:.2g}"
        if exact is not None:
          cell += f" [{exact[name][stat][i]:.5g}]"
        row.append(cell)
    rows.append(row)
  widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
  for r in [header, *rows]:
    lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
  lines.append(
    f"the orders disagree (beyond rtol {data['rtol']:.2g}) on"
    f" {100 * data['mismatch_fraction']:.4g}% of the masks; max |pre - post| ="
    f" {data['max_abs_diff']:.4g}"
  )
  return "\n".join(lines)


_STUDY = ("activation", "rate", "num_masks", "x", "seed", "rtol")  # what processes must share


def study(args: argparse.Namespace, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
  """Runs the study of ``args`` in this process (after ``jax.distributed`` starts, for a
  multi-process run) and returns its JSON document."""
  f = order.resolve_activation(_PREFIX_COMPARE, args.activation)
  if _check_processes(args):
    distributed.initialize(
      args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
      timeout=args.timeout,
      study={key: getattr(args, key) for key in _STUDY},
    )
  x = jnp.asarray(args.x, jnp.float32)
  start = time.perf_counter()
  result = montecarlo.compare_orders(
    jax.random.key(args.seed),
    f,
    x,
    rate=args.rate,
    num_masks=args.num_masks,
    rtol=args.rtol,
    progress=progress,
  )
  seconds = time.perf_counter() - start
  elementwise = activations.info(args.activation).elementwise
  exact = None
  if elementwise or x.size <= montecarlo.MAX_ENUMERATED_SIZE:
    exact = montecarlo.exact_moments(f, x, rate=args.rate)
  return report(args, result, exact, seconds)


def run(args: argparse.Namespace) -> int:
  """Runs ``python -m jdrop mc`` for parsed ``args``; returns the exit status."""
  bar = ProgressBar(sys.stderr, f"mc {args.activation}")
  try:
    order.resolve_activation(_PREFIX_COMPARE, args.activation)
    distributed = _check_processes(args)
    lead = not distributed or args.process_id == 0
    if lead:
      _check_output(args.json, args.force)
    if distributed:
      data = _supervise(args, bar if lead and bar.enabled else None)
    else:
      data = study(args, bar if bar.enabled else None)
    if lead:
      print(render(data))
      if args.json is not None:
        _write(args.json, json.dumps(data, indent=2) + "\n", force=args.force)
  except (ValueError, TypeError) as err:
    _error(bar, err)
    return 2
  except (OSError, RuntimeError) as err:  # TimeoutError included: the processes did not meet
    _error(bar, err)
    return 1
  except _Failed as failed:
    _error(bar, failed)
    return failed.status
  except cli_args.Interrupted:
    bar.close()
    raise
  return 0


def _error(bar: ProgressBar, err: Exception) -> None:
  bar.close()
  print(f"{PROG}: error: {cli_args.one_line(err)}", file=sys.stderr)


# ----------------------------------------------------------------------------
# The supervised child of a multi-process run.


class _Failed(Exception):
  """The child failed; ``status`` is the exit status to return, the message says why."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


def _supervise(args: argparse.Namespace, bar: ProgressBar | None) -> dict[str, Any]:
  """Runs :func:`study` in a child process and returns its document, or raises
  :class:`_Failed` with the child's error or, if it died, how it died."""
  read_end, write_end = os.pipe()
  log = tempfile.NamedTemporaryFile(  # kept when the child fails
    "w+", prefix=f"jdrop-mc-{args.process_id}-", suffix=".log", delete=False
  )
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
  try:
    child = subprocess.Popen(
      WORKER,
      stdin=subprocess.PIPE,
      stdout=log,
      stderr=log,
      pass_fds=(write_end,),
      env=env,
      text=True,
    )
  finally:
    os.close(write_end)
  messages: list[dict[str, Any]] = []
  try:
    with os.fdopen(read_end, "rb") as channel:
      request = {"channel": write_end, "parent": os.getpid(), "args": vars(args)}
      child.stdin.write(json.dumps(request) + "\n")
      child.stdin.close()
      for line in channel:  # until the child exits (or closes the pipe)
        message = json.loads(line)
        if message["kind"] == "progress" and bar is not None:
          bar(message["done"], message["total"])
        messages.append(message)
    child.wait()
  except BaseException:  # SIGINT or SIGTERM (passed on), or a broken pipe
    _stop(child)
    log.close()
    os.unlink(log.name)
    raise
  log.close()
  outcome = {m["kind"]: m for m in messages if m["kind"] != "progress"}
  if "result" in outcome:
    os.unlink(log.name)
    return outcome["result"]["data"]
  if "error" in outcome:
    os.unlink(log.name)
    raise _Failed(outcome["error"]["text"], outcome["error"]["status"])
  raise _Failed(_fate(args.process_id, child.returncode, Path(log.name)), 1)


def _stop(child: subprocess.Popen) -> None:
  """Asks the child to stop, and kills it if it does not within ``_STOP_SECONDS``.

  The request is SIGINT whatever this process received: once ``jax.distributed`` runs, its
  preemption notifier takes SIGTERM for a notice to checkpoint, and the child would go on.
  """
  with contextlib.suppress(ProcessLookupError):
    child.send_signal(signal.SIGINT)
  try:
    child.wait(_STOP_SECONDS)
  except subprocess.TimeoutExpired:
    child.kill()
    child.wait()


# What JAX's runtime says before it aborts a process: the error it propagates to every task,
# else the status in its fatal message, else that message, else a C++ exception's.
_CAUSES = (
  re.compile(r"propagate the following error to all tasks: ([^\n]*)"),
  re.compile(r"^F\d{4} [^\]]*\] .*?Status: ([^\n]*)", re.MULTILINE),
  re.compile(r"^F\d{4} [^\]]*\] ([^\n]*)", re.MULTILINE),
  re.compile(r"what\(\): +([^\n]*)"),
)
_RUNTIME = "JAX distributed service detected fatal errors"


def _fate(process_id: int, status: int, log: Path) -> str:
  """How the child of ``process_id`` died, from its exit status and its log (one line)."""
  how = f"by {signal.Signals(-status).name}" if status < 0 else f"with exit status {status}"
  text = log.read_text(errors="replace")
  cause = next((m[1] for pattern in _CAUSES if (m := pattern.search(text))), None)
  detail = "" if cause is None else f" ({cli_args.one_line(cause)[:200]})"
  if _RUNTIME in text:
    how += ": JAX's distributed runtime ends every process once one dies or stops answering"
  return f"process {process_id}'s computation was ended {how}{detail}; its log is {log}"


def worker() -> int:
  """The child of a multi-process run: reads ``{"channel": FD, "parent": PID, "args": {...}}``
  from stdin, runs :func:`study` and sends JSON lines on the pipe ``FD``: ``progress``
  messages, then ``result`` or ``error``. Returns the exit status."""
  request = json.loads(sys.stdin.readline())
  _end_with_parent(request["parent"])
  # The supervisor stops this process with SIGINT, even where a background job of a shell
  # left SIGINT ignored (which this process inherited).
  signal.signal(signal.SIGINT, signal.default_int_handler)
  args = argparse.Namespace(**request["args"])
  channel = os.fdopen(request["channel"], "w", buffering=1)

  def send(kind: str, **fields: Any) -> None:
    channel.write(json.dumps({"kind": kind, **fields}) + "\n")

  try:
    with cli_args.interrupts():
      # Every process must make the same calls: each reports progress, the lead's is drawn.
      data = study(args, lambda done, total: send("progress", done=done, total=total))
    send("result", data=data)
    status = 0
  except (ValueError, TypeError) as err:
    text, status = cli_args.one_line(err), 2
  except (OSError, RuntimeError) as err:
    text, status = cli_args.one_line(err), 1
  except cli_args.Interrupted as err:
    text, status = f"the computation was interrupted ({err})", err.status
  with contextlib.suppress(OSError):  # the supervisor may be gone
    if status:
      send("error", text=text, status=status)
    channel.close()
  return status


def _end_with_parent(parent: int) -> None:
  """Asks Linux to SIGKILL this process when its supervisor dies (SIGKILL gives the
  supervisor no time to pass anything on); elsewhere a closed pipe ends it later."""
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent:  # it died before prctl took effect
    os._exit(1)


_PR_SET_PDEATHSIG = 1


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m jdrop mc ...`` on its own (``argv`` starts with ``mc``)."""
  parser = cli_args.Parser(prog="python -m jdrop", description="jdrop's Monte-Carlo studies")
  add_parser(parser.add_subparsers(dest="command", required=True, parser_class=cli_args.Parser))
  args = parser.parse_args(argv)
  try:
    with cli_args.interrupts():
      return run(args)
  except cli_args.Interrupted as interrupted:
    print(
      f"{PROG}: interrupted ({interrupted}); nothing half-written was left behind", file=sys.stderr
    )
    return interrupted.status


if __name__ == "__main__":
  sys.exit(main())
