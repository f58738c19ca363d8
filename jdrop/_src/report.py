"""``python -m jdrop report --out DIR``: run the studies and write the answer.

The report runs every study in :mod:`jdrop._src.studies` (their embedded ``DEFAULT``
configurations, or ``FULL`` with ``full=True``), writes their figures (PNG) and raw results
(JSON) and a ``REPORT.md`` that opens with a one-paragraph answer, takes each claim of the
original mailing-list thread in turn, and gives a verdict with its evidence. Every sentence
that states a finding is computed from the results of this run.

The output directory is written atomically: everything is built in a hidden sibling
directory and renamed into place at the end, only if the directory is still what it was at
the start, so an error or an interrupt leaves the previous contents untouched and no
half-written report behind, and nothing that appeared meanwhile is replaced. A non-empty
directory is replaced only with ``force=True``, and only if it is an earlier report.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import errno
import functools
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TextIO

from jdrop._src import cli_args
from jdrop._src import machine
from jdrop._src.studies import literature
from jdrop._src.studies import stats as _stats

STUDIES = ("commutation", "training", "variance", "selu_depth", "uncertainty", "audit")


class ReportError(ValueError):
  """A problem with the report's arguments or output directory (one readable line)."""


class Progress:
  """A one-line progress bar on ``stream``, drawn only when it is a terminal."""

  def __init__(self, stream: TextIO = sys.stderr):
    self.stream = stream
    self.enabled = bool(getattr(stream, "isatty", lambda: False)())
    self.start = time.monotonic()

  def __call__(self, done: int, total: int, what: str) -> None:
    if not self.enabled:
      return
    filled = int(24 * done / max(total, 1))
    elapsed = time.monotonic() - self.start
    self.stream.write(
      f"\r[{'#' * filled}{'.' * (24 - filled)}] {done}/{total} {what[:48]:<48} {elapsed:5.0f} s"
    )
    if done >= total:
      self.stream.write("\n")
    self.stream.flush()


