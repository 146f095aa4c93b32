"""The compiled PGD loop has none of the ops that make XLA:CPU slow, and does not grow with steps.

A performance regression test that cannot drift with machine load: compile PGD on CPU and read the
optimised HLO (`jax.jit(...).lower(...).compile().as_text()`). Inside the `while` loop body there
must be

- no convolution whose kernel dimension labels are `01oi` (XLA folded the kernel's in/out swap
  into the convolution, which sends it to a slow generic emitter; see models/fast_ops.py), and
- no `scatter` or `select-and-scatter` (max-pooling's and gather-based cross-entropy's gradients),
  and no `gather` (cross-entropy goes through a one-hot product; attacks/objectives.py).

The same checks on the plain lax/flax models (`fast_ops=False`) do find those ops, so the test can
fail. The program for 50 steps is as large as the one for 5 (a loop, never unrolled).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from robust_jax import attacks
from robust_jax import models

_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) ')
_CALLED = re.compile(r'(?:calls|body|condition|to_apply|branch_computations|called_computations)'
                     r'=\{?([%\w.\-, ]+)\}?')
_KERNEL_LABELS = re.compile(r'dim_labels=\w+_(\w+)->')


def computations(hlo_text):
  """{name: [instruction lines]} for every computation of an HLO module's text."""
  comps, current = {}, None
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match and line.rstrip().endswith('{'):
      current = comps.setdefault(match.group(1), [])
    elif line.startswith('}'):
      current = None
    elif current is not None and line.strip():
      current.append(line.strip())
  return comps


def _callees(line):
  return [name.strip().lstrip('%') for group in _CALLED.findall(line)
          for name in group.split(',') if name.strip()]


def while_bodies(hlo_text):
  """The instruction lines of every while-loop body, including the computations they call."""
  comps = computations(hlo_text)
  bodies = []
  for lines in comps.values():
    for line in lines:
      if ' while(' in line:
        body = re.search(r'body=%([\w.\-]+)', line).group(1)
        seen, stack, closure = set(), [body], []
        while stack:
          name = stack.pop()
          if name in seen or name not in comps:
            continue
          seen.add(name)
          closure.extend(comps[name])
          stack.extend(c for inner in comps[name] for c in _callees(inner))
        bodies.append(closure)
  return bodies


def slow_ops(lines):
  """The instructions among `lines` that XLA:CPU runs slowly inside an attack loop."""
  bad = []
  for line in lines:
    op = re.search(r'= \S+ ([\w\-]+)\(', line)
    if op is None:
      continue
    kernel = _KERNEL_LABELS.search(line)
    if op.group(1) in ('scatter', 'select-and-scatter', 'gather') or (
        op.group(1) == 'convolution' and kernel and kernel.group(1) == '01oi'):
      bad.append(line[:160])
  return bad


def _pgd_hlo(name, fast_ops, steps=5, batch=8, **attack_kwargs):
  cfg = ml_collections.ConfigDict(dict(name=name, depth=10, width=1, fast_ops=fast_ops))
  shape = (28, 28, 1) if name.endswith('cnn') else (16, 16, 3)
  model = models.build(cfg, num_classes=10, mean=(0.5,), std=(0.25,))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                             jax.ShapeDtypeStruct((1,) + shape, jnp.float32))
  attack = attacks.make_pgd(norm='linf', eps=0.1, steps=steps, step_size=0.01, **attack_kwargs)

  def run(variables, x, y, key):
    return attack(lambda xa: model.apply(variables, xa, train=False), x, y, key)
  x = jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  return jax.jit(run).lower(variables, x, y, jax.random.key(0)).compile().as_text()


def _attack_loops(hlo_text):
  """The while bodies that run the model (the PGD steps; not the PRNG's internal loops)."""
  loops = [body for body in while_bodies(hlo_text)
           if any(re.search(r' (convolution|dot)\(', line) for line in body)]
  assert loops, 'no while loop that runs the model: did PGD stop being a lax loop?'
  return loops


@pytest.mark.parametrize('name', ['madry_cnn', 'small_cnn', 'trades_cnn'])
@pytest.mark.parametrize('loss', ['ce', 'margin'])
def test_pgd_loop_has_no_slow_ops(name, loss):
  for body in _attack_loops(_pgd_hlo(name, True, loss=loss, restarts=2)):
    assert not slow_ops(body), '\n'.join(slow_ops(body))


def test_pgd_loop_has_no_slow_ops_wide_resnet():
  for body in _attack_loops(_pgd_hlo('wide_resnet', True)):
    assert not slow_ops(body), '\n'.join(slow_ops(body))


@pytest.mark.parametrize('name,expected', [('madry_cnn', {'01oi', 'scatter'}),
                                           ('small_cnn', {'01oi'})])
def test_plain_models_do_have_slow_ops(name, expected):
  """Without fast_ops the checks above fail: the test guards something real."""
  found = set()
  for body in _attack_loops(_pgd_hlo(name, False)):
    for line in slow_ops(body):
      found.add('01oi' if 'convolution(' in line else 'scatter')
  assert found == expected


def test_pgd_program_size_does_not_grow_with_steps():
  few, many = (_pgd_hlo('madry_cnn', True, steps=s) for s in (5, 50))
  count = lambda text: sum(len(lines) for lines in computations(text).values())
  assert count(few) == count(many)
  assert abs(len(few) - len(many)) < 100   # only the trip-count constant differs


def test_parser_finds_ops_in_nested_computations():
  hlo = '\n'.join([
      '%inner (p: f32[4]) -> f32[4] {',
      '  ROOT %s = f32[4]{0} scatter(%p, %i, %u), to_apply=%add',
      '}',
      '%body (t: (s32[], f32[4])) -> (s32[], f32[4]) {',
      '  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%inner',
      '  %c = f32[1,4,4,1]{3,2,1,0} convolution(%a, %b), dim_labels=b01f_01oi->b01f',
      '}',
      'ENTRY %main () -> f32[4] {',
      '  %w = (s32[], f32[4]) while(%t), condition=%cond, body=%body',
      '}'])
  (body,) = while_bodies(hlo)
  assert len(slow_ops(body)) == 2
