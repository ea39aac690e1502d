"""User-facing errors. The CLI prints ``str(err)`` on one line and exits with code 2, no traceback."""


class RationalignError(Exception):
    """Base class for errors caused by user input (files, configs, model folders), not by bugs."""


class DataError(RationalignError):
    """A data file is malformed or inconsistent. The message names the file, the line and the fix."""


class ConfigError(RationalignError):
    """A config file or command-line override is invalid."""


class ModelError(RationalignError):
    """A model folder or model name cannot be resolved or loaded, or lacks what a command needs."""


def located(path: object, line: int | None, problem: str, fix: str) -> str:
    """Format the one-line message every input error uses: ``file:line: problem; fix: ...``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return f"{where}: {problem}; fix: {fix}"