def _importable(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


def _module(name: str) -> Any:
  return importlib.import_module(f"jdrop._src.studies.{name}")


class OutputChanged(OSError):
  """``--out`` changed while the report was built, so it was left alone; the finished report
  is in ``kept``, a sibling folder."""

  def __init__(self, message: str, kept: Path):
    super().__init__(message)
    self.kept = kept


# The hidden folder a report is built in, beside --out: .NAME.jdrop-build-PID-RANDOM, holding
# a marker file that names its process (so that a later run can remove it once that process
# is gone: SIGKILL leaves it behind).
_BUILD = "jdrop-build"
_BUILD_NAME = re.compile(rf"\..+\.{_BUILD}-(\d+)-[A-Za-z0-9_]+")
_MARKER = ".jdrop-build"


def _entries(folder: Path) -> list[Path]:
  """Every file, folder and link below ``folder``, sorted (links are not followed)."""
  found = []
  for root, dirs, files in os.walk(folder):
    found += [Path(root, name) for name in (*dirs, *files)]
  return sorted(found)


@dataclasses.dataclass(frozen=True)
class _Snapshot:
  """What a folder was: its identity and every entry's path, size and modification time."""

  identity: tuple[int, int]
  entries: frozenset[tuple[str, int, int]]

  @classmethod
  def of(cls, folder: Path) -> _Snapshot | None:
    """The folder's snapshot; None if it is not a folder (any more)."""
    try:
      info = folder.lstat()
      entries = []
      for path in _entries(folder):
        stat = path.lstat()
        entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    except OSError:
      return None
    return cls((info.st_dev, info.st_ino), frozenset(entries))


def check_output(out: Path, *, force: bool) -> _Snapshot | None:
  """Refuses an ``out`` that the report may not replace; returns what it is now (None if it
  does not exist), for the final step to check that it did not change.

  Refused: the current folder or one that contains it, a mount point, a symbolic link, a
  file, a location whose parent does not exist or cannot be written; a non-empty folder
  without ``force``; and with ``force``, a folder that is not recognisably an earlier
  jdrop report (REPORT.md, PNG figures, results/*.json with a jdrop results/meta.json).
  """
  if out.name in ("", ".", ".."):
    raise ReportError(
      f"report: --out {str(out)!r} is not the name of a folder of its own (it is the current"
      " folder, one above it, or the root); pass e.g. --out jdrop-report"
    )
  resolved = out.resolve()
  if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
    raise ReportError(
      f"report: --out {out} contains the current folder, which cannot be replaced; pass the"
      " name of a new folder, e.g. --out jdrop-report"
    )
  if out.is_symlink():
    raise ReportError(f"report: --out {out} is a symbolic link; pass the folder itself")
  if out.exists() and not out.is_dir():
    raise ReportError(f"report: --out {out} exists and is not a directory; pick another path")
  if out.is_dir() and os.path.ismount(out):
    raise ReportError(f"report: --out {out} is a mount point, which cannot be replaced")
  parent = resolved.parent
  if not parent.is_dir():
    raise ReportError(f"report: the parent directory of --out {out} does not exist")
  if not os.access(parent, os.W_OK) or (out.is_dir() and not os.access(out, os.W_OK)):
    raise ReportError(f"report: cannot write to {out} (permission denied); pick another --out")
  if not out.is_dir():
    return None
  if any(out.iterdir()):
    if not force:
      raise ReportError(
        f"report: --out {out} is not empty; pass --force to replace an earlier report, or"
        " pick a new directory"
      )
    problem = _not_a_report(out)
    if problem is not None:
      raise ReportError(
        f"report: --force replaces only an earlier jdrop report, and --out {out} {problem};"
        " move it or pick another --out"
      )
  return _Snapshot.of(out)


def _not_a_report(folder: Path) -> str | None:
  """Why ``folder`` is not recognisably a report this module wrote, or None."""
  try:
    meta = json.loads((folder / "results" / "meta.json").read_text())
  except (OSError, ValueError):
    return "has no readable results/meta.json"
  if not (isinstance(meta, dict) and str(meta.get("command", "")).startswith("python -m jdrop")):
    return "has a results/meta.json that jdrop did not write"
  foreign = [
    str(path.relative_to(folder)) for path in _entries(folder) if not _a_report_file(path, folder)
  ]
  if foreign:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return f"holds what a report does not write ({shown})"
  return None


def _a_report_file(path: Path, folder: Path) -> bool:
  """Whether ``path`` is something a report writes: REPORT.md, a figure, the results folder
  or a results file (never a link)."""
  if path.is_symlink():
    return False
  if path == folder / "results":
    return path.is_dir()
  where = path.parent.relative_to(folder)
  top = where == Path(".") and (path.name in ("REPORT.md", _MARKER) or path.suffix == ".png")
  return (top or (where == Path("results") and path.suffix == ".json")) and path.is_file()


def free_sibling(path: Path) -> Path:
  """A name beside ``path`` that is free now: ``NAME.YYYYMMDD-HHMMSS`` (then ``-2``, ...)."""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  for n in itertools.count(1):
    candidate = path.with_name(f"{path.name}.{stamp}" + (f"-{n}" if n > 1 else ""))
    if not os.path.lexists(candidate):
      return candidate
  raise AssertionError("unreachable")  # pragma: no cover


def build(
  out: str | os.PathLike[str],
  *,
  force: bool = False,
  studies: Sequence[str] = STUDIES,
  full: bool = False,
  data: str | None = None,
  progress: Callable[[int, int, str], None] | None = None,
  argv: Sequence[str] | None = None,
) -> Path:
  """Runs the studies and writes ``out/REPORT.md``, its figures and raw results.

  Everything is written into a hidden folder beside ``out`` first. The last step puts it in
  place atomically (``renameat2`` on Linux) and only if ``out`` is what it was at the start:
  absent, an empty folder, or (with ``force``) the same earlier report, unchanged. If ``out``
  changed meanwhile (another run finished there, someone wrote into it), it is left alone,
  the finished report goes to a sibling folder, and :class:`OutputChanged` says where. An
  error or an interrupt removes the hidden folder; a hidden folder that a killed run left
  behind is removed by the next run once its process is gone.

  Args:
    out: the output directory (created; a non-empty one must be an earlier report, and
      needs ``force``).
    force: replace an earlier report in ``out``.
    studies: which studies to run (default all, see :data:`STUDIES`).
    full: the full-size configurations instead of the embedded defaults.
    data: an ``.npz`` file for the training study instead of scikit-learn's digits;
      checked whichever studies run.
    progress: ``progress(done, total, what)``, e.g. a :class:`Progress`.
    argv: the command line, recorded in the report.

  Returns:
    The path of ``REPORT.md``.

  Raises:
    ReportError: a bad argument or output location, found before any study runs.
    OutputChanged: ``out`` changed while the report was built (the report is elsewhere).
  """
  out = Path(out)
  unknown = [s for s in studies if s not in STUDIES]
  if unknown or not studies:
    raise ReportError(
      f"report: unknown study {', '.join(map(repr, unknown)) or '(none given)'}; choose from"
      f" {', '.join(STUDIES)}"
    )
  before = check_output(out, force=force)
  missing = [
    m for m in ("matplotlib", "mnist1d", "optax", "sklearn", "scipy") if not _importable(m)
  ]
  if missing:
    raise ReportError(
      f"report: needs the report extra (missing: {', '.join(missing)}); install it with"
      ' pip install "jdrop[report]"'
    )
  modules = {name: _module(name) for name in studies}
  configs = {name: module.FULL if full else module.DEFAULT for name, module in modules.items()}
  if data is not None:  # checked whichever studies run: a clear error, before any of them
    training = _module("training")
    with_data = training.with_data(training.FULL if full else training.DEFAULT, data)
    if "training" in configs:
      configs["training"] = with_data
  _remove_stale_builds(out.resolve().parent)
  tmp = _new_build(out)
  try:
    (tmp / "results").mkdir()
    sections, results, timings = {}, {}, {}
    for i, (name, module) in enumerate(modules.items()):
      start = time.perf_counter()

      def step(done: int, total: int, what: str, i: int = i) -> None:
        if progress is not None:
          progress(i * 1000 + int(1000 * done / max(total, 1)), 1000 * len(modules), what)

      results[name] = module.run(configs[name], progress=step)
      figures = module.figures(results[name], tmp)
      sections[name] = module.section(results[name], figures)
      timings[name] = time.perf_counter() - start
      (tmp / "results" / f"{name}.json").write_text(
        json.dumps(json_ready(results[name]), indent=1, allow_nan=False)
      )
    meta = metadata(argv, timings, full=full, data=data)
    (tmp / "results" / "meta.json").write_text(json.dumps(json_ready(meta), indent=1))
    (tmp / "REPORT.md").write_text(render(results, sections, meta))
    with cli_args.deferred():  # the last step runs whole: an interrupt waits for its end
      _place(tmp, out, before)
  except BaseException:
    if _ours(tmp):  # not once an earlier report was swapped to this name
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out / "REPORT.md"


def _new_build(out: Path) -> Path:
  """A new hidden build folder beside ``out``, marked with this process."""
  try:
    tmp = Path(
      tempfile.mkdtemp(prefix=f".{out.name}.{_BUILD}-{os.getpid()}-", dir=out.resolve().parent)
    )
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename into place
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid())}
    (tmp / _MARKER).write_text(json.dumps(owner))
  except OSError as err:
    raise ReportError(
      f"report: cannot create a folder beside --out {out} ({err.strerror or err}); pick"
      " another --out"
    ) from err
  return tmp


