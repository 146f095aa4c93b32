"""Named attack suites. `standard` follows AutoAttack (Croce and Hein 2020): APGD-CE, targeted
APGD-DLR, targeted FAB and Square, run as a cascade (each attack only sees the points every earlier
attack failed on), worst case per example.

    for name, cfg in suites.attacks('standard', norm='linf', eps=8 / 255): ...
"""

from robust_jax import errors

SUITES = ('standard', 'apgd', 'rand', 'quick')
COMPLETE = 'standard'  # the one suite whose figure is reported without a caveat


def upper_bound_note(suite):
  """'' for the standard suite; else the caveat any figure from `suite` must carry."""
  if not suite or suite == COMPLETE:
    return ''
  if suite == 'rand':
    return ("Suite 'rand' (APGD-CE/DLR with EOT) is AutoAttack's version for randomised "
            'defenses; its figure is an upper bound on robust accuracy.')
  return (f"Suite '{suite}' is not the full standard suite (no FAB-T, no Square): its robust "
          'accuracy is an upper bound that the standard suite may lower.')


def attacks(suite, *, norm, eps, eot_samples=20):
  """[(name, attack config dict)] of a suite, in cascade order."""
  if suite == 'standard':
    return [
        ('apgd_ce', dict(name='apgd_ce', norm=norm, eps=eps, steps=100)),
        ('apgd_t', dict(name='apgd_t', norm=norm, eps=eps, steps=100, num_targets=9)),
        ('fab_t', dict(name='fab_t', norm=norm, eps=eps, steps=100, num_targets=9)),
        ('square', dict(name='square', norm=norm, eps=eps, steps=5000)),
    ]
  if suite == 'apgd':  # AutoAttack's two gradient attacks, without FAB-T and Square
    return [
        ('apgd_ce', dict(name='apgd_ce', norm=norm, eps=eps, steps=100)),
        ('apgd_t', dict(name='apgd_t', norm=norm, eps=eps, steps=100, num_targets=9)),
    ]
  if suite == 'rand':  # randomised defenses: gradient attacks with EOT, as AutoAttack's 'rand'
    return [
        ('apgd_ce_eot', dict(name='apgd_ce', norm=norm, eps=eps, steps=100,
                             eot_samples=eot_samples)),
        ('apgd_dlr_eot', dict(name='apgd_ce', norm=norm, eps=eps, steps=100, loss='dlr',
                              eot_samples=eot_samples)),
    ]
  if suite == 'quick':  # cheap enough to run during training
    return [
        ('apgd_ce', dict(name='apgd_ce', norm=norm, eps=eps, steps=20)),
        ('apgd_t', dict(name='apgd_t', norm=norm, eps=eps, steps=20, num_targets=3)),
    ]
  raise errors.ConfigError(f'eval.suite={suite!r}; valid: {list(SUITES)} or "" for none.')
