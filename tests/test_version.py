"""robust_jax.version: a copy of the checkout without .git names its commit through the stamp."""

import os
import subprocess

import pytest

from robust_jax import version


def _checkout(root):
  for rel, text in (('robust_jax/a.py', 'x = 1\n'), ('configs/c.py', 'c = 2\n'),
                    ('launch.py', 'main()\n'), ('README.md', 'docs\n')):
    os.makedirs(os.path.dirname(os.path.join(root, rel)) or root, exist_ok=True)
    with open(os.path.join(root, rel), 'w') as f:
      f.write(text)


def _git(root, *args):
  subprocess.run(['git', *args], cwd=root, check=True, capture_output=True)


def test_stamp_names_the_commit_in_a_copy_without_git(tmp_path):
  repo = tmp_path / 'repo'
  _checkout(repo)
  _git(repo, 'init', '-q')
  _git(repo, 'add', '.')
  _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x')
  rev = version.code_version(str(repo))
  assert len(rev) == 40 and version.write_stamp(str(repo)) == rev

  copy = tmp_path / 'copy'  # what travels: the files and the stamp, no .git
  _checkout(copy)
  os.replace(repo / version.STAMP, copy / version.STAMP)
  assert version.code_version(str(copy)) == rev
  (copy / 'README.md').write_text('other docs\n')  # not run code: still that commit
  assert version.code_version(str(copy)) == rev
  (copy / 'configs' / 'c.py').write_text('c = 3\n')  # run code changed after the stamp
  assert version.code_version(str(copy)) == rev + '+dirty'
  os.remove(copy / version.STAMP)
  assert version.code_version(str(copy)) == 'unknown'


def test_stamp_refuses_uncommitted_run_code(tmp_path):
  _checkout(tmp_path)
  _git(tmp_path, 'init', '-q')
  _git(tmp_path, 'add', '.')
  _git(tmp_path, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x')
  (tmp_path / 'launch.py').write_text('changed()\n')
  with pytest.raises(ValueError, match='commit the run code first'):
    version.write_stamp(str(tmp_path))
  assert not (tmp_path / version.STAMP).exists()
