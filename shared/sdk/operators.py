"""The stock operators: ``EmptyOperator``, ``PythonOperator``, ``BashOperator``."""

from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from shared.sdk.baseoperator import BaseOperator
from shared.sdk.exceptions import AirflowException, AirflowSkipException


class EmptyOperator(BaseOperator):
    """Does nothing; the scheduler marks it done without sending it to a worker."""

    ui_color = "#e8f7e4"
    _is_empty = True

    def execute(self, context: dict) -> None:
        return None


def context_kwargs(fn: Callable, op_args: Sequence[Any], context: dict) -> dict[str, Any]:
    """The context entries ``fn`` asks for: all of them with ``**kwargs``, else by name."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return {k: v for k, v in context.items() if not k.startswith("__")}
    positional = {p.name for p in params[: len(op_args)]}
    return {p.name: context[p.name] for p in params
            if p.name in context and p.name not in positional and not p.name.startswith("__")}


class PythonOperator(BaseOperator):
    """Calls ``python_callable(*op_args, **op_kwargs)``; its return value is the XCom."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")
    ui_color = "#ffefeb"

    def __init__(self, *, python_callable: Callable, op_args: Sequence[Any] | None = None,
                 op_kwargs: dict[str, Any] | None = None, templates_dict: dict | None = None,
                 templates_exts: Sequence[str] | None = None, show_return_value_in_logs: bool = True,
                 **kwargs: Any):
        if not callable(python_callable):
            raise AirflowException("`python_callable` param must be callable")
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        self.show_return_value_in_logs = show_return_value_in_logs

    def execute(self, context: dict) -> Any:
        context = {**context, "templates_dict": self.templates_dict}
        kwargs = {**context_kwargs(self.python_callable, self.op_args, context), **self.op_kwargs}
        return self.execute_callable(kwargs)

    def execute_callable(self, kwargs: dict[str, Any]) -> Any:
        return self.python_callable(*self.op_args, **kwargs)


class BashOperator(BaseOperator):
    """Runs ``bash_command`` with ``bash -c``; the last line of stdout is the XCom."""

    template_fields: Sequence[str] = ("bash_command", "env", "cwd")
    template_ext: Sequence[str] = (".sh", ".bash")  # bash_command="run.sh": the file's text
    ui_color = "#f0ede4"

    def __init__(self, *, bash_command: str, env: dict[str, str] | None = None,
                 append_env: bool = False, output_encoding: str = "utf-8",
                 skip_on_exit_code: int | Sequence[int] | None = 99, cwd: str | None = None,
                 output_processor: Callable[[str], Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        if isinstance(skip_on_exit_code, int):
            skip_on_exit_code = [skip_on_exit_code]
        self.skip_on_exit_code = list(skip_on_exit_code or [])
        self.cwd = cwd
        self.output_processor = output_processor or (lambda out: out)

    def execute(self, context: dict) -> Any:
        return self.run_command(self.bash_command, context)

    def run_command(self, command: str, context: dict) -> Any:
        """Run ``command`` with this operator's environment; the last stdout line is the XCom."""
        env = dict(os.environ) if self.env is None or self.append_env else {}
        env.update(self.env or {})
        env.update(_airflow_context_env(context))
        proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        last = ""
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(self.output_encoding, errors="replace").rstrip("\n")
            print(line, flush=True)
            last = line
        code = proc.wait()
        if code in self.skip_on_exit_code:
            raise AirflowSkipException(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise AirflowException(
                f"Bash command failed. The command returned a non-zero exit code {code}."
            )
        return self.output_processor(last)


def _airflow_context_env(context: dict) -> dict[str, str]:
    ti = context.get("ti")
    if ti is None:
        return {}
    return {
        "AIRFLOW_CTX_DAG_ID": ti.dag_id,
        "AIRFLOW_CTX_TASK_ID": ti.task_id,
        "AIRFLOW_CTX_DAG_RUN_ID": ti.run_id,
        "AIRFLOW_CTX_TRY_NUMBER": str(ti.try_number),
        "AIRFLOW_CTX_LOGICAL_DATE": context["logical_date"].isoformat(),
    }
