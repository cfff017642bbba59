"""Reasoning tasks and agent environments: each one is generate -> prompt -> score."""

from trl_ext.data.tasks.base import Task, TaskInstance
from trl_ext.data.tasks.registry import available_tasks, get_task, get_task_class, register_task

__all__ = ["Task", "TaskInstance", "available_tasks", "get_task", "get_task_class", "register_task"]
