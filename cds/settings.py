"""What the environment configures, read once by a face and handed down.

A settings object reads the environment when it is made (pydantic-settings: arguments first, then the
variables, then the defaults). Each face makes one at start-up (the service's app factory, the command
line, screening) and passes the values on; the decision core, the knowledge loader and the store take
them as arguments and never read the environment themselves.

`CoreSettings` holds what the core takes (where the knowledge and its cache are, the audit database and
its key, the spool, the local state file, the PDF font); the service's `Settings`
(cds/service/config.py) adds what only the service reads. Every variable is in the README's table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds.errors import CdsError

_OFF = {"off", "0", "false", "no"}


class EnvironmentSettings(BaseSettings):
    """A settings model whose fields are named by their variables (`validation_alias`) and given by
    field name as arguments."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", env_ignore_empty=True,
                                      case_sensitive=True, validate_assignment=False)

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The settings the environment gives, `overrides` (by field name) on top; a value that is not
        valid is a CdsError naming its variable (a face's start-up message)."""
        try:
            return cls(**overrides)
        except ValidationError as err:
            raise CdsError(_problems(cls, err)) from None


def _problems(cls: type[BaseSettings], err: ValidationError) -> str:
    aliases = {name: str(f.validation_alias or name) for name, f in cls.model_fields.items()}
    said = []
    for e in err.errors():
        where = str(e["loc"][0]) if e["loc"] else ""
        said.append(f"{aliases.get(where, where)}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(said)


class CoreSettings(EnvironmentSettings):
    knowledge_dir: Path | None = Field(None, validation_alias="CDS_KNOWLEDGE_DIR")     # default: the bundled knowledge
    knowledge_cache: str = Field("", validation_alias="CDS_KNOWLEDGE_CACHE")           # a folder, or "off"
    xdg_cache_home: str = Field("", validation_alias="XDG_CACHE_HOME")                 # the cache's default base
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")            # default SQLite under ./var/
    audit_key: str | None = Field(None, validation_alias="CDS_AUDIT_KEY", repr=False)  # the pseudonyms' site secret
    audit_key_file: Path | None = Field(None, validation_alias="CDS_AUDIT_KEY_FILE")   # the development key's file
    spool_dir: Path | None = Field(None, validation_alias="CDS_SPOOL_DIR")             # default ./var/spool
    local_state: str | None = Field(None, validation_alias="CDS_LOCAL_STATE")          # this host's SQLite state file
    pdf_font: Path | None = Field(None, validation_alias="CDS_PDF_FONT")               # the summary PDF's TrueType font
    # where the local policy comes from: the database's governed versions, or the rules/ files as they are
    policy: Literal["database", "files"] = Field("database", validation_alias="CDS_POLICY")

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_word(cls, value: Any) -> Any:
        word = value.strip().lower() if isinstance(value, str) else value
        if word not in ("database", "files"):
            raise ValueError(f"{value!r}: use 'database' or 'files'")
        return word

    def knowledge_cache_dir(self) -> Path | None:
        """The knowledge cache's folder: CDS_KNOWLEDGE_CACHE, else $XDG_CACHE_HOME/pgx-cds (~/.cache),
        or None when CDS_KNOWLEDGE_CACHE is "off"."""
        configured = self.knowledge_cache.strip()
        if configured.lower() in _OFF:
            return None
        if configured:
            return Path(configured)
        return Path(self.xdg_cache_home or Path.home() / ".cache") / "pgx-cds"
