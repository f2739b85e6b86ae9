"""How a request that must wait for its task learns the outcome: the task pushes it on a
one-shot reply list (`redis_store.send_reply`), the request pops it (`wait_for_reply`).

Not Celery's result backend: `AsyncResult.get()` refuses to run in a process that hosts a
worker (Celery's `task_join_will_block` guard), and the agent's web server runs in the
worker's process. A reply list behaves the same whether the worker shares the request's
process or runs in another one, so moving either does not change this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from apps_api.redis_store import new_reply_key, send_reply, wait_for_reply

T = TypeVar("T")


class TaskFailed(Exception):
    """The task raised an error the caller does not know by class; the message is the task's."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message or error)
        self.error = error


class TaskNotDone(Exception):
    """No outcome within the wait: the worker is busy, down, or the task is still running."""


def answer_with_outcome(reply_key: str, work: Callable[[], T]) -> T:
    """Run `work` in the task and reply with its result or its error (then re-raised, so the
    worker logs it as failed). An empty `reply_key`: nobody waits, nothing is sent."""
    try:
        result = work()
    except Exception as exc:
        if reply_key:
            send_reply(reply_key, {"ok": False, "error": type(exc).__name__, "message": str(exc)})
        raise
    if reply_key:
        send_reply(reply_key, {"ok": True, "result": result})
    return result


def run_and_wait(
    send: Callable[[str], object], *, timeout: float, raises: Iterable[type[Exception]] = ()
) -> Any:
    """Queue a task with `send(reply_key)` and return its result once it replies.

    An error of one of the classes in `raises` (matched by name, built from the task's
    message) is raised as itself; any other as TaskFailed. TaskNotDone after `timeout`."""
    reply_key = new_reply_key()
    send(reply_key)
    reply = wait_for_reply(reply_key, timeout=timeout)
    if reply is None:
        raise TaskNotDone(f"The worker did not finish the action within {timeout:.0f} s")
    if reply.get("ok"):
        return reply.get("result")
    error, message = str(reply.get("error")), str(reply.get("message") or "")
    known = {cls.__name__: cls for cls in raises}
    if error in known:
        raise known[error](message)
    raise TaskFailed(error, message)