def _ours(tmp: Path) -> bool:
  """Whether ``tmp`` is still this process's build folder (it holds our marker)."""
  try:
    return json.loads((tmp / _MARKER).read_text()).get("pid") == os.getpid()
  except (OSError, ValueError, AttributeError):
    return False


def _started(pid: int, proc: Path = Path("/proc")) -> int | None:
  """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None."""
  try:
    stat = (proc / str(pid) / "stat").read_text()
  except OSError:
    return None
  return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may contain spaces


def _alive(owner: dict[str, Any]) -> bool:
  """Whether the process that ``owner`` names may still run (when unsure: yes)."""
  pid = owner.get("pid")
  if not isinstance(pid, int) or owner.get("host", socket.gethostname()) != socket.gethostname():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # another user's process
    pass
  started = owner.get("started")
  return started is None or _started(pid) in (None, started)  # not a reused pid


def _remove_stale_builds(parent: Path) -> None:
  """Removes the build folders in ``parent`` of runs whose process is gone.

  Only folders named like one (``.NAME.jdrop-build-PID-RANDOM``) whose marker, or name,
  names a process that no longer runs, and that hold a marker, nothing, or a report.
  """
  for path in parent.glob(f".*.{_BUILD}-*"):
    match = _BUILD_NAME.fullmatch(path.name)
    if match is None or path.is_symlink() or not path.is_dir():
      continue
    try:
      owner = json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
      owner = None
    recognised = isinstance(owner, dict) or not any(path.iterdir()) or not _not_a_report(path)
    if recognised and not _alive(owner if isinstance(owner, dict) else {"pid": int(match[1])}):
      shutil.rmtree(path, ignore_errors=True)


def _place(tmp: Path, out: Path, before: _Snapshot | None) -> None:
  """Puts the finished report ``tmp`` at ``out`` if ``out`` is still ``before``, atomically;
  otherwise moves it to a free sibling and raises :class:`OutputChanged`."""
  changed = None
  try:
    if before is None:  # out did not exist: create it, never replace what appeared meanwhile
      _rename(tmp, out, _RENAME_NOREPLACE)
    elif not before.entries:  # an empty folder: replace it only while it is empty
      now = _Snapshot.of(out)
      if now != before:
        changed = "it disappeared" if now is None else "it is no longer the empty folder it was"
      else:
        os.rename(tmp, out)  # POSIX replaces only an empty folder, atomically
    elif _rename(tmp, out, _RENAME_EXCHANGE):  # swapped: the old report is at tmp now
      if _Snapshot.of(tmp) != before:
        _rename(tmp, out, _RENAME_EXCHANGE)
        changed = "the earlier report in it changed"
      else:
        shutil.rmtree(tmp)
    elif (now := _Snapshot.of(out)) != before:  # no atomic swap here: check, then move twice
      changed = "it disappeared" if now is None else "the earlier report in it changed"
    else:
      old = tmp.with_name(tmp.name + "_old")  # a build folder's name: cleaned if left behind
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old)
  except OSError as err:
    if err.errno == errno.ENOENT and not os.path.lexists(out):
      changed = "it disappeared"
    elif err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
      changed = "something appeared there"
    else:
      raise
  if changed is None:
    (out / _MARKER).unlink(missing_ok=True)
    return
  kept = free_sibling(out)
  _rename(tmp, kept, _RENAME_NOREPLACE)
  (kept / _MARKER).unlink(missing_ok=True)
  raise OutputChanged(
    f"report: --out {out} changed while the report was built ({changed}), so it was left"
    f" alone; the finished report is in {kept}",
    kept,
  )


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
_AT_FDCWD = -100


