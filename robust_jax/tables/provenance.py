"""Provenance of table rows: was a results.json made by today's evaluation and attack code?

    code = provenance.CodeCheck()           # against this repository's git history
    why = code.stale(results['code_version'])   # None, or why the row is flagged stale
    code.cell(version), code.footnote()     # a table's code column and the line under it

A commit whose message has a `Results-unchanged: <evidence>` trailer does not count as a change
of that code (CodeCheck says when a row is stale).
"""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The evaluation and attack code: results from a commit older than its last change are stale.
# robust_jax/eval holds it since it moved there (evaluate.py became eval/robust.py, sanity.py and
# detection.py moved in); the old paths keep the history before the move.
EVAL_CODE = ('robust_jax/attacks', 'robust_jax/eval', 'robust_jax/evaluate.py',
             'robust_jax/sanity.py', 'robust_jax/detection.py')


UNCHANGED_TRAILER = 'Results-unchanged:'  # in a commit message: see CodeCheck


def _git(root, *args):
  """(return code, stdout) of `git args` run in `root`; (None, '') where git cannot run."""
  try:
    p = subprocess.run(['git', *args], cwd=root, capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.SubprocessError):
    return None, ''
  return p.returncode, p.stdout.strip()


def short_version(version):
  """'1a2b3c4', '1a2b3c4+dirty' or 'unknown' for a results.json `code_version`."""
  if not version or version == 'unknown':
    return 'unknown'
  commit, dirty = version.split('+')[0], '+dirty' in version
  return commit[:7] + ('+dirty' if dirty else '')


class CodeCheck:
  """Judges results.json `code_version`s against the evaluation code of the repository `root`.

  A row is stale (`stale` returns why) when its version is unknown or '+dirty' (uncommitted
  edits: which ones is not recorded), when its commit is not in this repository, or when it does
  not contain `last_change`, the last commit that changed `EVAL_CODE` (git merge-base
  --is-ancestor). Without git history here every row is stale: nothing can be checked.

  A commit whose message has a `Results-unchanged: <evidence>` trailer (a refactoring shown to
  give bitwise the same results, e.g. by the default config's results.json before and after)
  does not count as a change: it leaves the rows before it current.
  """

  def __init__(self, root=None):
    self.root = root or ROOT
    rc, out = _git(self.root, 'log', '-1', '--format=%H', '--invert-grep',
                   f'--grep=^{UNCHANGED_TRAILER}', '--', *EVAL_CODE)
    self.last_change = out if rc == 0 and out else None
    rc, out = _git(self.root, 'status', '--porcelain', '--', *EVAL_CODE)
    self.eval_code_dirty = rc == 0 and bool(out)  # uncommitted edits to it in this checkout
    self._seen = {}

  def stale(self, version):
    """None if `version` has today's evaluation code, else the reason its row is flagged."""
    if version not in self._seen:
      self._seen[version] = self._stale(version)
    return self._seen[version]

  def _stale(self, version):
    if not version or version == 'unknown':
      return 'no code version recorded'
    if '+dirty' in version:
      return 'uncommitted changes (+dirty): the code that ran is not recorded'
    if self.last_change is None:
      return 'no git history of the evaluation code here to check it against'
    rc, _ = _git(self.root, 'merge-base', '--is-ancestor', self.last_change, version)
    if rc == 0:
      return None
    if rc == 1:
      return (f'older than the last change to the evaluation code '
              f'({short_version(self.last_change)})')
    return 'commit not in this repository'

  def cell(self, version):
    """The table cell: the short version, '(stale)' after it when flagged."""
    return short_version(version) + (' (stale)' if self.stale(version) else '')

  def footnote(self):
    """The line under a table that says what the rows were checked against."""
    if self.last_change is None:
      return ('Code: no git history of the evaluation code here, so no row could be checked '
              'against it.')
    text = (f'Code: each row\'s results.json `code_version`; "stale" where it is unknown, '
            f'+dirty, or older than {short_version(self.last_change)}, the last change to '
            f'the evaluation and attack code ({", ".join(EVAL_CODE)}; commits marked '
            f'`{UNCHANGED_TRAILER}` do not count).')
    if self.eval_code_dirty:
      text += (' That code has uncommitted changes in this checkout, which no row has been '
               'checked against.')
    return text
