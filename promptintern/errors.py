"""Errors raised for bad input: each names the file, line, field or name at fault."""


class PromptInternError(Exception):
    """Base class for errors that users can fix."""


class DatasetNotFoundError(PromptInternError, FileNotFoundError):
    def __init__(self, dataset: str, tried: str, hint: str):
        self.dataset, self.tried = dataset, tried
        super().__init__(f"dataset {dataset!r} not found: tried {tried}. {hint}")


class DataFormatError(PromptInternError, ValueError):
    def __init__(self, path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class UnknownModelError(PromptInternError, LookupError):
    pass


class ConfigError(PromptInternError, ValueError):
    """A bad experiment or task configuration; the message names the field."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field, self.source = field, source
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{field}: {message}")
