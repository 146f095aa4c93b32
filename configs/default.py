r"""Default: PGD adversarial training of Wong et al.'s small CNN on Fashion-MNIST, L-inf eps = 0.1.

Runs offline on CPU in a few minutes, then evaluates FGSM, PGD-20 and PGD-40 x 2 restarts on the
whole 10,000-image test set and prints the per-example worst case:

  python launch.py --config=configs/default.py --workdir=workdirs/default

Every field can be overridden, e.g. `--config.train.epochs=1 --config.train_attack.steps=5`.
"""

import ml_collections
from ml_collections import config_dict


def attack(name='pgd', *, norm='linf', eps=0.1, steps=10, step_size=0.025, restarts=1,
           random_start=True, loss='ce', track_best=True):
  """An attack config (plain values only); see robust_jax.attacks.build."""
  return ml_collections.ConfigDict(dict(
      name=name, norm=norm, eps=eps, steps=steps, step_size=step_size, restarts=restarts,
      random_start=random_start, loss=loss, track_best=track_best))


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist',
      # Where TFDS keeps prepared datasets; '' -> ~/tensorflow_datasets (or $TFDS_DATA_DIR).
      data_dir='',
      # Folder with IDX files (train-images-idx3-ubyte.gz, ...), or for cifar10 the official
      # python version (cifar-10-batches-py) or the png copy; '' -> the dataset's default:
      # /usr/share/datasets/fashion-mnist for fashion_mnist (Debian's dataset-fashion-mnist);
      # for cifar10 <repo>/../shared/datasets/cifar10 where it exists (our machines, CI).
      source_dir='',
      random_crop=False,   # pad-4 random crop (CIFAR-like data)
      random_flip=False,   # random horizontal flip (CIFAR-like data)
      # 'memory': the training split in host memory; 'records': read from disk batch by batch,
      # only the rows each host feeds; 'auto': records on several hosts, memory on one.
      train_read='auto',
      # Additional training data mixed into every batch (robust_jax/data/extra.py): path '' (none),
      # an .npz (image uint8[N,H,W,C], label int[N]) or .array_record file, or a folder of their
      # shards; fraction: the share of each batch taken from it (the papers: 0.7), in [0, 1);
      # synthetic > 0: that many synthetic images instead of path (smoke runs, not real data).
      # An epoch stays floor(N_real / batch_size) steps.
      extra=ml_collections.ConfigDict(dict(path='', fraction=0.7, synthetic=0)),
  ))

  c.model = ml_collections.ConfigDict(dict(
      name='small_cnn',
      depth=28, width=10,          # wide_resnet and dm_wide_resnet only
      activation='swish',          # dm_wide_resnet only: 'swish' or 'relu'
      base_width=64,               # preact_resnet18 only: first stage's channels (16: 1/4 width)
      # BatchNorm while the TRAINING attack runs: 'eval' uses running statistics; 'train' uses
      # the attacked batch's statistics (without updating the running ones). Evaluations (and
      # the overfitting monitor) always attack the inference-mode model they score.
      attack_bn_mode='eval',
      # Compute dtype: 'float32' or 'bfloat16' (parameters and logits stay float32; bfloat16 is
      # for accelerators: it is slower than float32 on CPU).
      dtype='float32',
      # Convolutions and pooling (and small_cnn's and trades_cnn's dense layers, whose logits
      # then do not depend on the batch size) from robust_jax/models/fast_ops.py, whose input
      # gradients compile to faster code (same parameters and results); False: plain flax ops.
      fast_ops=True,
      # Inputs normalised by the dataset's mean and std inside the model; False feeds the [0,1]
      # pixels as they are (the MNIST papers' code does; attacks see [0,1] pixels either way).
      normalize=True,
      # Normalisation constants used instead of the dataset's, one per channel (or one for all):
      # e.g. a checkpoint trained with other constants, such as DeepMind's CIFAR-10 models
      # (std 0.2471, 0.2435, 0.2616 against the dataset's 0.2470, 0.2435, 0.2616).
      # () -> the dataset's (robust_jax/data/sources.py DATASETS).
      mean=(),
      std=(),
  ))

  c.defense = ml_collections.ConfigDict(dict(
      # 'standard' | 'pgd_at' | 'trades' | 'mart' | 'fgsm_rs' | 'free_at' | 'awp' |
      # 'distillation' | 'ensemble_at' (robust_jax/defenses/__init__.py)
      name='pgd_at',
      adv_fraction=1.0,   # pgd_at: share of each batch trained on adversarially (Croce 2019: 0.5)
      beta=6.0,           # trades: weight of the KL term; mart: the paper's lambda
      # Deprecated (fgsm_rs's step is train_attack.step_size); set, it overrides train_attack.
      fgsm_step=config_dict.placeholder(float),
      fgsm_clip_start=True,  # fgsm_rs: clip the random start to [0,1] first (False: MNIST code)
      replays=8,          # free_at: minibatch replays m (Shafahi et al. 2019: 8 on CIFAR-10)
      awp_base='pgd_at',  # awp: the objective AWP perturbs: 'pgd_at' | 'trades' | 'mart'
      awp_gamma=5e-3,     # awp: relative size of the weight perturbation (Wu et al. 2020)
      awp_warmup=0.0,     # awp: epochs before AWP starts (authors: 0 for AT, 10 for TRADES)
      temperature=100.0,  # distillation: softmax temperature T (Papernot et al.: 100 on MNIST)
      teacher='',         # distillation: '' trains the teacher, else the teacher's workdir
      static_models='',   # ensemble_at: comma-separated workdirs of the fixed source models
      # Label smoothing of the training loss's cross-entropy terms (0 = off; the modern recipe:
      # 0.1): targets (1 - a) * onehot + a / K. TRADES' KL term has no labels and is unchanged;
      # evaluation never smooths (robust_jax/defenses/__init__.py).
      label_smoothing=0.0,
  ))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128,
      epochs=3,
      steps=0,            # > 0: stop after this many steps (quick runs, tests)
      log_every_steps=50,
      # Catastrophic-overfitting monitor (Wong et al. 2020; training/monitor.py): > 0 holds the
      # last N training images out of training and logs clean and monitor_attack accuracy on
      # them every epoch. A drop of more than co_drop below the best is a collapse; co_action
      # 'log' records it, 'stop' ends training there, 'rollback' ends it with the best epoch's
      # weights; 'best' trains on and also evaluates the best epoch's weights (early stopping,
      # Rice et al. 2020). monitor_attack is PGD-10 in train_attack's ball: its norm and eps,
      # unset, follow train_attack's, and its step_size, unset, is eps / 4; set them to watch
      # another ball (robust_jax/defenses/training_attack.py, monitor_spec).
      monitor_examples=0,
      monitor_attack=attack('pgd', norm=config_dict.placeholder(str),
                            eps=config_dict.placeholder(float), steps=10,
                            step_size=config_dict.placeholder(float)),
      co_action='log',
      co_drop=0.2,
  ))

  c.optim = ml_collections.ConfigDict(dict(
      name='adam',        # 'adam' | 'sgd'
      learning_rate=1e-3,
      momentum=0.9,       # sgd only
      nesterov=False,     # sgd only
      weight_decay=0.0,   # decoupled for adam (adamw), L2 added to the gradient for sgd
      schedule='cosine',  # 'constant' | 'piecewise' | 'cosine' | 'cyclic'
      warmup_epochs=0.0,
      piecewise_boundaries=(0.5, 0.75),  # fractions of training, lr x piecewise_scale at each
      piecewise_scale=0.1,
      cyclic_peak=0.4,    # cyclic: fraction of training at which lr peaks (0 -> peak -> 0)
      grad_clip_norm=0.0,  # > 0: clip the global gradient norm
      ema_decay=0.0,      # > 0: keep EMA weights, used for evaluation
  ))

  # The training attack, one full attack config read the same way by every defense (fgsm_rs:
  # FGSM from a random start; free_at: FGSM, no random start; robust_jax/defenses/
  # training_attack.py). Madry-style PGD-AT with 7 steps of 2.5 * eps / 7, last iterate.
  c.train_attack = attack('pgd', eps=0.1, steps=7, step_size=0.035, track_best=False)

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, max_to_keep=3))

  c.eval = ml_collections.ConfigDict(dict(
      num_examples=0,     # 0 -> the whole test set
      batch_size=500,
      # An attack suite run as a cascade after eval.attacks: '' (none), 'standard' (AutoAttack:
      # APGD-CE, APGD-T, FAB-T, Square), 'rand' (EOT, randomised models) or 'quick'.
      suite='',
      suite_norm='linf',
      suite_eps=0.1,
      sanity_checks=True,   # gradient-masking and consistency checks (robust_jax/eval/sanity.py)
      sanity_examples=500,  # run on the first N evaluated examples
      # Randomised smoothing (robust_jax/eval/certify.py; needs defense gaussian_noise, whose sigma
      # it uses): certify the first `examples` test images (0 = off) with n0 selection and n
      # estimation noise draws at confidence 1 - alpha; certified accuracy at each of `radii`.
      certify=ml_collections.ConfigDict(dict(
          examples=0, n0=100, n=10_000, alpha=0.001,
          batch_size=40,     # examples per step (a multiple of the device count)
          noise_batch=200,   # noise draws per example per forward pass
          radii=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
      )),
      attacks=ml_collections.ConfigDict(dict(
          fgsm=attack('fgsm', eps=0.1, steps=1, step_size=0.1, random_start=False),
          pgd20=attack('pgd', eps=0.1, steps=20, step_size=0.01),
          pgd40x2=attack('pgd', eps=0.1, steps=40, step_size=0.01, restarts=2),
      )),
  ))

  # launch.py --mode=benchmark (robust_jax/benchmark.py); numbers and commands in BENCHMARKS.md.
  c.benchmark = ml_collections.ConfigDict(dict(
      batch_size=256,
      repeats=5,
      warmup=1,
      attack=attack('pgd', eps=0.1, steps=40, step_size=0.01, track_best=False),
      models='',          # sweep: comma-separated model names ('' -> model.name)
      batch_sizes='',     # sweep: comma-separated batch sizes ('' -> batch_size)
      train_step=True,    # also time one training step (defense + train_attack)
      time_budget_s=0.0,  # > 0: cut each measurement's timed repeats to fit in about this
      model_steps='',     # e.g. 'wide_resnet:2': fewer attack steps for slow models (CPU)
      matmul_size=0,      # n of the f32 n x n matmul ceiling; 0 -> 2048 on CPU, 8192 else
  ))
  return c
