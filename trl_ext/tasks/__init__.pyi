from .abd import ABDTask
from .base import Task, TaskInstance
from .ded import DEDTask
from .registry import available_tasks, get_task, get_task_class, register_task
from .rewards import completion_text, make_task_reward, prompt_only_rows
from .sat import SATTask
