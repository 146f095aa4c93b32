"""The code-version check of table rows (robust_jax/tables/provenance.py CodeCheck): which
results.json `code_version`s are stale against the evaluation code's git history."""

import os
import subprocess

from robust_jax.tables import provenance


def make_repo(root):
  """A git repo at `root` with four commits: 'old', then 'change' (the last change to the
  evaluation code, provenance.EVAL_CODE), then 'after' (a README edit), then 'refactor' (an edit
  of the evaluation code marked `Results-unchanged:`). Returns their full hashes."""

  def git(*args):
    return subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c',
                           'commit.gpgsign=false', *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()

  os.makedirs(os.path.join(root, 'robust_jax', 'attacks'), exist_ok=True)
  git('init', '-q')
  commits = {}
  for name, path in [('old', 'robust_jax/attacks/pgd.py'), ('change', 'robust_jax/attacks/pgd.py'),
                     ('after', 'README.md'), ('refactor', 'robust_jax/attacks/pgd.py')]:
    with open(os.path.join(root, path), 'a') as f:
      f.write(f'# {name}\n')
    git('add', path)
    message = name
    if name == 'refactor':  # checked to give the same results: not a change of the code
      message += '\n\nMoves code.\n\nResults-unchanged: results.json identical before and after'
    git('commit', '-q', '-m', message)
    commits[name] = git('rev-parse', 'HEAD')
  return commits


def test_code_check_flags_older_dirty_unknown_and_foreign_versions(tmp_path):
  commits = make_repo(str(tmp_path))
  code = provenance.CodeCheck(str(tmp_path))
  assert code.last_change == commits['change'] and not code.eval_code_dirty
  assert code.stale(commits['after']) is None and code.stale(commits['change']) is None
  assert code.stale(commits['refactor']) is None
  assert 'older than the last change' in code.stale(commits['old'])
  assert commits['change'][:7] in code.stale(commits['old'])
  assert '+dirty' in code.stale(commits['after'] + '+dirty')
  assert code.stale('unknown') and code.stale(None)
  assert 'not in this repository' in code.stale('0123456789' * 4)
  assert code.cell(commits['after']) == commits['after'][:7]
  assert code.cell(commits['old']) == commits['old'][:7] + ' (stale)'
  assert code.cell(commits['after'] + '+dirty') == commits['after'][:7] + '+dirty (stale)'
  assert code.cell(None) == 'unknown (stale)'
  # An uncommitted edit of the evaluation code here is said under the table.
  with open(tmp_path / 'robust_jax' / 'evaluate.py', 'w') as f:
    f.write('# new\n')
  assert 'uncommitted changes' in provenance.CodeCheck(str(tmp_path)).footnote()
  # Without git history nothing can be checked: every row is flagged.
  elsewhere = tmp_path.parent / (tmp_path.name + '_nogit')
  os.makedirs(elsewhere)
  nogit = provenance.CodeCheck(str(elsewhere))
  assert nogit.last_change is None and nogit.stale(commits['after'])
