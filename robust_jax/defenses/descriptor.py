"""What a defense is, read from the config without building it: `Facets`.

    f = robust_jax.defenses.facets(config)   # Facets of config.defense.name
    if f.deployment == 'ensemble': ...       # nothing to train: the members are the checkpoints

Each defense states its facets next to its factory (trades.FACETS, squeezing.FACETS,
transforms.facets, ...); `robust_jax.defenses.facets` looks them up. Code outside
robust_jax/defenses reads these facets instead of comparing `config.defense.name`. Reading them
builds nothing (no training attack, no loaded run) and validates no field, so evaluation-only
defenses, which build no training step, have them too.
"""

from typing import NamedTuple

# How the evaluated model is deployed:
#   network    the trained network as it is
#   transform  the network behind an input transformation (transforms.py; BPDA/EOT attack it)
#   ensemble   the average of trained runs (ensemble.py); nothing is trained
#   detector   the network with a detector that rejects inputs (squeezing.py); it is evaluated
#              with abstention (robust_jax/eval/detection.py) and keeps its calibration images
#              out of training
DEPLOYMENTS = ('network', 'transform', 'ensemble', 'detector')


class Facets(NamedTuple):
  """The facets of one defense (defaults: a network trained with cross-entropy on clean inputs).

  trainable        a run trains its weights (False: an ensemble of already trained runs).
  training_attack  its training step runs `config.train_attack` (adversarial training).
  replays          updates per minibatch (free AT's `defense.replays`; 1 otherwise): the run
                   takes 1 / replays as many minibatch steps per epoch budget.
  deployment       one of DEPLOYMENTS.
  certifiable      randomised smoothing certifies it (eval.certify; robust_jax/eval/certify.py):
                   the network was trained behind the Gaussian noise it is smoothed with.
  """
  trainable: bool = True
  training_attack: bool = False
  replays: int = 1
  deployment: str = 'network'
  certifiable: bool = False


STANDARD = Facets()
ADVERSARIAL = Facets(training_attack=True)
