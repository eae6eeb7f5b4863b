"""A training run's hyper-parameters: ``TrainConfig``, the authors' defaults per architecture and
dataset (``default_train_config``; SPEC §4, ``hparams="paper"`` for the paper's text, D2), and the
checkpoints it saves (``config_grid``)."""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


from latentgen import registry
from latentgen.registry import HPARAM_SOURCES, OPTIMIZERS, checkpoint_grid

@dataclass
class TrainConfig:
    """Everything that decides a training run's numbers. ``None`` seeds are filled by ``resolved()``."""

    arch: str
    dataset: str
    corruption: float = 0.0
    run: int = 1
    seed: int | None = None  # shuffling and (unless init_seed) the initial weights; None: TRAIN_SEED_BASE + run
    init_seed: int | None = None  # None: the architecture's fixed seed (CNN: 0) or `seed`
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 32
    shuffle: bool = False
    target_acc: float = 1.0  # fraction in (0, 1]
    max_epochs: int = 500
    train_subset: int | None = None  # first N training images only
    label_seed: int = registry.LABEL_SEED  # used when labels are corrupted on the fly (no label file)
    grid_dense_until: int = 20
    grid_dense_step: int = 2
    grid_step: int = 5
    model_options: dict = field(default_factory=dict)  # build_model overrides
    hparams: str = "code"

    def resolved(self) -> "TrainConfig":
        """A validated copy with the seeds filled in."""
        cfg = dataclasses.replace(self, betas=tuple(float(b) for b in self.betas),
                                  model_options=dict(self.model_options))
        cfg.validate()
        if cfg.seed is None:
            cfg.seed = registry.TRAIN_SEED_BASE + cfg.run
        if cfg.init_seed is None:
            fixed = registry.get_architecture(cfg.arch).fixed_init_seed
            cfg.init_seed = cfg.seed if fixed is None else fixed
        return cfg

    def validate(self) -> None:
        arch = registry.get_architecture(self.arch)
        if self.dataset not in arch.datasets:
            registry.get_dataset(self.dataset)  # unknown dataset → its own error
            raise ValueError(f"architecture {self.arch!r} does not support dataset {self.dataset!r}; "
                             f"supported: {', '.join(arch.datasets)}")
        checks = [
            (0.0 <= float(self.corruption) <= 1.0, f"corruption must be in [0, 1], got {self.corruption}"),
            (int(self.run) >= 1, f"run must be >= 1, got {self.run}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (float(self.lr) > 0, f"learning rate must be > 0, got {self.lr}"),
            (float(self.momentum) >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (float(self.weight_decay) >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (int(self.batch_size) >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (0.0 < float(self.target_acc) <= 1.0, f"target accuracy must be a fraction in (0, 1], got {self.target_acc}"),
            (int(self.max_epochs) >= 0, f"max epochs must be >= 0, got {self.max_epochs}"),
            (self.train_subset is None or int(self.train_subset) >= 1,
             f"train subset must be >= 1, got {self.train_subset}"),
            (int(self.grid_dense_until) >= 0 and int(self.grid_dense_step) >= 1 and int(self.grid_step) >= 1,
             "grid: dense-until must be >= 0 and the steps >= 1"),
            (self.hparams in HPARAM_SOURCES, f"hparams must be one of {', '.join(HPARAM_SOURCES)}, got {self.hparams!r}"),
            (len(self.betas) == 2, f"betas must be two numbers, got {self.betas!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def default_train_config(arch: str, dataset: str, hparams: str = "code", **overrides) -> TrainConfig:
    """SPEC §4's settings for ``arch`` on ``dataset`` (``registry.train_defaults``); ``overrides``
    replace any field."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    base = registry.train_defaults(arch, dataset, hparams)
    base.update(overrides)
    config = TrainConfig(arch=arch, dataset=dataset, hparams=hparams, **base)
    config.validate()
    return config


# --------------------------------------------------------------------------------------------
# checkpoint grid (the rule itself: registry.on_grid / registry.checkpoint_grid)


def config_grid(config: TrainConfig, last_epoch: int) -> list[int]:
    """The checkpoints a run that ended at ``last_epoch`` writes: the grid plus the final epoch."""
    grid = checkpoint_grid(last_epoch, config.grid_dense_until, config.grid_dense_step, config.grid_step)
    return grid if grid[-1] == last_epoch else grid + [last_epoch]