def _rename(src: Path, dst: Path, flags: int) -> bool:
  """``renameat2(src, dst, flags)``: True if done, False where the system cannot (not Linux,
  an old C library, a file system without the flag). Without it, NOREPLACE falls back to a
  check and ``os.rename`` (True), EXCHANGE to nothing (False)."""
  libc = _libc()
  if libc is not None:
    if libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
      return True
    code = ctypes.get_errno()
    if code not in (errno.ENOSYS, errno.EINVAL):
      raise OSError(code, os.strerror(code), str(src), None, str(dst))
  if flags != _RENAME_NOREPLACE:
    return False
  if os.path.lexists(dst):
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
  os.rename(src, dst)
  return True


@functools.cache
def _libc() -> Any:
  """The C library, if it has ``renameat2`` (glibc 2.28 and later)."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
  except OSError:  # pragma: no cover - no C library to load
    return None
  return libc if hasattr(libc, "renameat2") else None


def json_ready(value: Any) -> Any:
  """``value`` with arrays and NumPy scalars as lists and numbers, and every NaN or infinity
  as the string ``"nan"``, ``"inf"`` or ``"-inf"``: strict JSON, which any parser reads (Python's
  ``json`` would write bare ``NaN``, which is not JSON)."""
  if isinstance(value, dict):
    return {key: json_ready(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(item) for item in value]
  if hasattr(value, "tolist"):
    return json_ready(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def metadata(
  argv: Sequence[str] | None, timings: dict[str, float], *, full: bool, data: str | None
) -> dict[str, Any]:
  import flax
  import jax
  import numpy as np
  import optax

  import jdrop

  return {
    "command": "python -m jdrop " + " ".join(argv if argv is not None else sys.argv[1:]),
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "configuration": "full" if full else "default",
    "data": data
    or "scikit-learn digits; MNIST-1D generated by mnist1d.data.make_dataset; modular addition"
    " generated in process",
    "machine": f"{machine.processor()}, {os.cpu_count()} cores",
    "backend": f"{jax.default_backend()} ({jax.devices()[0].device_kind})",
    "versions": {
      "python": platform.python_version(),
      "jdrop": jdrop.__version__,
      "jax": jax.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "numpy": np.__version__,
    },
    "seconds": {name: round(t, 1) for name, t in timings.items()},
  }


# ----------------------------------------------------------------------------
# The answer, computed from the results.


def _row(results: dict, name: str) -> dict | None:
  for row in results.get("commutation", {}).get("rows", []):
    if row["activation"] == name:
      return row
  return None


def _status(row: dict | None, mode: str) -> str:
  if row is None or row["verdict"] is None:
    return "not checked"
  return row["verdict"][mode]["status"]


def answer(results: dict) -> str:
  """The opening paragraph: every finding in it is computed from this run's results."""
  parts = ["**Short answer.**"]
  commutation = results.get("commutation")
  training = results.get("training")
  zero_keeping: dict[str, bool] = {}
  if commutation:
    rows = [r for r in commutation["rows"] if r["verdict"] is not None]
    zero_keeping = {r["activation"]: bool(r["verdict"]["zero_preserving"]) for r in rows}
    zero = [a for a, z in zero_keeping.items() if z]
    same = [r["activation"] for r in rows if r["verdict"]["pathwise"]["status"] == "proved"]
    differ = [a for a in zero if a not in same]
    parts.append(
      f" The order does not matter exactly for the positively homogeneous activations,"
      f" f(x) = a max(x, 0) + b min(x, 0): of the {len(rows)} activations checked, the checker"
      f" proves both orders identical for every mask and every rate for {len(same)}"
      f" ({', '.join(same)})"
    )
    identical = _relu_identical(training)
    if identical:
      parts.append(", and relu trains to bit-identical parameters in both orders")
    if differ:
      parts.append(
        f". For every other activation the two orders are different networks, and f(0) = 0 is"
        f" not the reason they agree: {len(differ)} of the {len(zero)} activations with"
        f" f(0) = 0 still differ (each with a certified counterexample, e.g."
        f" {', '.join(differ[:3])})."
      )
    else:
      parts.append(f". Every one of the {len(zero)} activations checked with f(0) = 0 commutes.")
  if training:
    paired = _paired(training)
    pre_better = _significant(paired, lambda p: p["mean"] < 0)
    post_better = _significant(paired, lambda p: p["mean"] > 0)
    count = sum(len(rates) for rates in (*pre_better.values(), *post_better.values()))
    verdicts = _replicated(training)
    then = " then" if commutation else ""
    lr = _lr_label(paired)
    if verdicts is None:
      parts.append(
        f" Which order trains better is{then} an empirical, activation-specific question: on"
        f" {_data_names(training)} ({len(training.get('seeds', []))} seeds), corrected for"
        f" testing {_family(training)}, the pre-minus-post difference in test error is"
        f" significant for {count} of {len(paired)} (activation, rate{lr}) pairs: pre-activation"
        f" dropout is better for {_listing(pre_better)} and post-activation dropout for"
        f" {_listing(post_better)}; elsewhere no difference was detected."
      )
      replicated = list(pre_better)
    else:
      parts.append(
        f" Which order trains better is{then} an empirical, activation-specific question. On"
        f" {len(training['tasks'])} tasks ({_data_names(training)};"
        f" {len(training.get('seeds', []))} seeds each), corrected for testing"
        f" {_family(training)}, the pre-minus-post difference in test error is significant for"
        f" {count} of {len(paired)} (task, activation, rate{lr}) comparisons."
      )
      if any(verdict != "nowhere" for verdict, _ in verdicts.values()):
        parts.append(
          f" The order matters on every task{_where_trained(training)} for"
          f" {_verdict_listing(verdicts, 'everywhere')}; on some tasks only for"
          f" {_verdict_listing(verdicts, 'somewhere')}; and on none for"
          f" {_verdict_listing(verdicts, 'nowhere')}."
        )
      else:
        nowhere = _verdict_listing(verdicts, "nowhere")
        parts.append(f" The order mattered on no task for any of them ({nowhere}).")
      replicated = [
        a
        for a, (verdict, cells) in verdicts.items()
        if verdict == "everywhere" and any(side == "pre" for _, side in cells)
      ]
    shifted = [a for a in replicated if zero_keeping.get(a) is False and a not in post_better]
    default = (
      " As a default, put dropout after the activation (dense -> activation -> dropout):"
      " it is Srivastava et al.'s placement and the one whose output is unbiased for the next"
      " layer, E[D(f(h))] = f(h), for any activation"
    )
    if shifted:
      everywhere = " on every task" if verdicts is not None else ""
      default += (
        f"; but for activations with f(0) != 0 ({', '.join(shifted)} here), where a dropped"
        " post-activation unit sends 0 instead of f(0), pre-activation dropout trained"
        f" better{everywhere}, so there the order is worth tuning."
      )
    else:
      default += "."
    parts.append(default)
  else:
    parts.append(
      " As a default, put dropout after the activation: Srivastava et al.'s placement, unbiased"
      " for the next layer (E[D(f(h))] = f(h))."
    )
  return "".join(parts)


