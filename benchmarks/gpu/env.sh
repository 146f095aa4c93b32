# Sourced by the scripts of this folder on the lent GPU machine, from the repository's root.
# That machine has jax (CUDA), flax, optax, chex, orbax and torch but none of the packages
# below; they come as wheels in .whl (fetched with pip download for Python 3.12, same pins as
# requirements*.txt) and are installed once per machine into /tmp/site. Our pinned flax, optax,
# chex and orbax wait in .whl/pinned: used only if the machine's own do not import with ours.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=/tmp/site:$PWD
if [ ! -e /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && touch /tmp/site/.done
fi
if ! python3 -c 'import robust_jax.experiment, robust_jax.benchmark' 2>/tmp/import_err; then
  echo "robust_jax does not import with the machine's packages:"; tail -3 /tmp/import_err
  echo 'installing the pinned flax, optax, chex, orbax-checkpoint'
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/pinned/*.whl
fi
