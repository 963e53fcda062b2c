"""ewcbook: Elastic Weight Consolidation in Keras 3, the library of the book.

The core, in the order data flows through it: data -> models -> fisher ->
penalties -> training -> protocol -> evaluation, with the argument checks
(checks), an optimizer (optimizers), callbacks and set_seed (utils) under it.
Beside the penalties: distillation (LwF); beside the protocol: replay (a
memory of earlier tasks). Beside it all: kfac (Kronecker-factored EWC),
copies (one network trained many times side by side), state (saving
consolidation), stats (results over seeds).

``import ewcbook`` loads neither matplotlib nor the book's chapter helpers
(:mod:`ewcbook.chapters`, which only the chapters import).
"""

from ewcbook import copies, distillation, fisher, kfac, penalties, protocol, replay, state, stats
from ewcbook.callbacks import NonFiniteLossError, TaskAccuracyHistory
from ewcbook.copies import copy_accuracies, copy_weights, stack_network, train_copies
from ewcbook.data import Task, joint, permuted_mnist, split_mnist, split_mnist_tasks, validation_split
from ewcbook.distillation import LwF
from ewcbook.evaluation import average_accuracy, backward_transfer, evaluate_tasks, forgetting, task_accuracy
from ewcbook.fisher import diagonal_fisher
from ewcbook.kfac import KroneckerConsolidation, KroneckerEWC, kronecker_factors
from ewcbook.models import mlp
from ewcbook.optimizers import FusedAdam
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC, SynapticIntelligence
from ewcbook.protocol import Consolidation, SequenceResult, train_sequence
from ewcbook.replay import Replay, ReplayMemory
from ewcbook.state import load_state, save_state
from ewcbook.stats import mean_interval, paired_difference, unpaired_difference, verdict
from ewcbook.training import ContinualModel, fit_task, unit_table
from ewcbook.utils import set_seed

__version__ = "0.1.0"

__all__ = [
    "copies",
    "distillation",
    "fisher",
    "kfac",
    "penalties",
    "protocol",
    "replay",
    "state",
    "stats",
    "EWC",
    "Consolidation",
    "ContinualModel",
    "FusedAdam",
    "KroneckerConsolidation",
    "KroneckerEWC",
    "L2Anchor",
    "LwF",
    "NonFiniteLossError",
    "OnlineEWC",
    "Replay",
    "ReplayMemory",
    "SequenceResult",
    "SynapticIntelligence",
    "Task",
    "TaskAccuracyHistory",
    "average_accuracy",
    "backward_transfer",
    "copy_accuracies",
    "copy_weights",
    "diagonal_fisher",
    "evaluate_tasks",
    "fit_task",
    "forgetting",
    "joint",
    "kronecker_factors",
    "load_state",
    "mean_interval",
    "mlp",
    "paired_difference",
    "unpaired_difference",
    "permuted_mnist",
    "save_state",
    "set_seed",
    "split_mnist",
    "split_mnist_tasks",
    "stack_network",
    "task_accuracy",
    "train_copies",
    "train_sequence",
    "unit_table",
    "validation_split",
    "verdict",
]