def _significant(paired: list[dict], side: Callable[[dict], bool]) -> dict[str, list[float | str]]:
  """Activation -> the rates whose pre-minus-post comparison is significant after the
  family's correction (Holm) and whose mean difference passes ``side``."""
  out: dict[str, list[float | str]] = {}
  several = _several_lrs(paired)
  for r in paired:
    if r["pre_minus_post"].get("significant") and side(r["pre_minus_post"]):
      out.setdefault(r["variant"], []).append(_rate(r, several))
  return out


def _several_lrs(rows: list[dict]) -> bool:
  """Whether the training rows come from a grid of learning rates."""
  return len({r.get("learning_rate") for r in rows}) > 1


def _lr_label(rows: list[dict]) -> str:
  """``", learning rate"`` where the rows hold several learning rates, for "(activation,
  rate, learning rate) pairs"; else ``""``."""
  return ", learning rate" if _several_lrs(rows) else ""


def _rate(row: dict, several: bool) -> float | str:
  """A row's rate, or ``"0.3 at lr 0.01"`` when the rows hold several learning rates."""
  return f"{row['rate']:g} at lr {row['learning_rate']:g}" if several else row["rate"]


def _fmt(rate: float | str) -> str:
  return rate if isinstance(rate, str) else f"{rate:g}"


def _data_names(training: dict) -> str:
  """The training data's name, or the names of its tasks."""
  data = training["data"]
  if "tasks" in training:
    return ", ".join(data[t]["name"] for t in training["tasks"])
  return data["name"]


def _models(training: dict) -> str:
  """``"an MLP"``, or the models the tasks train: ``"an MLP, a CNN and a Transformer"``."""
  names = {"mlp": "an MLP", "cnn": "a CNN", "transformer": "a Transformer"}
  found = [
    names[m] for m in names if m in {c["model"] for c in training.get("task_configs", {}).values()}
  ]
  if len(found) <= 1:
    return found[0] if found else "an MLP"
  return ", ".join(found[:-1]) + " and " + found[-1]


