"""The one error a DAG that Sluice cannot schedule gets at parse time."""


class SpecError(ValueError):
    """A DAG uses something Sluice's scheduler cannot decide from.

    One line naming the DAG, the task (and map index) and the feature; it
    becomes the DAG file's import error.
    """
