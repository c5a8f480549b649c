"""Publish a checkpoint or pseudo-label folder to the Hugging Face Hub (or re-run a failed upload).

    # a folder whose card is already written, to an explicit repo:
    python scripts/publish.py --folder outputs/stage1 --kind model --repo-id my-org/mlpl-stage1-supervised
    # the repo id from the recipe's naming scheme (HubConfig.repo_id_template):
    python scripts/publish.py --folder outputs/stage3/el --stage 3 --language el --namespace my-org
    python scripts/publish.py --folder outputs/pseudo_labels --stage pseudo-labels --namespace my-org
    # only check that the folder is complete and print the repo id:
    python scripts/publish.py --folder outputs/stage1 --stage 1 --namespace my-org --check-only

(`mlpl-publish` is the same command.) The hub options are the fields of `HubConfig`. The token comes
from the HF_TOKEN environment variable or `hf auth login`; there is deliberately no --token option
(command lines end up in shell history and process lists). Re-running after a failure is safe: the local
folder is never changed, and files already on the Hub are not committed again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from . import setup_logging
from .arguments import CommandLine, Flags, option


@dataclass(kw_only=True)
class PublishOptions:
    folder: str = option(help="the folder to upload (save_pretrained output or PL shards)")
    kind: str | None = option(None, choices=("model", "dataset"), help="repo type; default: from --stage, else model")
    repo_id: str | None = option(None, help="the repo to publish to, e.g. my-org/mlpl-stage1-supervised (or --stage)")
    stage: str | None = option(None, help="recipe stage (1-6 or its name, e.g. slimipl): repo id from the naming scheme (or --repo-id)")
    language: str | None = option(None, help="language of a per-language stage (2, 3) or set")
    variant: str | None = option(None, help="optional run variant in the repo id, e.g. large")
    commit_message: str | None = option(None, help="default: 'Upload <folder name> with mlpl'")
    check_only: bool = option(False, help="check the folder and print the repo id; upload nothing")


HUB_FLAGS = {
    "namespace": {"help": "user or organization owning the repo"},
    "prefix": {"help": "first part of repo names"},
    "private": {"flag": ("--private", "--public"), "help": "create the repo private", "off_help": "create the repo public"},
    "revision": {"help": "branch to commit to (created from main if missing); default: main"},
    "retry_wait_seconds": {"flag": "--retry-wait", "help": "seconds before the first retry, doubled after each"},
    "endpoint": {"help": "Hub URL (default: HF_ENDPOINT or https://huggingface.co)"},
}


def main(argv=None) -> int:
    from ..hub import HubConfig, HubFolderError, HubPublishError, hub_ready_folder_check, publish_folder, repo_id_for
    from ..stages import recipe_stage

    command = CommandLine(__doc__, PublishOptions, Flags(HubConfig, "hub options (HubConfig)", HUB_FLAGS, skip=("push", "token")))
    options, hub_config = command.parse(argv).sections
    if (options.repo_id is None) == (options.stage is None):
        command.error("give one of --repo-id and --stage")
    setup_logging()
    try:
        hub_config = replace(hub_config, push=True)
        if options.stage is not None:
            stage = recipe_stage(options.stage)
            repo_id = repo_id_for(hub_config, stage, language=options.language, variant=options.variant)
            kind = options.kind or stage.repo_type
            if kind != stage.repo_type:
                raise ValueError(f"--kind {kind} contradicts --stage {options.stage}, which produces a {stage.repo_type}")
        else:
            repo_id, kind = options.repo_id, options.kind or "model"
        if options.check_only:
            hub_ready_folder_check(options.folder, kind)
            print(f"{options.folder} is ready to publish as {kind} repo {repo_id}")
            return 0
        commit_url = publish_folder(options.folder, repo_id, repo_type=kind, hub_config=hub_config, commit_message=options.commit_message)
    except (HubFolderError, HubPublishError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(commit_url)
    return 0


__all__ = ["PublishOptions", "main"]
