"""The workdir's own files: its vocabulary and its run config, checked before they are used.

A damaged file of a copy of the session's tiny run (conftest.py) is refused
in one line naming it.
"""

import json

from polyflax import cli
from fault_runs import one_error_line, tiny_config


def test_mismatched_or_unreadable_vocabulary_is_refused(tiny_run_copy, data_dir, capsys):
  trained = tiny_run_copy
  path = trained / "vocab.json"
  tokens = json.loads(path.read_text())
  tokens[14], tokens[15] = tokens[15], tokens[14]
  path.write_text(json.dumps(tokens))
  for mode in ("train", "evaluate"):
    assert cli.run(mode, tiny_config(data_dir), str(trained)) == 2
    error = one_error_line(capsys.readouterr().err)
    assert f"vocabulary {path} does not match" in error
    assert "id 14 is 'c' there and 'a' here" in error
  path.write_text('["<pad>", "<bos>"')
  assert cli.run("train", tiny_config(data_dir), str(trained)) == 2
  assert f"cannot read the vocabulary {path}" in one_error_line(capsys.readouterr().err)


def test_unreadable_run_config_is_refused_naming_the_file(tiny_run_copy, data_dir, capsys):
  trained = tiny_run_copy
  (trained / "config.json").write_text('{"model": {"hidden_dim": 3')
  assert cli.run("evaluate", tiny_config(data_dir), str(trained)) == 2
  error = one_error_line(capsys.readouterr().err)
  assert error.startswith(f"error: cannot read the run's config {trained / 'config.json'}: ")


def test_a_run_saved_before_the_row_classes_existed_keeps_the_datas_own_mix(tmp_path):
  # Evaluation rebuilds the lines a run trained on from the run's config.json:
  # a field the run did not save yet is what the run trained with (0), not the
  # evaluating config's value.
  from polyflax import workdir  # pylint: disable=import-outside-toplevel
  saved = tiny_config(tmp_path, train_data="generated", generated_cancel_fraction=0.05)
  (tmp_path / "config.json").write_text(json.dumps(
      {name: value for name, value in saved.to_dict().items()
       if name not in ("generated_near_cancel_fraction", "generated_edge_fraction")}))
  asked = tiny_config(tmp_path, train_data="generated", generated_cancel_fraction=0.2,
                      generated_near_cancel_fraction=0.1, generated_edge_fraction=0.1)
  merged = workdir.run_config(asked, str(tmp_path))
  assert (merged.generated_cancel_fraction, merged.generated_near_cancel_fraction,
          merged.generated_edge_fraction) == (0.05, 0.0, 0.0)
