"""Hub repo names, the publishing settings and the token (docs/design.md §6: every stage's output is published).

`repo_id_for(hub_config, stage, language)` fills `HubConfig.repo_id_template`
("{namespace}/{prefix}-{stage}[-{variant}][-{language}]" -> "my-org/mlpl-stage3-slimipl-el"), the stage
named as `mlpl.stages` names it. `HubReference` is a repo as a card's lineage names it.

The token: `HubConfig.token`, else the `HF_TOKEN` environment variable, else the `hf auth login`
token file. It is held in a `HubToken`, whose repr and str are masked and which refuses to be
pickled; `HubConfig.to_dict()` (what to save beside a checkpoint) leaves it out.
"""

from __future__ import annotations

import hmac
import re
import string
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..config import MASKED
from ..stages import RepoType, Stage, recipe_stage

HUB_URL = "https://huggingface.co"  # links in the cards point at the public Hub
DEFAULT_REPO_ID_TEMPLATE = "{namespace}/{prefix}-{stage}[-{variant}][-{language}]"
REPO_ID_FIELDS = ("namespace", "prefix", "stage", "variant", "language")
# One field value of a repo id: Hub names allow letters, digits, "-", "_" and "." (validate_repo_id).
_REPO_NAME_PART = re.compile(r"[A-Za-z0-9._-]+")


class HubToken:
    """A Hub access token that does not show itself.

    repr() and str() print `***`, so a config printed or logged (even inside `dataclasses.asdict`, which
    copies it: copies are the token itself) reveals nothing; pickling (torch.save of a config, yaml.dump
    of an object) is refused, since it would write the token to disk. `reveal()` is called only where the
    token is handed to `HfApi`. (Not a str subclass: json.dumps and string concatenation would reveal it;
    not a dataclass: `dataclasses.asdict` would copy its value out.)
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a Hub token must be a non-empty string (see https://huggingface.co/settings/tokens)")
        object.__setattr__(self, "_value", value.strip())

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "HubToken('***')"

    def __str__(self) -> str:
        return "***"

    def __setattr__(self, name, value):
        raise AttributeError("HubToken is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, HubToken) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> "HubToken":
        return self

    def __deepcopy__(self, memo) -> "HubToken":
        return self

    def __reduce__(self):
        raise TypeError(
            "refusing to serialize a Hub token (it would be written to disk): save HubConfig.to_dict(), "
            "which leaves the token out, and pass the token through HF_TOKEN or `hf auth login`"
        )


@dataclass(frozen=True)
class HubConfig:
    """Where and how the recipe publishes (one `hub:` section of an experiment YAML).

    Args:
        push: publish each stage's output when it finishes (the recipe reads it; `publish_folder`
            itself always uploads when called).
        namespace: user or organization owning the repos (`{namespace}` in the template).
        prefix: first part of every repo name (`{prefix}`).
        private: create new repos private (an existing repo keeps its visibility).
        token: Hub access token; None: the `HF_TOKEN` environment variable, then the token saved by
            `hf auth login`. Held in a masked `HubToken`; never saved by `to_dict()`.
        revision: branch to commit to; None: the repo's main branch. Created from main if missing.
        max_retries: retries of each Hub call after a transient error (HTTP 5xx/429, dropped
            connection); 0 disables them. huggingface_hub also retries the upload requests itself.
        retry_wait_seconds: wait before the first retry; doubled after each (capped at 60 s).
        repo_id_template: `str.format` fields {namespace}, {prefix}, {stage}, {variant}, {language};
            a part in square brackets is left out when a field in it is None.
        endpoint: Hub URL; None: `HF_ENDPOINT` or https://huggingface.co.
    """

    push: bool = False
    namespace: Optional[str] = None
    prefix: str = "mlpl"
    private: bool = True
    token: Union[HubToken, str, None] = None
    revision: Optional[str] = None
    max_retries: int = 3
    retry_wait_seconds: float = 2.0
    repo_id_template: str = DEFAULT_REPO_ID_TEMPLATE
    endpoint: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.token, str):
            # MASKED: what a saved config holds instead of the token (mlpl.config.mask_secrets).
            given = self.token.strip() and self.token != MASKED
            object.__setattr__(self, "token", HubToken(self.token) if given else None)
        elif self.token is not None and not isinstance(self.token, HubToken):
            raise TypeError(f"HubConfig.token must be a string or None, got {type(self.token).__name__}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"HubConfig.max_retries={self.max_retries!r} must be an integer >= 0 (default 3)")
        if not float(self.retry_wait_seconds) >= 0:
            raise ValueError(f"HubConfig.retry_wait_seconds={self.retry_wait_seconds!r} must be >= 0 (default 2.0)")
        _check_repo_id_template(self.repo_id_template)
        for name in ("namespace", "prefix"):
            value = getattr(self, name)
            if value is not None and not _REPO_NAME_PART.fullmatch(str(value)):
                raise ValueError(
                    f"HubConfig.{name}={value!r} may only hold letters, digits, '-', '_' and '.' (it becomes part "
                    "of a Hub repo id)"
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings to save beside a checkpoint: every field except the token."""
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name != "token"}


