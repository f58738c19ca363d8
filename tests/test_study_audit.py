"""The report's audit study on a tiny configuration: its numbers follow the theory."""

import dataclasses

import pytest

from jdrop._src.studies import audit as study

TINY = study.Config(num_masks=64, width=8, length=4, batch=2, mlp_steps=5)


@pytest.fixture(scope="module")
def results():
  return study.run(TINY)


def test_every_architecture_is_audited_in_both_orders(results):
  names = [a["name"] for a in results["architectures"]]
  assert len(names) == 4 and "Transformer" in names[0]
  transformer = results["architectures"][0]
  kinds = [(s["kind"], s["activation"], s["order"]) for s in transformer["post"]["sites"]]
  assert kinds == [
    ("attention", None, None),
    ("dropout", None, None),
    ("dropout", "gelu", "post"),
    ("dropout", None, None),
  ]
  assert [s["order"] for s in transformer["pre"]["sites"]][2] == "pre"
  conv = results["architectures"][1]["post"]["sites"]
  assert [(s["activation"], s["pathwise"], s["shape"]) for s in conv] == [
    ("relu", "proved", [2, 4, 4, 8])
  ]


def test_relu_sites_are_the_same_network_in_both_orders(results):
  for arch in results["architectures"]:
    for post, pre in zip(arch["post"]["sites"], arch["pre"]["sites"], strict=True):
      if post["activation"] == "relu":  # commutes pathwise: bit-identical estimates
        assert post["bias"] == pre["bias"] == post["moved_bias"] == pre["moved_bias"]
      elif post["activation"] is not None:
        assert post["pathwise"] == "refuted"
        if "trained" in arch["name"]:
          continue  # each order was trained on its own: different parameters
        assert post["moved_bias"] == pytest.approx(pre["bias"], rel=1e-5, abs=1e-7)
        assert pre["moved_bias"] == pytest.approx(post["bias"], rel=1e-5, abs=1e-7)


def test_section_and_figure(results, tmp_path):
  figures = study.figures(results, tmp_path)
  assert (tmp_path / figures[0]).stat().st_size > 0
  text = study.section(results, figures)
  assert text.startswith("## 6. Auditing whole architectures")
  assert "gelu does not commute with dropout" in text and "relu commutes with dropout" in text


def test_bad_config_is_refused():
  with pytest.raises(ValueError, match=r"config\.rate"):
    study.run(dataclasses.replace(TINY, rate=1.5))
