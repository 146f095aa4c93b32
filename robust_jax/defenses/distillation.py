"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016).

    teacher_loss = distillation.make_teacher_loss(temperature=100.0)
    load = distillation.make_student_load('workdirs/distillation_teacher', temperature=100.0)
    frozen, bind = load(run_io.load_model)  # the teacher's weights; bind(frozen, key) ->
                                            # (perturb, loss)

1. The teacher is trained with a softmax at temperature T: cross-entropy of softmax(z / T)
   against the labels, z the logits.
2. The student (same architecture in the paper) is trained on the teacher's soft labels
   softmax(z_teacher(x) / T), computed on the same (clean) training inputs, with cross-entropy
   of softmax(z_student / T) against them.
3. Both are deployed at T = 1, i.e. the raw logits are the model's output. Training at a high T
   makes the logits about T times larger, so at T = 1 the softmax saturates and the gradient of
   the cross-entropy vanishes numerically: naive gradient attacks (PGD on the CE loss) stall,
   while attacks on the logits themselves (margin loss, Carlini & Wagner 2017; APGD-DLR, which is
   scale invariant) are unaffected. This is gradient masking, not robustness, and the evaluation
   configs report both (`eval.attacks.naive` and `eval.attacks.adaptive`).

Papernot et al. use T = 100 on MNIST. Accuracy during training is reported on the logits (T
does not change the argmax). The teacher is evaluated in inference mode (BatchNorm's running
statistics) and never updated.
"""

import jax
from absl import logging

from robust_jax.attacks import objectives
from robust_jax.defenses import descriptor

# Teacher and student train on clean inputs (the student on soft labels): no attack.
FACETS = descriptor.STANDARD


def soft_labels(teacher_logits, temperature):
  """softmax(z / T): f32[B,K] probabilities, `teacher_logits` f32[B,K]."""
  return jax.nn.softmax(teacher_logits / temperature)


def tempered_cross_entropy(logits, targets, temperature):
  """Cross-entropy of softmax(logits / T) against `targets` (f32[B,K], one-hot or soft): f32[B]."""
  return objectives.cross_entropy(logits / temperature, targets)


def make_teacher_loss(temperature):
  """`loss(forward, x, x_adv, onehot)`: CE of softmax(z(x) / T) against the labels; logits z."""

  def loss(forward, x, x_adv, onehot):
    del x_adv
    logits, stats = forward(x)
    return tempered_cross_entropy(logits, onehot, temperature), logits, stats

  return loss


def make_student_loss(teacher_fn, temperature):
  """The student's loss against the soft labels of `teacher_fn: x -> f32[B,K]` (no gradient)."""

  def loss(forward, x, x_adv, onehot):
    del x_adv, onehot
    targets = soft_labels(jax.lax.stop_gradient(teacher_fn(x)), temperature)
    logits, stats = forward(x)
    return tempered_cross_entropy(logits, targets, temperature), logits, stats

  return loss


def make_student_load(teacher_dir, temperature):
  """Returns `load(load_model) -> (frozen, bind)` for a student of the teacher in `teacher_dir`.

  `load_model` (workdir -> run_io.Run; training passes robust_jax.run_io.load_model) loads the
  teacher. `frozen` is {'params', 'batch_stats'} of the teacher (its evaluation weights), which
  the train step takes as an argument; `bind(frozen, key)` returns the student's (perturb, loss).
  Raises FileNotFoundError naming the path when the teacher's workdir has no config or
  checkpoint.
  """

  def load(load_model):
    teacher_run = load_model(teacher_dir)
    config, step = teacher_run.config, teacher_run.step
    trained_t = config.defense.get('temperature')
    if config.defense.name != 'distillation' or trained_t != temperature:
      logging.warning('Distilling at T=%s from %s (step %d), which was trained by defense %r at '
                      'T=%s; Papernot et al. use the same T for both.', temperature, teacher_dir,
                      step, config.defense.name, trained_t)

    weights = teacher_run.variables()
    teacher_run = teacher_run._replace(params=None, batch_stats=None)  # the step gets `weights`

    def bind(frozen, key):
      del key
      teacher = teacher_run.logits_fn(frozen)
      return (lambda logits_fn, x, y, keys: x), make_student_loss(teacher, temperature)

    return weights, bind

  return load
