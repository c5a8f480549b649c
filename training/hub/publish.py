"""Uploading a checked folder to the Hub: `publish_folder(folder, repo_id, repo_type, hub_config)`.

It checks the folder is complete (`hub_ready_folder_check`) and holds no token, creates the repo
(`exist_ok=True`) and the branch, uploads with `HfApi.upload_folder` and returns the commit URL
(docs/design.md §6). Nothing on disk is changed, so a failed upload is re-run as is (`scripts/publish.py`);
files already on the Hub with the same content are skipped, so re-running a finished upload makes no
new commit.

Retries: huggingface_hub retries the upload's own requests (preupload, LFS, commit) through
`huggingface_hub.utils.http_backoff`, but not `create_repo` / `create_branch` nor a whole upload whose
requests ran out of retries. Those calls are retried here with the library's own notion of a transient
failure (the exceptions and statuses `http_backoff` retries by default: timeouts, dropped connections,
HTTP 408 / 429 / 5xx), read from its signature, so no HTTP client is named here. Every other failure
(`huggingface_hub.errors.HfHubHTTPError` 401 / 403 / 404 above all) stops at once with what to do.

Why `upload_folder` and not `upload_large_folder`: in huggingface_hub 2.x with `hf_xet` (one of its
dependencies; 2.4 here), `upload_folder` already streams a large folder in several commits and resumes
an interrupted upload when the same call is re-run (files already on the Hub are skipped by content).
`upload_large_folder` would add little, but it writes its resume state into
`<folder>/.cache/huggingface/` (the local folder would no longer be left untouched) and cannot set the
commit message. An older huggingface_hub (before the streamed pipeline) uploads the folder in one commit.

The token is only sent in the Authorization header: `publish_folder` refuses to upload a folder in
which a text file contains it.
"""

from __future__ import annotations

import inspect
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, TypeVar, Union

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, http_backoff, validate_repo_id

from ..stages import RepoType
from .checks import hub_ready_folder_check
from .naming import HubConfig

logger = logging.getLogger("mlpl.hub")

# Text files scanned for the token before an upload (weights and parquet shards are not text).
_TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".py", ".cfg", ".toml", ".csv", ".tsv", ".log"}
_TEXT_SCAN_LIMIT_BYTES = 50 * 1024 * 1024
# What huggingface_hub itself treats as transient: the defaults of http_backoff.
_LIBRARY_RETRY_POLICY = inspect.signature(http_backoff).parameters
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = tuple(_LIBRARY_RETRY_POLICY["retry_on_exceptions"].default)
TRANSIENT_STATUSES: tuple[int, ...] = tuple(_LIBRARY_RETRY_POLICY["retry_on_status_codes"].default)
_MAX_RETRY_WAIT_SECONDS = 60.0

_Result = TypeVar("_Result")


class HubPublishError(RuntimeError):
    """Publishing failed; the message names the repo, the reason and what to do."""


def _resolve_token(hub_config: HubConfig) -> str:
    """HubConfig.token, else HF_TOKEN, else the `hf auth login` file; a HubPublishError if none."""
    if hub_config.token is not None:
        return hub_config.token.reveal()
    token = huggingface_hub.get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: set the HF_TOKEN environment variable or run `hf auth login` (a token with "
            "write access, https://huggingface.co/settings/tokens); HubConfig.token also works but keep it out "
            "of files"
        )
    return token


def _refuse_token_in_folder(folder: Path, token: str) -> None:
    """A HubPublishError if a text file of `folder` contains the token (it would be published)."""
    needle = token.encode()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _TEXT_SUFFIXES:
            continue
        if path.stat().st_size > _TEXT_SCAN_LIMIT_BYTES:
            continue
        if needle in path.read_bytes():
            raise HubPublishError(
                f"{path} contains the Hub token; it would be published with the folder. Remove it (pass the token "
                "through HF_TOKEN or `hf auth login`, never in a file) and re-run"
            )



def _status_code(error: BaseException) -> Optional[int]:
    return error.response.status_code if isinstance(error, HfHubHTTPError) else None


def _is_transient(error: BaseException) -> bool:
    status = _status_code(error)
    return status in TRANSIENT_STATUSES if status is not None else isinstance(error, TRANSIENT_EXCEPTIONS)


def _permanent_error_advice(status: Optional[int], repo_id: str, repo_type: str) -> Optional[str]:
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your user namespace"
    if status == 401:
        return (
            "the Hub rejected the token (HTTP 401): it is invalid or expired. Create a token with write access at "
            "https://huggingface.co/settings/tokens, then set HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return (
            f"the token may not write to {repo_type} repos of {namespace!r} (HTTP 403). Use a write token (a "
            f"fine-grained token needs write access to {namespace!r}), ask an admin of {namespace!r} for write "
            "access, or publish under your own namespace (HubConfig.namespace)"
        )
    if status == 404:
        return (
            f"the {repo_type} repo {repo_id!r} or its branch was not found (HTTP 404). Check the repo id and repo "
            "type; a private repo of another account also answers 404 to a token that cannot see it"
        )
    return None


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]



