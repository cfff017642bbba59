"""Task instances <-> TRL conversational prompt–completion rows, JSONL I/O, and dataset collection.

Row format (one JSON object per JSONL line)::

    {"prompt": [{"role": "user", "content": PROMPT}],
     "completion": [{"role": "assistant", "content": EXPERT_ANSWER}],
     "task": "sat", "id": "sat-000123", "payload": "<JSON string of the instance payload>"}

``payload`` is a JSON *string* so that rows of different tasks share one Arrow schema. Every row read
or written is validated (:func:`validate_row`); a bad row raises ``ValueError`` naming the file, the
1-based line number, the row id when known, and the offending field. Blank lines are not rows and
are skipped; nothing else is.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from trl_ext.common.errors import ConfigError, MissingPathError
from trl_ext.tasks import TaskInstance, get_task

__all__ = [
    "REQUIRED_FIELDS",
    "check_selection",
    "ROLES",
    "TRAIN_FILE",
    "VALIDATION_FILE",
    "collect_affine",
    "episode_seeds",
    "instance_to_row",
    "load_affine_dataset",
    "read_jsonl",
    "row_to_instance",
    "split_counts",
    "split_sizes",
    "validate_row",
    "write_affine_dataset",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("prompt", "completion", "task", "id", "payload")
ROLES = frozenset({"system", "user", "assistant", "tool"})
TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"


def instance_to_row(inst: TaskInstance) -> dict[str, Any]:
    """A :class:`TaskInstance` -> a prompt–completion row (payload serialised with ``sort_keys=True``)."""
    return {
        "prompt": [{"role": "user", "content": inst.prompt}],
        "completion": [{"role": "assistant", "content": inst.expert_answer}],
        "task": inst.task,
        "id": inst.id,
        "payload": json.dumps(inst.payload, ensure_ascii=False, sort_keys=True),
    }


def row_to_instance(row: dict[str, Any]) -> TaskInstance:
    """Inverse of :func:`instance_to_row`: prompt = the last ``user`` message of ``row["prompt"]``,
    expert answer = the last ``assistant`` message of ``row["completion"]``. Raises ``ValueError``."""
    validate_row(row)
    where = f"row {row['id']!r}"
    users = [m["content"] for m in row["prompt"] if m["role"] == "user"]
    answers = [m["content"] for m in row["completion"] if m["role"] == "assistant"]
    if not users:
        raise ValueError(f"{where}: field 'prompt' has no user message")
    if not answers:
        raise ValueError(f"{where}: field 'completion' has no assistant message")
    return TaskInstance(
        task=row["task"], id=row["id"], prompt=users[-1], expert_answer=answers[-1], payload=json.loads(row["payload"])
    )


def _check_messages(field: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field {field!r} must be a non-empty list of {{role, content}} messages, got {value!r:.80}")
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"field {field!r}: message {i} must be a dict with 'role' and 'content', got {msg!r:.80}")
        if msg["role"] not in ROLES:
            raise ValueError(
                f"field {field!r}: message {i} has unknown role {msg['role']!r} (allowed {sorted(ROLES)})"
            )
        if not isinstance(msg["content"], str):
            raise ValueError(
                f"field {field!r}: message {i} content must be a string, got {type(msg['content']).__name__}"
            )


def validate_row(row: Any) -> None:
    """Raise ``ValueError("field '<name>': ...")`` unless ``row`` has the row format of this module.

    Checks: a JSON object; all of ``prompt, completion, task, id, payload`` present; prompt/completion
    non-empty lists of ``{role, content}`` dicts with a known role (system/user/assistant/tool) and string
    content; task and id non-empty strings; payload a string holding a JSON object. Extra keys are allowed.
    """
    if not isinstance(row, dict):
        raise ValueError(f"row must be a JSON object, got {type(row).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise ValueError(f"field {missing[0]!r} is missing (missing fields: {missing})")
    _check_messages("prompt", row["prompt"])
    _check_messages("completion", row["completion"])
    for field in ("task", "id"):
        if not isinstance(row[field], str) or not row[field]:
            raise ValueError(f"field {field!r} must be a non-empty string, got {row[field]!r}")
    if not isinstance(row["payload"], str):
        raise ValueError(f"field 'payload' must be a JSON string, got {type(row['payload']).__name__}")
    try:
        payload = json.loads(row["payload"])
    except json.JSONDecodeError as err:
        raise ValueError(f"field 'payload' is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"field 'payload' must encode a JSON object, got {type(payload).__name__}")


def _row_id(row: Any) -> str:
    return f" (id {row['id']!r})" if isinstance(row, dict) and "id" in row else ""


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Validate and write ``rows`` as UTF-8 JSONL (parent directories created); returns the row count.

    Raises ``ValueError`` naming the 1-based row number and field before anything is written.
    """
    path = Path(path)
    rows = list(rows)
    for i, row in enumerate(rows, start=1):
        try:
            validate_row(row)
        except ValueError as err:
            raise ValueError(f"{path}: row {i}{_row_id(row)}: {err}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate every row of a JSONL file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``"<path>, line <n> (id '<id>'): field '<field>': <problem>"`` for invalid JSON,
            a failed :func:`validate_row`, or an id already used on an earlier line.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"JSONL file not found: {path}")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: invalid JSON: {err}") from None
            try:
                validate_row(row)
            except ValueError as err:
                raise ValueError(f"{path}, line {lineno}{_row_id(row)}: {err}") from None
            if row["id"] in seen:
                raise ValueError(
                    f"{path}, line {lineno}{_row_id(row)}: field 'id' duplicates line {seen[row['id']]}"
                ) from None
            seen[row["id"]] = lineno
            rows.append(row)
    return rows


