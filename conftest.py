"""Suite-wide setup."""

import os
import signal

import pytest

# A shell starts a background job (`nohup pytest ... &`, a CI step run in the background) with
# SIGINT ignored, and jdrop keeps a signal that was ignored when it started ignored, by
# design. The tests of Ctrl-C need it delivered: give this process (and so every child it
# starts) Python's own SIGINT handler back. A test of the ignored case ignores it itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

# Most of the suite's time is XLA compiling small programs once each (Flax models under
# audit, studies, the checker's loops), not running them. XLA's backend optimisation level 1
# (LLVM -O1) instead of its default 2 cuts the compile-bound tests by a third to a half (the
# audit's files: 354 s -> 232 s; the whole suite on 2 idle cores: 8 min 30 s -> 7 min 15 s)
# and changes no result the suite checks: every test also passes under the default, which
# `XLA_FLAGS=--xla_backend_optimization_level=2 pytest` runs (a level set in XLA_FLAGS is
# kept). Set here, before any test module starts XLA; the processes that tests start inherit
# it. jdrop itself never sets it: users' programs compile as JAX compiles them.
# Measured and not adopted (CPU time, 2 cores): XLA compiling is 62% of the tests' own CPU
# (5580 compiles); JAX's persistent compilation cache shared by the workers and the processes
# tests start saved 1.5% of the suite's CPU; jitting the audit tests' model.init saved nothing
# (eager ops' compiles are cached across tests); level 0 saved 17% on the audit's files but
# rounds two equal programs differently in the last bit, failing a bit-for-bit test of reorder.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
  ).strip()

if os.environ.get("MUTANT_UNDER_TEST") == "stats":
  # Mutation testing (experiments/mutation.sh): mutmut's stats phase maps each mutated function
  # to the tests that call it, collecting the calls made between two tests' teardowns. Two
  # kinds of call would be seen by the first test only, and a mutant there would never meet
  # the later tests (a false survivor):
  # - a module- or session-scoped fixture runs inside the first test that asks for it. Here
  #   every test is also given the functions its fixtures called when they were set up;
  # - a function called while JAX traces (the body of a jitted function) or behind a
  #   functools cache runs again only on a cache miss. Here every test starts with JAX's and
  #   jdrop's caches empty, so it traces what it uses.
  import sys

  import jax
  from mutmut.state import state as _mutmut_state

  @pytest.hookimpl(tryfirst=True)
  def pytest_runtest_setup(item):
    jax.clear_caches()
    for name, module in list(sys.modules.items()):
      if name == "jdrop" or name.startswith("jdrop."):
        for value in list(vars(module).values()):
          if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()

  _calls_by_fixture: dict[int, set[str]] = {}

  @pytest.hookimpl(hookwrapper=True)
  def pytest_fixture_setup(fixturedef, request):
    outer = _mutmut_state()._stats
    _mutmut_state()._stats = set()
    try:
      yield
    finally:
      calls = _mutmut_state()._stats
      _calls_by_fixture.setdefault(id(fixturedef), set()).update(calls)
      _mutmut_state()._stats = outer | calls

  @pytest.hookimpl(tryfirst=True)
  def pytest_runtest_teardown(item, nextitem):
    for fixturedefs in item._fixtureinfo.name2fixturedefs.values():
      for fixturedef in fixturedefs:
        _mutmut_state()._stats.update(_calls_by_fixture.get(id(fixturedef), ()))
