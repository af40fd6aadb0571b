"""The one place where the runner silences library output that does not apply to a run.

`quiet_libraries()` installs, once per process, logging filters and warning filters (it imports
nothing heavy, so it runs before Lightning is loaded):
- Lightning's device lines for devices that do not exist ("GPU available: False, used: False",
  "TPU available: False, using: 0 TPU cores", HPU likewise); a present device is still reported;
- Lightning's advert for its cloud logger ("litlogger"), and its note that a checkpoint is loaded
  with `weights_only=False` (the runner loads only the checkpoints it wrote);
- Lightning's "The `srun` command is available on your system but is not used" warning outside a
  SLURM allocation (no SLURM_JOB_ID): on a login node or a workstation with SLURM's client tools
  a local run is intended; inside an allocation the warning still shows;
- two Lightning warnings that say nothing about a run of this project: ModelCheckpoint under
  manual optimisation (checkpoints hold the post-step state, which is what resume needs) and
  torch's LeafSpec deprecation inside Lightning's own code.
Real warnings (a GPU present but unused, a slow data loader, ...) are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# the loggers Lightning's rank_zero_info / rank_zero_warn write to
RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# ...and the checkpoint connector's, which says it loads a checkpoint with weights_only=False
# (the runner loads only the checkpoints it wrote itself)
QUIET_LOGGERS = (*RANK_ZERO_LOGGERS, "pytorch_lightning.trainer.connectors.checkpoint_connector")
ABSENT_DEVICE = re.compile(r"^(GPU|TPU|HPU|IPU) available: False\b")
SRUN_WARNING = "The `srun` command is available on your system but is not used"


class DropInapplicable(logging.Filter):
    """Drop Lightning's lines about absent devices and its cloud-logger advert."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (ABSENT_DEVICE.match(message) or "litlogger" in message
                    or message.startswith("`weights_only` was not set"))


_installed = False


def quiet_libraries() -> None:
    """Install the filters above (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(DropInapplicable())
    if "SLURM_JOB_ID" not in os.environ:
        warnings.filterwarnings("ignore", message=re.escape(SRUN_WARNING))
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
