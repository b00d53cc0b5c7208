"""The next CPU recipe to train whole: configs/cpu.py with the levers the short arms favoured.

  python main.py --config configs/cpu_partial_products.py --workdir runs/cpu_pp

configs/cpu.py (the recipe of the shipped checkpoints/cpu) plus the two
levers of comparison cpu_2026_12_03 (bench/compare_levers.py) that pointed the
same way in both pairs of arms measured: the partial products as an
auxiliary target, and more rows of the linear coefficient's two tails. Both
were measured in short arms only; what they showed, and with how many seeds:
docs/cpu_recipe.md. It becomes configs/cpu.py if its whole run beats the
shipped model on the generated test split, group by group.
"""

from configs import cpu


def get_config():
  config = cpu.get_config()

  # --- data --------------------------------------------------------------------
  # 5% rows whose linear coefficient nearly cancels (1 <= |s| <= 9) and 5% of
  # the largest sums (|s| >= 300), on top of cpu.py's 5% cancelling rows: the
  # two tails where the shipped model's last errors are.
  config.generated_near_cancel_fraction = 0.05
  config.generated_edge_fraction = 0.05

  # --- optimisation ----------------------------------------------------------------
  # Also predict a*d and b*c from the decoder's states (polyflax/partial_products.py),
  # at a tenth of the token loss: the products whose sum is the linear coefficient.
  config.partial_products_weight = 0.1
  return config
