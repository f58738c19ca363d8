#!/usr/bin/env bash
# Mutation testing of the modules that carry jdrop's headline claims, with mutmut (3.x).
#
#   pip install -e ".[test,mutation]"
#   bash experiments/mutation.sh GROUP [SECONDS [MUTANT_PATTERN...]]
#
# GROUP: order | masks | dropout | report | studies. With MUTANT_PATTERNs (mutmut's names, with
# fnmatch wildcards, e.g. 'jdrop._src.masks.x_threefry*') it runs only those mutants and keeps
# the results of earlier runs in ./mutants, so a long group can be run in parts; without, it
# starts afresh.
#
# Each group mutates its modules and runs only the fast tests that guard them; mutmut copies the
# sources into ./mutants (git-ignored) and never edits jdrop/ itself. The summary goes to
# experiments/results/mutation-GROUP.txt. SECONDS bounds the run (default 1800); too slow for
# the per-push CI on 2 cores, so it is run by hand before a release and its result committed.
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?usage: mutation.sh order|masks|dropout|report|studies [SECONDS [MUTANT_PATTERN...]]}
limit=${2:-1800}
shift $(($# < 2 ? $# : 2))
case $group in
  order) mutate='"jdrop/_src/order.py"'; tests='"tests/test_order.py"' ;;
  masks) mutate='"jdrop/_src/masks.py"'; tests='"tests/test_masks.py", "tests/test_contract.py", "tests/test_fast.py"' ;;
  dropout)
    mutate='"jdrop/_src/dropout.py"'
    tests='"tests/test_contract.py", "tests/test_order.py", "tests/test_fast.py",'
    tests+=' "tests/test_narrow_floats_and_limits.py", "tests/test_statistics.py",'
    tests+=' "tests/test_regressions.py"' ;;
  report)
    mutate='"jdrop/_src/report.py"'
    tests='"tests/test_report_claims.py", "tests/test_report.py"' ;;
  studies)
    mutate='"jdrop/_src/studies/stats.py", "jdrop/_src/studies/commutation.py"'
    tests='"tests/test_study_stats.py", "tests/test_study_commutation.py"' ;;
  *) echo "mutation.sh: unknown GROUP '$group'" >&2; exit 2 ;;
esac
# mutmut reads its settings from a [tool.mutmut] table; write this group's into a copy of
# pyproject.toml for the run and put the original back afterwards.
cp pyproject.toml pyproject.toml.mutation-backup
trap 'mv pyproject.toml.mutation-backup pyproject.toml' EXIT
cat >> pyproject.toml <<TOML

[tool.mutmut]
source_paths = ["jdrop"]
only_mutate = [$mutate]
also_copy = ["conftest.py"]  # its hooks map fixtures' calls to every test that uses them
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:xdist", "--no-header"]
pytest_add_cli_args_test_selection = [$tests]
# Each mutant's tests run in a grandchild of a fork server. Forking from a process whose XLA
# runtime has started its thread pools (mutmut's default, and the server's "collect" warm-up,
# which imports the tests, whose module-level arrays start XLA) leaves children hung in
# compilation, which mutmut counts as timeouts. So the server imports only the third-party
# modules of experiments/mutation-preload.txt: importing JAX starts no thread pool, and each
# child then skips 2-5 s of imports. A child still compiles on its own, which the limits allow.
process_isolation = "forkserver"
forkserver_warmup = "import"
preload_modules_file = "$PWD/experiments/mutation-preload.txt"
timeout_constant = 20.0
timeout_multiplier = 4.0
TOML
if [ $# -eq 0 ]; then rm -rf mutants; fi
# CPU only, and one XLA compute thread per child: two children on 2 cores, no oversubscription.
export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
status=0
timeout "$limit" mutmut run --max-children 2 "$@" >/dev/null 2>&1 || status=$?
out=experiments/results/mutation-$group.txt
{
  echo "mutmut $(pip show mutmut 2>/dev/null | sed -n 's/^Version: //p'), group $group, limit ${limit}s, exit $status"
  mutmut results --all true 2>/dev/null | awk '{print $NF}' | sort | uniq -c
  # score = killed / (killed + survived + timeout + suspicious): a timeout is not a kill here
  mutmut results --all true 2>/dev/null | awk '{n[$NF]++} END {
    d = n["killed"] + n["survived"] + n["timeout"] + n["suspicious"]
    if (d) printf "score: %d / %d = %.1f%% killed\n", n["killed"], d, 100 * n["killed"] / d }'
  echo "survived:"
  mutmut results 2>/dev/null | grep -E "survived|suspicious" || echo "  none"
} >"$out"
cat "$out"