def _replicated(training: dict) -> dict[str, tuple[str, list[tuple[float | str, str]]]] | None:
  """Activation -> (verdict, [(rate, "pre" | "post" | "mixed")]) across tasks, from the
  replication table: ``everywhere`` if at some rate the order is significant with one sign on
  every task (those rates listed), else ``somewhere`` if significant on any task (those rates),
  else ``nowhere``. None for a single task."""
  rows = training.get("replication")
  if not rows or len(training.get("tasks", [])) < 2:
    return None
  several = _several_lrs(rows)
  out: dict[str, tuple[str, list[tuple[float | str, str]]]] = {}
  rank = {"nowhere": 0, "somewhere": 1, "everywhere": 2}
  for row in rows:
    means = [row["tasks"][t]["mean"] for t in row["significant_in"]]
    side = "pre" if all(m < 0 for m in means) else "post" if all(m > 0 for m in means) else "mixed"
    verdict, cells = out.get(row["variant"], ("nowhere", []))
    if rank[row["verdict"]] > rank[verdict]:
      verdict, cells = row["verdict"], []
    if row["verdict"] == verdict and verdict != "nowhere":
      cells.append((_rate(row, several), side))
    out[row["variant"]] = (verdict, cells)
  return out


def _where_trained(training: dict) -> str:
  """``" where it was trained"`` if some replication row lacks a task (an activation or a
  learning rate that a task does not train), else ``""``: then "every task" in the
  replication verdicts means every task that ran it."""
  tasks = training.get("tasks", [])
  rows = training.get("replication") or []
  return " where it was trained" if any(len(r["tasks"]) < len(tasks) for r in rows) else ""


def _verdict_listing(verdicts: dict, verdict: str) -> str:
  found = {a: cells for a, (v, cells) in verdicts.items() if v == verdict}
  if not found:
    return "none"
  if verdict == "nowhere":
    return ", ".join(found)
  better = {"pre": "pre better", "post": "post better", "mixed": "opposite signs"}
  return ", ".join(
    f"{a} ({'; '.join(f'rate {_fmt(r)}: {better[side]}' for r, side in cells)})"
    for a, cells in found.items()
  )


def _family_size(training: dict) -> int:
  return int(training["family"]["size"])


def _family(training: dict) -> str:
  """``"m = 27 comparisons (Holm, family-wise level 0.05)"``, from the results' family."""
  alpha = training["family"]["alpha"]
  return f"m = {_family_size(training)} comparisons (Holm, family-wise level {alpha:g})"


def _listing(found: dict[str, list[float | str]]) -> str:
  if not found:
    return "none"
  return ", ".join(f"{a} (rate {', '.join(map(str, rates))})" for a, rates in found.items())


def _paired(training: dict) -> list[dict]:
  """Training summary rows with a pre-minus-post interval."""
  return [r for r in training.get("summary", []) if r.get("pre_minus_post") is not None]


def _relu_identical(training: dict | None) -> bool | None:
  rows = [r for r in (training or {}).get("identity", []) if r["variant"] == "relu"]
  return all(r["bit_identical"] for r in rows) if rows else None


def _training_answer(training: dict) -> str:
  paired = _paired(training)
  found = [r for r in paired if r["pre_minus_post"].get("significant")]
  lower = [r for r in found if r["pre_minus_post"]["mean"] < 0]
  data = _data_names(training)
  text = (
    f"In training ({_models(training)} on {data}, {len(training.get('seeds', []))} seeds per"
    " configuration),"
    f" corrected for testing {_family(training)}, the pre-minus-post difference in test error"
    f" is significant for {len(found)} of {len(paired)} (activation, rate{_lr_label(paired)})"
    " pairs:"
    f" pre-activation dropout is better in {len(lower)}, post-activation dropout in"
    f" {len(found) - len(lower)}; so beyond the homogeneous activations the order is a"
    " hyperparameter whose effect is measurable but activation-specific"
  )
  identical = _relu_identical(training)
  if identical is True:
    text += ". For relu the two orders train to bit-identical parameters."
  elif identical is False:
    text += ". For relu the parameters were NOT bit-identical (see the training section)."
  else:
    text += "."
  return text


