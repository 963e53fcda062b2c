"""ewcbook: Elastic Weight Consolidation in Keras 3, the library of the book.

Data flow: data -> models -> fisher -> penalties -> training -> evaluation,
with experiments (task sequences, λ sweeps), sweeps (copies of a network
trained side by side), state (saving consolidation) and plots on the side.
"""

from ewcbook import comparison, kfac, plots, sequences
from ewcbook.data import Task, joint, permuted_mnist, split_mnist, validation_split
from ewcbook.evaluation import (
    TaskAccuracyHistory,
    average_accuracy,
    backward_transfer,
    evaluate_tasks,
    forgetting,
    task_accuracy,
)
from ewcbook.experiments import SequenceResult, consolidate, fit_task, make_penalty, strength_sweep, train_sequence
from ewcbook.fisher import diagonal_fisher
from ewcbook.models import mlp
from ewcbook.penalties import EWC, L2Anchor, OnlineEWC
from ewcbook.state import load_state, save_state
from ewcbook.sweeps import copy_accuracies, copy_weights, stack_network, train_copies
from ewcbook.training import ContinualModel, FusedAdam, NonFiniteLossError
from ewcbook.utils import set_seed

__version__ = "0.1.0"

__all__ = [
    "comparison",
    "kfac",
    "plots",
    "sequences",
    "EWC",
    "ContinualModel",
    "FusedAdam",
    "L2Anchor",
    "NonFiniteLossError",
    "OnlineEWC",
    "SequenceResult",
    "Task",
    "TaskAccuracyHistory",
    "average_accuracy",
    "backward_transfer",
    "consolidate",
    "copy_accuracies",
    "copy_weights",
    "diagonal_fisher",
    "evaluate_tasks",
    "fit_task",
    "forgetting",
    "joint",
    "load_state",
    "make_penalty",
    "mlp",
    "permuted_mnist",
    "save_state",
    "set_seed",
    "split_mnist",
    "stack_network",
    "strength_sweep",
    "task_accuracy",
    "train_copies",
    "train_sequence",
    "validation_split",
]
