"""Tasks as objects (design.md section 3): what differs between classify, regress, joint and
calibrate.

:class:`~pionml.tasks.base.Task` is the interface the trainer, the run folder and the
evaluation use; tasks register by name (:func:`register_task`). Target transforms:
:mod:`pionml.tasks.transforms`.
"""

from pionml.tasks.base import (TABLE_FIELDS, TASKS, CliOption, StudyPart, Task, TaskRun,
                               add_task_arguments, make_task, register_task, supported_pairs,
                               task_class, task_runs)
from pionml.tasks import calibrate, classify, joint, regress  # noqa: F401  (register the tasks)

__all__ = ["TABLE_FIELDS", "TASKS", "CliOption", "StudyPart", "Task", "TaskRun",
           "add_task_arguments", "make_task", "register_task", "supported_pairs", "task_class",
           "task_runs"]
