#!/usr/bin/env python
"""Publish a checkpoint or pseudo-label folder to the Hugging Face Hub (or re-run a failed upload).

    # a folder whose card is already written, to an explicit repo:
    python scripts/publish.py --folder outputs/stage1 --kind model --repo-id my-org/mlpl-stage1-supervised
    # the repo id from the recipe's naming scheme (HubConfig.repo_id_template):
    python scripts/publish.py --folder outputs/stage3/el --stage 3 --language el --namespace my-org
    python scripts/publish.py --folder outputs/pseudo_labels --stage pseudo-labels --namespace my-org
    # only check that the folder is complete and print the repo id:
    python scripts/publish.py --folder outputs/stage1 --stage 1 --namespace my-org --check-only

The token comes from the HF_TOKEN environment variable or `hf auth login`; there is deliberately no
--token option (command lines end up in shell history and process lists). Re-running after a failure
is safe: the local folder is never changed, and files already on the Hub are not committed again.
"""

import argparse
import sys

from training.cli import setup_logging
from training.hub import (
    DEFAULT_REPO_ID_TEMPLATE,
    HubConfig,
    HubFolderError,
    HubPublishError,
    hub_ready_folder_check,
    publish_folder,
    repo_id_for,
)
from training.stages import recipe_stage


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="the folder to upload (save_pretrained output or PL shards)")
    parser.add_argument(
        "--kind", choices=("model", "dataset"), help="repo type; default: from --stage, else model"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="the repo to publish to, e.g. my-org/mlpl-stage1-supervised")
    target.add_argument("--stage", help="recipe stage (1-6 or its name, e.g. slimipl): repo id from the naming scheme")
    parser.add_argument("--language", help="language of a per-language stage (2, 3) or set")
    parser.add_argument("--variant", help="optional run variant in the repo id, e.g. large")

    hub = parser.add_argument_group("hub options (HubConfig)")
    defaults = HubConfig()
    hub.add_argument("--namespace", help="user or organization owning the repo")
    hub.add_argument("--prefix", default=defaults.prefix, help="first part of repo names (default: %(default)s)")
    hub.add_argument("--repo-id-template", default=DEFAULT_REPO_ID_TEMPLATE, help="default: %(default)s")
    visibility = hub.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=defaults.private,
                            help="create the repo private (default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    hub.add_argument("--revision", help="branch to commit to (created from main if missing); default: main")
    hub.add_argument("--max-retries", type=int, default=defaults.max_retries, help="default: %(default)s")
    hub.add_argument("--retry-wait", type=float, default=defaults.retry_wait_seconds,
                     help="seconds before the first retry, doubled after each (default: %(default)s)")
    hub.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--commit-message", help="default: 'Upload <folder name> with mlpl'")
    parser.add_argument(
        "--check-only", action="store_true", help="check the folder and print the repo id; upload nothing"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    setup_logging()
    try:
        hub_config = HubConfig(
            push=True,
            namespace=arguments.namespace,
            prefix=arguments.prefix,
            private=arguments.private,
            revision=arguments.revision,
            max_retries=arguments.max_retries,
            retry_wait_seconds=arguments.retry_wait,
            repo_id_template=arguments.repo_id_template,
            endpoint=arguments.endpoint,
        )
        if arguments.stage is not None:
            stage = recipe_stage(arguments.stage)
            repo_id = repo_id_for(hub_config, stage, language=arguments.language, variant=arguments.variant)
            kind = arguments.kind or stage.repo_type
            if kind != stage.repo_type:
                raise ValueError(
                    f"--kind {kind} contradicts --stage {arguments.stage}, which produces a {stage.repo_type}"
                )
        else:
            repo_id, kind = arguments.repo_id, arguments.kind or "model"
        if arguments.check_only:
            hub_ready_folder_check(arguments.folder, kind)
            print(f"{arguments.folder} is ready to publish as {kind} repo {repo_id}")
            return 0
        commit_url = publish_folder(
            arguments.folder, repo_id, repo_type=kind, hub_config=hub_config, commit_message=arguments.commit_message
        )
    except (HubFolderError, HubPublishError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