def _check_repo_id_template(template: str) -> None:
    """A ValueError naming the problem when `template` cannot make repo ids."""
    plain = template.replace("[", "").replace("]", "")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(plain) if name is not None}
    except ValueError as error:
        raise ValueError(f"HubConfig.repo_id_template={template!r} is not a valid format string: {error}") from None
    unknown = sorted(names - set(REPO_ID_FIELDS))
    if unknown:
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} uses unknown fields {unknown}; "
            f"the fields are {list(REPO_ID_FIELDS)}"
        )
    if "stage" not in names:
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} has no {{stage}} field, so all stages would share one repo"
        )
    if template.count("[") != template.count("]") or re.search(r"\[[^\]]*\[", template):
        raise ValueError(f"HubConfig.repo_id_template={template!r} has unbalanced or nested square brackets")


def repo_id_for(
    hub_config: HubConfig,
    stage: Union[int, str, Stage],
    language: Optional[str] = None,
    variant: Optional[str] = None,
) -> str:
    """The repo id of one stage's output: `hub_config.repo_id_template` filled in and validated.

    `stage` is a recipe stage (number, slug or name; see `recipe_stage`), `language` the language of a
    per-language stage (required for stages 2 and 3), `variant` an optional distinction between runs
    of one stage (e.g. "large"). Raises ValueError naming the bad value and what to change.
    """
    stage = recipe_stage(stage)
    if stage.per_language and language is None:
        raise ValueError(f"stage {stage.number} ({stage.slug}) has one checkpoint per language: pass language=")
    values = {
        "namespace": hub_config.namespace,
        "prefix": hub_config.prefix,
        "stage": stage.name,
        "variant": variant,
        "language": language,
    }
    for name in ("variant", "language"):
        value = values[name]
        if value is not None and not _REPO_NAME_PART.fullmatch(str(value)):
            raise ValueError(
                f"{name}={value!r} cannot be part of a Hub repo id: use letters, digits, '-', '_' and '.' only"
            )
    template = hub_config.repo_id_template
    for name in ("language", "variant"):
        if values[name] is not None and "{" + name + "}" not in template:
            raise ValueError(
                f"{name}={values[name]!r} was given but HubConfig.repo_id_template={template!r} has no {{{name}}} "
                f"field, so the repos of different {name}s would collide; add [-{{{name}}}] to the template"
            )

    def fill(part: str) -> str:
        needed = [name for _, name, _, _ in string.Formatter().parse(part) if name]
        if any(values[name] is None for name in needed):
            return ""
        return part.format(**values)

    # Optional parts first ("[-{language}]"), then the rest, which must have all its fields.
    filled = re.sub(r"\[([^\]]*)\]", lambda match: fill(match.group(1)), template)
    missing = [name for _, name, _, _ in string.Formatter().parse(filled) if name and values[name] is None]
    if missing:
        hint = " (your user or organization name; --namespace of scripts/publish.py)" if "namespace" in missing else ""
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} needs {missing}, which are not set; set HubConfig."
            f"{missing[0]}{hint} or put that part of the template in square brackets"
        )
    repo_id = filled.format(**values)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"repo id {repo_id!r} (from HubConfig.repo_id_template={template!r}, prefix={hub_config.prefix!r}, "
            f"stage={stage.name!r}, variant={variant!r}, language={language!r}) is not a valid Hub repo id: {error}"
        ) from None
    return repo_id


@dataclass(frozen=True)
class HubReference:
    """A checkpoint or data set on the Hub, as the lineage of a card names it."""

    repo_id: str
    revision: Optional[str] = None
    repo_type: RepoType = "model"

    def __post_init__(self):
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as error:
            raise ValueError(f"HubReference.repo_id={self.repo_id!r} is not a Hub repo id: {error}") from None
        if self.repo_type not in ("model", "dataset"):
            raise ValueError(f"HubReference.repo_type={self.repo_type!r} must be 'model' or 'dataset'")

    @property
    def url(self) -> str:
        base = f"{HUB_URL}/datasets/{self.repo_id}" if self.repo_type == "dataset" else f"{HUB_URL}/{self.repo_id}"
        return f"{base}/tree/{self.revision}" if self.revision else base

    def markdown(self) -> str:
        revision = f" (revision `{self.revision}`)" if self.revision else ""
        return f"[`{self.repo_id}`]({self.url}){revision}"




__all__ = ["DEFAULT_REPO_ID_TEMPLATE", "HUB_URL", "REPO_ID_FIELDS", "HubConfig", "HubReference", "HubToken", "repo_id_for"]
