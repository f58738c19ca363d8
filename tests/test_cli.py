"""The command line: the table's content and its error handling."""

import json

import jax
import jax.numpy as jnp
import pytest

from jdrop._src import cli


def test_table_json_has_every_elementwise_activation_and_true_verdicts(capsys):
  assert cli.main(["table", "--json", "--num-masks", "8", "--rates", "0.5"]) == 0
  data = json.loads(capsys.readouterr().out)
  rows = {row["activation"]: row for row in data["rows"]}
  # Positively homogeneous activations commute pathwise, bit for bit.
  for name in ("relu", "abs", "identity"):
    assert rows[name]["orders_agree"] and rows[name]["zero_preserving"], rows[name]
  # f(0) = 0 is not enough: tanh, gelu, elu, relu6 keep 0 and still disagree.
  for name in ("tanh", "gelu", "elu", "relu6"):
    assert rows[name]["zero_preserving"] and not rows[name]["orders_agree"], rows[name]
    assert rows[name]["max_abs_diff"] > 0 and rows[name]["worst_rate"] == 0.5
  assert not rows["sigmoid"]["zero_preserving"]
  assert "softmax" not in rows  # not elementwise: one mask cannot serve both orders
  assert "f(0) = 0 holds for" in data["summary"]


def test_table_markdown_is_a_table(capsys):
  assert cli.main(["table", "--markdown", "--num-masks", "4", "--rates", "0.3"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("| activation | f(0) |")
  assert all(line.count("|") == lines[0].count("|") for line in lines[: lines.index("")])


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["table", "--rates", "1.5"], "rate must be a drop probability in [0, 1]"),
    (["table", "--rates", "abc"], "got 'abc'"),
    (["table", "--num-masks", "0"], "positive integer"),
    (["table", "--json", "--markdown"], "not allowed with"),
    (["nope"], "invalid choice"),
    ([], "required"),
  ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1, err


def test_equal_infinities_are_agreement_and_chunks_cover_every_mask():
  # Both orders give +inf at x = 100 for exp: that is agreement, not an infinite gap.
  f = lambda v: jnp.where(v > 1000, jnp.inf, jax.nn.relu(v))
  assert cli.compare_orders_on_sample(f, cli.sample_inputs(), rates=[0.5], num_masks=8) == (
    0.0,
    None,
    None,
  )
  # More masks than one chunk: a disagreement only some masks show is still found.
  diff, _, rate = cli.compare_orders_on_sample(
    jnp.tanh, cli.sample_inputs(), rates=[0.0, 0.5], num_masks=cli._CHUNK + 3
  )
  assert diff > 0 and rate == 0.5