def claims(results: dict) -> str:
  """Each claim of the thread, with a verdict and its evidence."""
  com = results.get("commutation")
  lines = ["## The thread's claims, one by one", ""]

  def claim(quote: str, verdict: str, evidence: str) -> None:
    lines.extend([f"> {quote}", "", f"**{verdict}** {evidence}", ""])

  claim(
    "Which is the recommended ordering: dense -> relu -> dropout or dense -> dropout -> relu?",
    "Either, for relu; dense -> activation -> dropout in general.",
    "For relu both orders give the same output for every mask (proved below). For any other"
    " activation, post-activation dropout keeps the next layer's input unbiased"
    " (E D(f(h)) = f(h)); pre-activation dropout shifts it unless f is affine on each side of 0"
    " (see the mean-shift table in section 1 and the training results in section 2).",
  )
  claim(
    "Intuitively dropout should not affect whether a node is activated ... in the original"
    " dropout paper it looks like it's the other way around.",
    "The paper does it the same way as the TF tutorial.",
    "Srivastava et al. (JMLR 2014, section 4, eq. for the dropout network) draw"
    " r ~ Bernoulli(p), compute y~ = r * y from the layer's *outputs* y = f(z), and feed"
    " z' = w y~ + b to the next layer: the mask multiplies activations, i.e. dense -> f ->"
    " dropout -> dense (with weights scaled by p at test time instead of inverted dropout)."
    " For relu, pre-activation dropout does not change which kept unit is active either:"
    " relu(x/q) > 0 iff x > 0.",
  )
  relu = _row(results, "relu")
  relu_bits = None
  if relu and relu["verdict"] and relu["verdict"].get("float_level"):
    f32 = relu["verdict"]["float_level"]["dtypes"][0]
    relu_bits = "bit for bit" if f32["bit_identical"] else f"within {f32['max_ulps']} ulp"
  proved = _status(relu, "pathwise") == "proved"
  identical = _relu_identical(results.get("training"))
  training_text = {
    True: "training with the same keys gives bit-identical parameters in both orders",
    False: "yet training did NOT give bit-identical parameters (see the training section)",
    None: "relu was not among the trained activations"
    if results.get("training")
    else "training was not run",
  }[identical]
  claim(
    "isn't that producing the exact same results?",
    (
      "Yes for relu, exactly, and even in floating point."
      if proved and relu_bits == "bit for bit" and identical is not False
      else "Yes for relu over the reals; see the float-level evidence."
      if proved
      else "Not shown."
    ),
    f"The checker's verdict for relu, pathwise at every rate: {_status(relu, 'pathwise')};"
    + (
      f" in float32 under jit the orders agree {relu_bits};"
      if relu_bits
      else " the float32 comparison was not run;"
    )
    + f" {training_text}. The example's"
    " arithmetic is right because relu(1.5 x) = 1.5 relu(x) for every x.",
  )
  if com:
    rows = [r for r in com["rows"] if r["verdict"] is not None]
    zero = [r for r in rows if r["verdict"]["zero_preserving"]]
    wrong = [r["activation"] for r in zero if r["verdict"]["pathwise"]["status"] != "proved"]
    example = _row(results, "tanh")
    cx = example["verdict"]["pathwise"]["counterexample"] if example else None
    cx_text = ""
    if cx:
      i = cx["index"]
      cx_text = (
        f" For tanh at x = {cx['x'][i]:g}, rate {cx['rate']}: f(D(x)) = {cx['pre'][i]:.4g} but"
        f" D(f(x)) = {cx['post'][i]:.4g} (certified)."
      )
    claim(
      "relu maps zero to zero so the order doesn't matter.",
      "The conclusion is right for relu, the reason is not."
      if wrong
      else "Right for every activation checked here.",
      "f(0) = 0 handles dropped units only; a kept unit also needs f(x/q) = f(x)/q, i.e."
      " positive homogeneity. "
      + (
        f"{len(wrong)} of the {len(zero)} registry activations with f(0) = 0 do not commute:"
        f" {', '.join(wrong)}."
        if wrong
        else f"All {len(zero)} registry activations checked with f(0) = 0 commute."
      )
      + cx_text,
    )
  exp = _row(results, "exponential")
  claim(
    "With an exponential activation, applying dropout after activation would effectively set"
    " the output to -inf.",
    "No: it sets the output to 0, which is what exp gives for an input of -inf.",
    "Dropout after exp zeroes the unit (0 = exp(-inf): the unit is switched off, as the"
    " poster's intent suggests); dropout *before* exp feeds exp(0) = 1 to the next layer for"
    f" every dropped unit. The checker: pathwise {_status(exp, 'pathwise')}, in expectation"
    f" {_status(exp, 'expectation')}" + _gap_text(exp) + ".",
  )
  sig = _row(results, "sigmoid")
  claim(
    "I'd probably put dropout before sigmoid activation, as that's trying to classify something"
    " as 0 or 1, and maps a zero input to 0.5 (no decision).",
    "Then a dropped unit sends 0.5, not 'nothing', to the next layer"
    + _sigmoid_headline(results.get("training")),
    "Pre-activation dropout makes every dropped sigmoid unit output 0.5, and kept units"
    " sigmoid(x/q), a sharper curve: each unit's expected output differs from eval mode"
    " (E f(D(x)) != f(x)), although for inputs symmetric about 0 the shifts cancel on"
    " average."
    f" Checker: pathwise {_status(sig, 'pathwise')}, expectation {_status(sig, 'expectation')}"
    + _gap_text(sig)
    + "."
    + _training_claim(results.get("training"), "sigmoid"),
  )
  return "\n".join(lines)


