"""Label smoothing of a defense's training loss (`defense.label_smoothing`; see the package
docstring): `amount(config)` checks the field, `smoothed(defense, a)` wraps the objective's loss
(and a loaded objective's bound loss) so that it sees (1 - a) * onehot + a / K."""

import math

import optax

from robust_jax import errors

# Objectives whose labels are more than cross-entropy targets: label smoothing is refused.
NO_SMOOTHING = ('mart', 'distillation', 'ensemble')


def amount(config):
  """`defense.label_smoothing` as a float in [0, 1); ConfigError where it cannot apply."""
  value = config.defense.get('label_smoothing', 0.0)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and 0 <= value < 1)
  if not ok:
    raise errors.ConfigError(f'defense.label_smoothing={value!r} must be a number in [0, 1) '
                             '(0: off; the modern recipe: 0.1).')
  name = config.defense.name
  base = config.defense.get('awp_base') if name == 'awp' else name
  if value and base in NO_SMOOTHING:
    raise errors.ConfigError(
        f'defense.label_smoothing={value} does not apply to defense {name}'
        f'{f" (awp_base {base})" if base != name else ""}: its labels are more than '
        'cross-entropy targets. Set it to 0.')
  return float(value)


def smoothed(defense, value):
  """`defense` whose loss (and bound loss) sees label-smoothed targets."""
  def smooth(loss):
    def smoothed_loss(forward, x, x_adv, onehot):
      return loss(forward, x, x_adv, optax.smooth_labels(onehot, value))
    return smoothed_loss

  def smoothed_load(load_model):
    frozen, bind = defense.load(load_model)

    def smoothed_bind(frozen, key):
      perturb, loss = bind(frozen, key)
      return perturb, smooth(loss)
    return frozen, smoothed_bind

  return defense._replace(loss=smooth(defense.loss),
                          load=None if defense.load is None else smoothed_load)
