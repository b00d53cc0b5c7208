"""The shipped model's predictions for the first lines of its test sets (run as a subprocess).

  python tests/shipped_predictions.py OUT.json SPLIT_DIR COUNT [REAL_LINES_FILE]

Writes {"generated": [[factored, expanded, predicted], ...], "real": [...],
"real_bfloat16": [...]} for the first COUNT lines of the model's generated
test split, made in SPLIT_DIR as the README makes it (from the data fields of
the model's own config.json: 1,000,000 generated lines, seed 0), and of
REAL_LINES_FILE when given; "real_bfloat16" is the first BFLOAT16_LINES real
lines decoded by the model restored with compute_dtype=bfloat16, the path a
GPU takes.
"""

import json
import pathlib
import sys

from polyflax import config_files, data, decode, inference, input_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "cpu"
BFLOAT16_LINES = 512

out_path, split_dir, count = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
real_path = sys.argv[4] if len(sys.argv) > 4 else None


def decoder_of(config):
  """A decoder of the shipped model restored with `config`, in one length bucket.

  One bucket, one decoder program to compile, where the config's four took
  most of this script's time; test_decode.py checks that buckets change no
  output.
  """
  model = inference.restore_for_inference(config, str(SHIPPED))
  return decode.Decoder(model.graphdef, model.params, model.vocab, model.mesh,
                        max_len=model.model_cfg.max_len,
                        batching=input_pipeline.batching(config, model.mesh,
                                                         buckets=(model.model_cfg.max_len,)))


config = config_files.load(REPO / "configs" / "cpu.py")
decoder = decoder_of(config)
run_config = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
paths = data.ensure_splits(split_dir, run_config["data_seed"],
                           generated_size=run_config["generated_size"])
pair_sets = {"generated": data.read_pairs(paths["test"]).pairs[:count]}
if real_path:
  with open(real_path, encoding="utf-8") as f:
    lines = [line.rstrip("\n") for line in f if line.strip()][:count]
  pair_sets["real"] = [tuple(line.split("=")) for line in lines]
predicted = {}
for name, pairs in pair_sets.items():
  predictions = decoder.decode_texts([factored for factored, _ in pairs], batch_size=1024)
  predicted[name] = [[factored, expanded, prediction] for (factored, expanded), prediction
                     in zip(pairs, predictions, strict=True)]
if real_path:
  pairs = pair_sets["real"][:BFLOAT16_LINES]
  low = decoder_of(config_files.load(REPO / "configs" / "cpu.py", ["--config.compute_dtype=bfloat16"]))
  predictions = low.decode_texts([factored for factored, _ in pairs], batch_size=1024)
  predicted["real_bfloat16"] = [[factored, expanded, prediction] for (factored, expanded), prediction
                                in zip(pairs, predictions, strict=True)]
with open(out_path, "w", encoding="utf-8") as f:
  json.dump(predicted, f)
