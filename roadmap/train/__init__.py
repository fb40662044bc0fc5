"""Train and measure one run (one step, one seed), in parts a reader can take in order:

    build      model, DDP/compile, optimizer, schedule, loss scaler, EMA, loss and mixup
    state      where the run is (what its checkpoint holds); the running loss on the device
    loop       batches (uint8 to the device, normalized and augmented there) and `train_run`:
               a straight line, one host sync every LOG_EVERY updates
    evaluate   top-1/top-5, inference speed, the learning curve

Every update's randomness is seeded from (seed, update) and every batch from (seed, epoch,
batch), so a run resumed from a checkpoint takes exactly the path an uninterrupted one would.
"""

from ..env import Dist, resolve_device  # noqa: F401  (re-exported: the CLI's Dist)
from .build import (  # noqa: F401
    Setup,
    make_loss,
    make_optimizer,
    scale_config,
    schedule_length,
    seed_update,
    setup,
    train_step,
)
from .evaluate import EVAL_WARMUP, evaluate, pack_bits, score_epoch, unpack_bits  # noqa: F401
from .loop import LOG_EVERY, WARMUP_UPDATES, Updates, ValBatches, batches, micro_loader, train_run, workers_for  # noqa: F401
from .state import (  # noqa: F401
    SAVED,
    BadCheckpoint,
    NonFiniteLoss,
    TrainState,
    atomic_torch_save,
    load_checkpoint,
    restore,
    set_aside,
    start,
)
