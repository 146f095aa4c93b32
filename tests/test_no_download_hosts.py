"""No registry or download host is named in the project: data and packages come through the
package tools' configured index (pip) or from files already on the machine."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_URL = re.compile(r'\b(?:https?|ftp)://([^/\s:\'"`)]+)', re.I)
_NAMES = re.compile(r'\bpypi\b|pythonhosted|storage\.googleapis|download\.pytorch', re.I)
_LOCAL = {'127.0.0.1', 'localhost', 'host.invalid'}  # tests' own servers; RFC 2606


def _tracked_text_files():
  try:
    out = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    pytest.skip('not a git checkout')
  for path in out:
    full = os.path.join(ROOT, path)
    if os.path.isfile(full) and not path.endswith(('.npz', '.png', '.whl', '.gz')):
      yield path, full


def hosts_named(text):
  """The download hosts or registries that `text` names."""
  found = [h for h in _URL.findall(text) if h.lower() not in _LOCAL]
  return found + _NAMES.findall(text)


def test_the_checker_finds_hosts_and_registries():
  assert hosts_named('url=https://files.example.org/x.whl') == ['files.example.org']
  assert hosts_named('fetched from PyPI') == ['PyPI']
  assert hosts_named("base = f'http://127.0.0.1:{port}'; 'https://host.invalid/'") == []
  assert hosts_named('the authors\' code (github.com/org/repo, train.py)') == []  # a citation


def test_no_file_of_the_project_names_a_download_host():
  bad = []
  for path, full in _tracked_text_files():
    try:
      with open(full, encoding='utf-8') as f:
        text = f.read()
    except UnicodeDecodeError:
      continue
    for i, line in enumerate(text.splitlines(), 1):
      if hosts_named(line):
        bad.append(f'{path}:{i}: {line.strip()[:100]}')
  assert not bad, 'download hosts or registries named:\n' + '\n'.join(bad)
