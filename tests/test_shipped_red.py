"""checkpoints/red, trained on a GPU: it is the run docs/results.md describes, and works on a CPU."""

import json
import pathlib

import pytest

from polyflax import config_files, decode, inference, input_pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RED = REPO_ROOT / "checkpoints" / "red"
# The first lines of real_dev decoded on this CPU (float32, where the GPU
# decoded in bfloat16). The floor is a little under what the model scores on
# all real lines (docs/results.md, "Red on one H200"): room for another CPU's
# rounding, none for a broken restore.
REAL_LINES = 500
REAL_FLOOR = 0.97


def test_the_red_folder_is_red_as_trained_on_the_gpu():
  card = json.loads((RED / "model.json").read_text(encoding="utf-8"))
  config = json.loads((RED / "config.json").read_text(encoding="utf-8"))
  default = config_files.load(REPO_ROOT / "configs" / "default.py")
  assert card["parameters"] == 3_961_600
  assert "H200" in card["trained_with"]["devices"]
  assert card["trained_with"]["command"].endswith("--config configs/default.py "
                                                  "--workdir runs/gpu/red")
  # The reference's recipe, as configs/default.py holds it today.
  for field in ("batch_size", "max_epochs", "learning_rate", "grad_clip_norm", "digit_order"):
    assert config[field] == default[field], field
  assert config["model"] == dict(default.model)
  assert 0 < card["calibration"]["threshold"] < 1
  for path in RED.rglob("*"):
    if path.is_file():
      assert path.stat().st_size < 15 * 2**20, path


@pytest.mark.slow
def test_red_expands_real_lines_on_the_cpu(real_dev_lines):
  # One length bucket: one decoder program to compile, which is most of this test's time.
  config = config_files.load(REPO_ROOT / "configs" / "default.py", ["--config.length_buckets=(32,)"])
  model = inference.restore_for_inference(config, str(RED))
  decoder = decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                           max_len=model.model_cfg.max_len,
                           batching=input_pipeline.batching(config, model.mesh))
  pairs = [line.split("=") for line in real_dev_lines[:REAL_LINES]]
  predicted = decoder.decode_texts([factored for factored, _ in pairs], batch_size=1024)
  right = sum(prediction == expanded for (_, expanded), prediction in zip(pairs, predicted))
  assert right / len(pairs) >= REAL_FLOOR, right
