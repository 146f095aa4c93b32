"""robust_jax has no import cycles, lazy imports (inside functions) included.

Every `import` / `from ... import` in robust_jax/**/*.py is read with `ast` (the code is not run)
and resolved to a module of the package: `from robust_jax.a import b` is the module
robust_jax.a.b when there is one, else robust_jax.a (the package's __init__, its own node). As
when Python runs it, importing robust_jax.a.b from outside package robust_jax.a first runs
robust_jax/a/__init__.py, so that is an edge too; a package importing its own submodules, and
submodules importing their siblings, are ordinary edges. A cycle is a strongly connected
component of more than one module (a module importing itself is harmless); the failure names
its modules and the import lines that close it.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'robust_jax'


def modules(root=ROOT, package=PACKAGE):
  """{module name: path} of every .py file under root/package."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(('.', '__pycache__')))
    for name in sorted(filenames):
      if not name.endswith('.py'):
        continue
      rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3].split(os.sep)
      if rel[-1] == '__init__':
        rel = rel[:-1]
      out['.'.join(rel)] = os.path.join(dirpath, name)
  return out


def _is_package(module, mods):
  return mods[module].endswith('__init__.py')


def _resolve(name, mods):
  """The longest prefix of dotted `name` that is a module of ours, or None."""
  parts = name.split('.')
  for i in range(len(parts), 0, -1):
    candidate = '.'.join(parts[:i])
    if candidate in mods:
      return candidate
  return None


def _targets(module, node, mods):
  """The modules of ours an Import / ImportFrom node in `module` imports directly."""
  if isinstance(node, ast.Import):
    return [t for t in (_resolve(a.name, mods) for a in node.names) if t]
  if node.level:  # relative: from the module's own package, up level - 1
    package = module if _is_package(module, mods) else module.rpartition('.')[0]
    base = package.split('.')
    base = base[:len(base) - (node.level - 1)]
    name = '.'.join(base + ([node.module] if node.module else []))
  else:
    name = node.module
  found = []
  for alias in node.names:  # `from pkg import sub` imports pkg.sub when it is a module
    sub = f'{name}.{alias.name}'
    found.append(sub if sub in mods else _resolve(name, mods))
  return [t for t in found if t]


def _with_parents(importer, target):
  """`target` and the packages above it that importing it runs first (not importer's own)."""
  parts = target.split('.')
  own = importer.split('.')
  out = [target]
  for i in range(1, len(parts)):
    parent = '.'.join(parts[:i])
    if own[:i] != parts[:i]:  # a package the importer is not inside: its __init__ runs first
      out.append(parent)
  return out


def import_graph(root=ROOT, package=PACKAGE):
  """{module: {imported module: [(line, source text), ...]}} over the package's modules."""
  mods = modules(root, package)
  graph = {m: {} for m in mods}
  for module, path in mods.items():
    with open(path) as f:
      source = f.read()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, path)):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      for target in _targets(module, node, mods):
        for t in _with_parents(module, target):
          if t != module:
            src = lines[node.lineno - 1].strip()
            if t != target:
              src += f'    (runs the __init__ of {t}, the package of {target})'
            graph[module].setdefault(t, []).append((node.lineno, src))
  return graph


def strongly_connected(graph):
  """Tarjan's algorithm (iterative): the list of components, each a sorted list of nodes."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph[start])))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter
          counter += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          component.append(w)
          if w == node:
            break
        out.append(sorted(component))
  return out


def cycles(graph):
  """The components of more than one module: each has a cycle through all of them."""
  return [c for c in strongly_connected(graph) if len(c) > 1]


def describe(component, graph):
  """The component's modules and every import line between two of them."""
  inside = set(component)
  text = [f'import cycle through {len(component)} modules: {", ".join(component)}']
  for module in component:
    for target, where in sorted(graph[module].items()):
      if target in inside:
        for line, src in where:
          text.append(f'  {module}:{line} -> {target}    {src}')
  return '\n'.join(text)


def test_the_graph_sees_lazy_relative_and_package_imports(tmp_path):
  pkg = tmp_path / 'pkg'
  (pkg / 'sub').mkdir(parents=True)
  (pkg / '__init__.py').write_text('')
  (pkg / 'a.py').write_text('def f():\n  from pkg import b\n')
  (pkg / 'b.py').write_text('from .sub import c\n')
  (pkg / 'sub' / '__init__.py').write_text('from pkg.sub import c\n')
  (pkg / 'sub' / 'c.py').write_text('from .. import a\nfrom . import d\nimport pkg.sub.c\n')
  (pkg / 'sub' / 'd.py').write_text('from pkg.sub.c import X\n')
  graph = import_graph(str(tmp_path), 'pkg')
  assert set(graph['pkg.a']) == {'pkg.b'}  # lazy
  assert set(graph['pkg.b']) == {'pkg.sub.c', 'pkg.sub'}  # relative, and the package's __init__
  assert set(graph['pkg.sub']) == {'pkg.sub.c'}
  assert set(graph['pkg.sub.c']) == {'pkg.a', 'pkg.sub.d'}  # itself: no edge
  assert set(graph['pkg.sub.d']) == {'pkg.sub.c'}  # a sibling: no edge back to its package
  found = cycles(graph)
  assert found == [['pkg.a', 'pkg.b', 'pkg.sub', 'pkg.sub.c', 'pkg.sub.d']]
  text = describe(found[0], graph)
  assert 'pkg.a:2 -> pkg.b    from pkg import b' in text
  assert 'pkg.b:1 -> pkg.sub    from .sub import c    (runs the __init__ of pkg.sub' in text


def test_robust_jax_has_no_import_cycles():
  graph = import_graph()
  assert len(graph) > 30 and 'robust_jax.attacks' in graph and 'robust_jax.experiment' in graph
  found = cycles(graph)
  assert not found, '\n\n'.join(describe(c, graph) for c in found)
