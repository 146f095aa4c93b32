r"""Tables: `launch.py --mode=table --config=<table config>`, the one runner of the paper tables
(configs/papers/<paper>.py) and the defense zoo (configs/zoo.py).

A table config has `ROWS`, row name -> function returning the row's config, whose `paper` fields
(configs/papers/common.py documents them) say what the table needs: the row's name and title,
its scale, the rows it needs (a distillation teacher, ensemble members) and which config field
takes their workdirs. `run_table` runs the chosen rows, each after the rows it needs, whose
workdir (`<base>/<row>`; base default: the config's `WORKDIRS`, else `workdirs/papers/<PAPER>`)
has no results.json yet, resuming any that a kill interrupted: in this process one after the
other, or with `jobs` > 1 that many at a time, each as its own `launch.py` process (`launcher`,
the command the zoo table lists) writing `<base>/<row>.log`. Then it renders the Markdown table
from the results.json files alone, in the config's `LAYOUT`:

  'paper' (the default)  published and measured clean and robust accuracy, the delta, the
                         attacks, the epochs and the wall time of every row. Figures come from
                         `paper.published` and `paper.labels` in each run's stored config, and
                         from its measured results.
  'zoo'                  one line per defense: clean, naive PGD, adaptive attack, worst case,
                         sanity checks and training time, then the command of every row. Rows
                         marked `paper.prerequisite` run but are not shown.

A row whose run is missing is listed as not run. In the paper layout the epochs column gives the
epochs trained, and the epoch of the evaluated weights where it differs (a rollback after
catastrophic overfitting; the best epoch of co_action 'best'). Both layouts have a code column:
each row's `code_version`, flagged "stale" where its code does not contain the last change to
the evaluation and attack code, or is '+dirty' or unknown (CodeCheck); `rerun_stale`
(launch.py --table_rerun_stale) runs those rows again instead of collecting them. A rerun
resumes the row's workdir: a finished training is kept, the evaluation runs again.

  which rows: 'cpu' (every `paper.scale == 'cpu'` row; the default), 'full', 'all', or
  comma-separated names. Flags given as --config.a.b=v apply to every row run.

Modules: runner.py (the table config, each row's config and command, running the rows),
layouts.py (the Markdown of the two layouts), provenance.py (CodeCheck: stale rows).
"""

import os

import jax

from robust_jax.tables import layouts
from robust_jax.tables import provenance
from robust_jax.tables import runner


def run_table(config_path, which, base, overrides, run, validate, run_fn, rerun_stale=False,
              jobs=1):
  """Runs the rows that lack results (if `run`; with `rerun_stale` also the stale ones), prints
  the table (process 0 also writes it to `<base>/table.md`); returns (text, {row: reason} of the
  rows that could not run here). jobs > 1: that many rows at a time, each its own process
  (`runner.launcher`; run_fn is then unused)."""
  module = runner.load_module(config_path)
  rows = runner.select_rows(module, which)
  base = base or runner.default_base(module)
  skipped = {}
  code = provenance.CodeCheck()
  if run:
    if jobs > 1:
      run_fn = runner.launcher(config_path, overrides)
    skipped = runner.run_rows(module, runner.with_needs(module, rows), base, overrides,
                              validate, run_fn, rerun_stale, code, jobs)
  text = layouts.render(module, rows, base, skipped, code, overrides)
  if jax.process_index() == 0:
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, 'table.md'), 'w') as f:
      f.write(text + '\n')
  print('\n' + text + '\n', flush=True)
  return text, skipped
