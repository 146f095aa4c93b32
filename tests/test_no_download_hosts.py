"""No registry or download host is named in the project: data and packages come through the
package tools' configured index (pip) or from files already on the machine.

The registry's names are not written here either: they are read from pip's own model of its default
index, so this file passes its own check.
"""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_URL = re.compile(r'\b(?:https?|ftp|gs)://([\w.-]+)', re.I)
# A host named without a scheme, as an error message prints it: three labels or more ending in a
# top-level domain (two-label names such as `self.net` are attributes in code; a two-label
# citation host such as the authors' code repository is allowed, see the test below).
_BARE = re.compile(r'(?<![\w@/.-])((?:[a-z0-9-]+\.){2,}(?:edu|com|org|net|io|gov))\b(?![\w-])',
                   re.I)


def _default_index():
  """pip's built-in default index (a `PackageIndex`: netloc, file_storage_domain)."""
  # pylint: disable=g-import-not-at-top
  from urllib.parse import urlparse
  from pip._internal.cli import cmdoptions
  from pip._internal.models import index
  netloc = urlparse(cmdoptions.index_url().default).netloc
  return next(v for v in vars(index).values()
              if isinstance(v, index.PackageIndex) and v.netloc == netloc)


def _registry_names():
  """The default index's hosts and their distinctive labels (the index's own name among them)."""
  default = _default_index()
  hosts = {default.netloc, default.file_storage_domain}
  labels = {h.split('.')[-2] for h in hosts}
  return sorted(hosts | labels, key=len, reverse=True)


_NAMES = re.compile('|'.join(r'\b' + re.escape(n) + r'\b' for n in _registry_names()), re.I)
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
  bare = [h for h in _BARE.findall(_URL.sub(' ', text)) if h.lower() not in _LOCAL]
  return found + bare + _NAMES.findall(text)


def test_the_checker_finds_hosts_and_registries():
  default = _default_index()
  files = default.file_storage_domain
  assert hosts_named(f'url=https://{files}/x.whl')[0] == files
  label = default.netloc.split('.')[0]
  assert hosts_named(f'fetched from {label.capitalize()}') == [label.capitalize()]
  assert hosts_named(f'see {default.netloc} for it') == [default.netloc]
  bucket = 'some-bucket'
  assert hosts_named(f'data at gs://{bucket}/mnist') == [bucket]
  assert hosts_named("base = f'http://127.0.0.1:{port}'; 'https://host.invalid/'") == []
  assert hosts_named('the authors\' code (github.com/org/repo, train.py)') == []  # a citation
  # A host printed without a scheme (an offline error message quoted in a document).
  host = '.'.join(['www', 'cs', 'example', 'edu'])  # joined here, so this file passes its check
  assert hosts_named(f'appears offline (cannot reach {host}).') == [host]
  assert hosts_named('self.net.apply(v, x); model.net') == []


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
