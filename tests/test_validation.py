"""Config validation: clear errors naming the field and the valid choices, before compiling."""

import pytest

from robust_jax import errors
from robust_jax import validation
from tests import helpers


@pytest.mark.parametrize('field,value,message', [
    ('model.name', 'resnet9000', "valid: \\['dm_wide_resnet', 'madry_cnn'"),
    ('data.name', 'imagenet', "valid: \\['cifar10'"),
    ('defense.name', 'magic', "defense.name='magic'; valid: \\[.*'pgd_at'"),
    ('train_attack.name', 'bim', "train_attack.name='bim' is not an attack"),
    ('train_attack.eps', -0.1, 'train_attack.eps=-0.1 must be a number >= 0'),
    ('train_attack.steps', 0, 'train_attack.steps=0 must be an integer >= 1'),
    ('train.batch_size', 0, 'train.batch_size=0'),
    ('optim.name', 'lion', "valid: \\['adam', 'sgd'\\]"),
    ('optim.schedule', 'step', 'optim.schedule'),
    ('optim.learning_rate', -1.0, 'optim.learning_rate=-1.0 must be > 0'),
    ('optim.ema_decay', 1.0, 'must be < 1'),
    ('model.attack_bn_mode', 'frozen', "valid: \\['eval', 'train'\\]"),
    ('eval.num_examples', -5, 'eval.num_examples=-5'),
    ('model.mean', (0.5, 0.5), r'model.mean=\(0.5, 0.5\) must be 1 numbers'),
    ('model.std', (0.0,), 'set both model.mean and model.std'),
])
def test_bad_values_are_named(field, value, message):
  config = helpers.quick_config(**{field: value})
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(config, num_devices=1)


def test_eval_attack_errors_name_the_attack():
  config = helpers.quick_config()
  config.eval.attacks.pgd20.eps = -1.0
  with pytest.raises(errors.ConfigError, match='eval.attacks.pgd20.eps'):
    validation.validate(config)


def test_batch_must_divide_over_devices():
  config = helpers.quick_config(**{'train.batch_size': 6})
  with pytest.raises(errors.ConfigError, match='not divisible by the 4 devices'):
    validation.validate(config, num_devices=4)


def test_wide_resnet_depth():
  config = helpers.quick_config(**{'model.name': 'wide_resnet', 'model.depth': 27})
  with pytest.raises(errors.ConfigError, match='6n\\+4'):
    validation.validate(config)


def test_default_config_is_valid():
  validation.validate(helpers.quick_config(), num_devices=4)


def test_normalisation_constants():
  config = helpers.quick_config(**{'model.mean': (0.3,), 'model.std': (0.0,)})
  with pytest.raises(errors.ConfigError, match='must be > 0'):
    validation.validate(config, num_devices=1)
  config = helpers.quick_config(**{'model.mean': (0.3,), 'model.std': (0.3,),
                                   'model.normalize': False})
  with pytest.raises(errors.ConfigError, match='model.normalize=False'):
    validation.validate(config, num_devices=1)
  validation.validate(helpers.quick_config(**{'model.mean': (0.3,), 'model.std': (0.3,)}), 1)