def _gap_text(row: dict | None) -> str:
  if not row or not row.get("gaps"):
    return ""
  rate = max(row["gaps"], key=float)
  gap = row["gaps"][rate]

  def moved(order: str) -> str:
    g = gap[order]
    noise = abs(g["mean_shift"]) <= _stats.NOISE_Z * g["mean_shift_stderr"]
    return f"{g['mean_shift']:.3g}" + (" (within noise of 0)" if noise else "")

  return (
    f"; for x ~ N(0, 1) at rate {rate} the train-mode mean moves by {moved('pre')} with"
    f" pre-activation dropout and by {moved('post')} with post-activation dropout (exact:"
    f" {gap['exact']['pre']['mean_shift']:.3g} and {gap['exact']['post']['mean_shift']:.3g})"
  )


def _sigmoid_headline(training: dict | None) -> str:
  rows = [r for r in _paired(training or {}) if r.get("variant") == "sigmoid"]
  if not rows:
    return "."
  found = [r for r in rows if r["pre_minus_post"].get("significant")]
  better = [r for r in found if r["pre_minus_post"]["mean"] < 0]
  worse = [r for r in found if r["pre_minus_post"]["mean"] > 0]
  if better and not worse:
    return (
      f"; measured here, pre-activation dropout did train better ({_where(training, better)},"
      " significant after Holm's correction)."
    )
  if worse and not better:
    return (
      f"; measured here, pre-activation dropout trained worse ({_where(training, worse)},"
      " significant after Holm's correction)."
    )
  if better and worse:
    return (
      f"; measured here, the order mattered in opposite directions: pre-activation dropout"
      f" trained better ({_where(training, better)}) and worse ({_where(training, worse)}),"
      " each significant after Holm's correction."
    )
  return (
    "; measured here, the order made no difference for sigmoid that survives Holm's correction."
  )


def _where(training: dict | None, rows: list[dict]) -> str:
  """``"rates 0.1, 0.3"``, or with tasks ``"digits at rate 0.1; MNIST-1D at rates 0.1, 0.3"``
  (each rate ``"0.3 at lr 0.01"`` where the training used several learning rates)."""
  several = _several_lrs(_paired(training or {}))

  def rates(cells: list[dict]) -> str:
    listed = ", ".join(_fmt(_rate(r, several)) for r in cells)
    return f"rate{'s' if len(cells) > 1 else ''} {listed}"

  if "tasks" not in (training or {}):
    return rates(rows)
  names = (training or {})["data"]
  per_task: dict[str, list[dict]] = {}
  for r in rows:
    per_task.setdefault(r["task"], []).append(r)
  return "; ".join(f"{names[task]['name']} at {rates(cells)}" for task, cells in per_task.items())


def _training_claim(training: dict | None, activation: str) -> str:
  if not training:
    return ""
  rows = [r for r in _paired(training) if r.get("variant") == activation]
  if not rows:
    return ""
  parts = []
  several = _several_lrs(rows)
  for r in rows:
    p = r["pre_minus_post"]
    adjusted = f", Holm-adjusted p = {p['p_t_holm']:.2g}"
    task = f"{training['data'][r['task']]['name']}, " if "tasks" in training else ""
    parts.append(
      f"{task}rate {_rate(r, several)}: {100 * p['mean']:+.2f} points [{100 * p['low']:+.2f},"
      f" {100 * p['high']:+.2f}]{adjusted}"
    )
  return (
    f" In training, test error pre minus post: {'; '.join(parts)} (95% intervals; Holm over"
    f" the family of {_family_size(training)} comparisons)."
  )


def render(results: dict, sections: dict[str, str], meta: dict[str, Any]) -> str:
  head = [
    "# Dropout before or after the activation?",
    "",
    f"_Generated by `{meta['command']}` on {meta['date']}; {meta['machine']},"
    f" {meta['backend']}; configuration: {meta['configuration']}"
    + (
      " (smaller than `--full`: fewer seeds and steps, and some training tasks on fewer"
      " activations, as each section says)"
      if meta["configuration"] == "default"
      else ""
    )
    + "._",
    "",
    answer(results),
    "",
    claims(results),
  ]
  body = [sections[name] for name in STUDIES if name in sections]
  body += [text for text in (literature.section(results),) if text]
  body = [text.rstrip("\n") + "\n" for text in body]  # a blank line after each section
  versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
  seconds = ", ".join(f"{k} {v} s" for k, v in meta["seconds"].items())
  tail = [
    "## Reproducibility",
    "",
    f"- command: `{meta['command']}`",
    f"- data: {meta['data']}",
    f"- versions: {versions}",
    f"- machine: {meta['machine']}; backend {meta['backend']}",
    f"- time per study: {seconds}",
    "- seeds and every configuration value: `results/*.json` (key `config`)",
    "",
  ]
  return "\n".join(head + body + tail)
