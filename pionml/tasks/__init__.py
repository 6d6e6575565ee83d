"""Tasks as objects (design.md section 3): what differs between classify, regress and calibrate.

:class:`~pionml.tasks.base.Task` is the interface the trainer, the run folder and the
evaluation use; tasks register by name (:func:`register_task`). Target transforms:
:mod:`pionml.tasks.transforms`.
"""

from pionml.tasks.base import TABLE_FIELDS, TASKS, Task, make_task, register_task, task_class
from pionml.tasks import calibrate, classify, regress  # noqa: F401  (register the tasks)

__all__ = ["TABLE_FIELDS", "TASKS", "Task", "make_task", "register_task", "task_class"]