def split_sizes(num_rows: int, val_fraction: float) -> tuple[int, int]:
    """``(train, val)`` with ``val = round(val_fraction · N)`` (Python rounding, half to even), raised to 1
    when ``N >= 2`` and ``val_fraction > 0``, and capped at ``N - 1`` so train is never empty for N >= 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0, 1)")
    val = round(val_fraction * num_rows)
    if num_rows >= 2 and val_fraction > 0:
        val = max(val, 1)
    val = min(val, max(num_rows - 1, 0))
    return num_rows - val, val


def split_counts(total: int, n: int) -> list[int]:
    """``total`` spread over ``n`` parts: ``total // n`` each, the remainder one each to the first parts."""
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


TRAIN_SEED_RANGE = 10**9
"""Episode seeds of collected (training) episodes lie in ``[0, 10**9)``; held-out episodes use seeds from
``10**9`` up (:func:`trl_ext.eval.episodes.heldout_seeds`), so the two never meet."""


def episode_seeds(name: str, count: int, seed: int) -> list[int]:
    """``count`` distinct training seeds of environment ``name``, drawn by ``random.Random(f"{seed}:env:{name}")``."""
    return random.Random(f"{seed}:env:{name}").sample(range(TRAIN_SEED_RANGE), count)


def collect_affine(
    tasks: dict[str, dict[str, Any]] | Sequence[str],
    num_samples: int,
    seed: int,
    val_fraction: float = 0.1,
    progress: bool = True,
    envs: dict[str, dict[str, Any]] | None = None,
    num_episodes: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generate ``num_samples`` rows over ``tasks`` and split them into ``(train_rows, val_rows)``.

    * ``tasks``: ``{name: params}`` (each built with ``get_task(name, **params)``) or a list of names
      (default parameters).
    * Counts: ``num_samples // T`` per task, the remainder going one each to the first tasks.
    * Seeding: task number ``t`` (0-based position in ``tasks``) draws from
      ``random.Random(f"{seed}:{t}:{name}")``, so one task's instances do not depend on the others'
      counts; instance ``index`` (hence the id, e.g. ``sat-000123``) runs over all tasks so ids are unique.
    * The rows are then shuffled with ``random.Random(seed)``; the first ``val`` rows are validation
      and the rest train, with sizes from :func:`split_sizes`.

    * Episodes: with ``envs`` (``{name: get_env params}``) and ``num_episodes``, the expert's episodes
      (:func:`trl_ext.tasks.envs.play.expert_rows`) spread over the environments as the task instances are, the
      seeds from :func:`episode_seeds`; they join the task rows before the shuffle and split.

    The same arguments always give identical output.
    """
    items = list(tasks.items()) if isinstance(tasks, dict) else [(name, {}) for name in tasks]
    envs = dict(envs or {})
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 0:
        raise ValueError(f"num_episodes={num_episodes!r} must be an int >= 0")
    if num_episodes and not envs:
        raise ValueError(f"num_episodes={num_episodes} but no environments are selected")
    if not items and not (envs and num_episodes):
        raise ValueError("tasks must name at least one task (or environments and num_episodes be set)")
    if items and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples={num_samples!r} must be an int >= 1")
    if not items:
        num_samples = 0
    split_sizes(num_samples, val_fraction)  # validate val_fraction before the (possibly long) generation
    built = [(name, get_task(name, **(params or {}))) for name, params in items]
    counts = split_counts(num_samples, len(built)) if built else []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with tqdm(total=num_samples, desc="generating task instances", disable=not progress or not built) as bar:
        for t, (name, task) in enumerate(built):
            rng = random.Random(f"{seed}:{t}:{name}")
            for _ in range(counts[t]):
                row = instance_to_row(task.generate(rng, index=len(rows)))
                if row["id"] in seen:
                    raise ValueError(f"task {name!r} produced duplicate id {row['id']!r}")
                seen.add(row["id"])
                rows.append(row)
                bar.update(1)
    if envs and num_episodes:
        from trl_ext.tasks.envs import get_env
        from trl_ext.tasks.envs.play import expert_rows

        for (name, params), count in zip(envs.items(), split_counts(num_episodes, len(envs))):
            env = get_env(name, **params)
            try:
                rows += expert_rows(env, episode_seeds(name, count, seed), progress=progress)
            finally:
                env.close()
    random.Random(seed).shuffle(rows)
    _, val = split_sizes(len(rows), val_fraction)
    return rows[val:], rows[:val]


def check_selection(
    present: Mapping[str, int],
    tasks: Collection[str],
    envs: Collection[str],
    *,
    require_envs: bool,
    where: str,
) -> set[str]:
    """The task and environment names to keep of data that holds ``present`` (``{name: row count}``).

    Rows of names that are neither in ``tasks`` nor in ``envs`` are dropped, with a warning naming them. A selected
    task with no rows is an error, and so is a selected environment with no rows when ``require_envs`` (episodes
    were asked for): the data in ``where`` was collected with another selection.

    Raises:
        ConfigError: naming the missing names and what the data holds.
    """
    missing = [t for t in tasks if not present.get(t)] + [e for e in envs if require_envs and not present.get(e)]
    if missing:
        held = ", ".join(f"{k} {v}" for k, v in sorted(present.items())) or "nothing"
        raise ConfigError(
            f"{where} holds no rows of {missing} (it holds: {held}); it was collected with other tasks or "
            "environments: collect again into an empty --data_dir, or drop them from --tasks / --environments"
        )
    keep = set(tasks) | set(envs)
    dropped = {k: v for k, v in present.items() if k not in keep}
    if dropped:
        logger.warning("%s: leaving out the rows of %s (not in --tasks or --environments)", where, dropped)
    return keep


def write_affine_dataset(
    output_dir: str | Path, train_rows: Iterable[dict[str, Any]], val_rows: Iterable[dict[str, Any]]
) -> tuple[Path, Path]:
    """Write ``<output_dir>/train.jsonl`` and ``<output_dir>/validation.jsonl``; returns both paths."""
    output_dir = Path(output_dir)
    train_path, val_path = output_dir / TRAIN_FILE, output_dir / VALIDATION_FILE
    write_jsonl(train_rows, train_path)
    write_jsonl(val_rows, val_path)
    return train_path, val_path


def _features():
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "prompt": List(message),
            "completion": List(message),
            "task": Value("string"),
            "id": Value("string"),
            "payload": Value("string"),
        }
    )


def load_affine_dataset(data_dir: str | Path):
    """``datasets.DatasetDict`` with splits ``"train"`` and ``"validation"`` read through :func:`read_jsonl`.

    Only the row-format columns are kept (messages reduced to ``{role, content}``) with a fixed schema,
    so every split—even an empty one—has the same features.

    Raises:
        FileNotFoundError: ``data_dir`` or one of the two files is missing (the message names the path).
        ValueError: a bad row (see :func:`read_jsonl`).
    """
    from datasets import Dataset, DatasetDict

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingPathError(f"affine dataset directory not found: {data_dir}")
    features = _features()
    splits = {}
    for split, filename in (("train", TRAIN_FILE), ("validation", VALIDATION_FILE)):
        rows = read_jsonl(data_dir / filename)
        columns = [
            {
                "prompt": [{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
                "completion": [{"role": m["role"], "content": m["content"]} for m in row["completion"]],
                **{f: row[f] for f in ("task", "id", "payload")},
            }
            for row in rows
        ]
        splits[split] = Dataset.from_list(columns, features=features)
    return DatasetDict(splits)


def load_or_collect_affine(
    data_dir: str | Path,
    task_params: dict[str, dict[str, Any]],
    num_samples: int,
    seed: int,
    val_fraction: float = 0.1,
    envs: dict[str, dict[str, Any]] | None = None,
    num_episodes: int = 0,
):
    """:func:`load_affine_dataset` of ``data_dir``, collecting it there first when it holds no ``train.jsonl``.

    Under a multi-process launch the main process collects while the others wait, then every process loads.
    """
    from accelerate import PartialState

    data_dir = Path(data_dir)
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (data_dir / TRAIN_FILE).exists():
            train, val = collect_affine(
                task_params, num_samples, seed, val_fraction, envs=envs, num_episodes=num_episodes
            )
            write_affine_dataset(data_dir, train, val)
    return load_affine_dataset(data_dir)