def _publish_error(
    error: Exception, action: str, repo_id: str, repo_type: str, attempts: int, rerun: str
) -> HubPublishError:
    """The HubPublishError for a failed Hub call: what failed, why, what to do, how to re-run."""
    where = f"{action} for {repo_type} repo {repo_id!r}"
    reason = _describe_error(error)
    advice = _permanent_error_advice(_status_code(error), repo_id, repo_type)
    if advice is not None:
        message = f"{where} failed: {advice}"
    elif _is_transient(error):
        message = f"{where} failed after {attempts} attempts ({reason}); the Hub or the network may be down"
    else:
        message = f"{where} failed ({reason})"
    return HubPublishError(f"{message}. Nothing local was changed; re-run: {rerun}")


def _call_with_retries(
    action: str, call: Callable[[], _Result], hub_config: HubConfig, repo_id: str, repo_type: str, rerun: str
) -> _Result:
    """`call()`, retried after transient errors with exponential backoff; any other error, or a
    transient one after `hub_config.max_retries` retries, becomes a HubPublishError."""
    attempts = hub_config.max_retries + 1
    wait = float(hub_config.retry_wait_seconds)
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            if not (_is_transient(error) and attempt < attempts):
                raise _publish_error(error, action, repo_id, repo_type, attempts, rerun) from error
            logger.warning(
                "%s for %s repo %r failed (attempt %d of %d: %s); retrying in %.1f s",
                action, repo_type, repo_id, attempt, attempts, _describe_error(error), wait,
            )
            time.sleep(wait)
            wait = min(2 * wait, _MAX_RETRY_WAIT_SECONDS)
            attempt += 1


def _rerun_command(folder: Path, repo_id: str, repo_type: str, hub_config: HubConfig) -> str:
    """The scripts/publish.py command line that repeats this upload (no token: it comes from the environment)."""
    arguments = ["python", "scripts/publish.py", "--folder", str(folder), "--kind", repo_type, "--repo-id", repo_id]
    if not hub_config.private:
        arguments.append("--public")
    for option, value in (("--revision", hub_config.revision), ("--endpoint", hub_config.endpoint)):
        if value:
            arguments += [option, value]
    return shlex.join(arguments)


def publish_folder(
    folder: Union[str, Path],
    repo_id: str,
    *,
    repo_type: RepoType = "model",
    hub_config: Optional[HubConfig] = None,
    commit_message: Optional[str] = None,
) -> str:
    """Upload `folder` to the Hub repo `repo_id` and return the commit URL.

    Checks the folder first (`hub_ready_folder_check`) and that no text file in it holds the token;
    creates the repo if needed (private per `hub_config.private`) and the branch
    `hub_config.revision`; uploads every file (`HfApi.upload_folder`; temporary `*.tmp` files are
    skipped). Transient errors are retried (`hub_config.max_retries`); a failure raises
    `HubPublishError` naming the repo and what to do, and leaves the folder as it was. Re-running is
    safe: unchanged files are not committed again.
    """
    hub_config = hub_config if hub_config is not None else HubConfig()
    folder = Path(folder)
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type={repo_type!r} must be 'model' or 'dataset'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repo id: {error}") from None
    if hub_constants.HF_HUB_OFFLINE:
        raise HubPublishError(
            f"HF_HUB_OFFLINE is set, so {folder} cannot be published to {repo_id!r}; unset it (and "
            "TRANSFORMERS_OFFLINE) and re-run"
        )
    hub_ready_folder_check(folder, repo_type)
    token = _resolve_token(hub_config)
    _refuse_token_in_folder(folder, token)

    rerun = _rerun_command(folder, repo_id, repo_type, hub_config)
    api = HfApi(endpoint=hub_config.endpoint, token=token, library_name="mlpl")
    files = [path for path in folder.rglob("*") if path.is_file()]
    logger.info(
        "publishing %s (%d files, %.1f MB) to %s repo %s%s",
        folder, len(files), sum(path.stat().st_size for path in files) / 1e6, repo_type, repo_id,
        f" (branch {hub_config.revision})" if hub_config.revision else "",
    )

    def retried(action: str, call: Callable[[], _Result]) -> _Result:
        return _call_with_retries(action, call, hub_config, repo_id, repo_type, rerun)

    retried(
        "creating the repo",
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=hub_config.private, exist_ok=True),
    )
    if hub_config.revision and hub_config.revision != "main":
        retried(
            f"creating branch {hub_config.revision!r}",
            lambda: api.create_branch(repo_id, branch=hub_config.revision, repo_type=repo_type, exist_ok=True),
        )
    commit = retried(
        "uploading the folder",
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=hub_config.revision,
            commit_message=commit_message or f"Upload {folder.name} with mlpl",
            ignore_patterns=["*.tmp"],
        ),
    )
    logger.info("published %s: %s", repo_id, commit.commit_url)
    return commit.commit_url


__all__ = ["HubPublishError", "TRANSIENT_EXCEPTIONS", "TRANSIENT_STATUSES", "publish_folder"]
