"""Publishing the recipe's checkpoints and pseudo-label sets to the Hugging Face Hub, with their cards.

docs/design.md §6: "Every stage's checkpoint and every PL set is published to the Hub." It takes three
steps, each safe to re-run, one module each:

1. Name the repo (`naming`): `repo_id_for(hub_config, stage, language)` fills `HubConfig.repo_id_template`
   ("{namespace}/{prefix}-{stage}[-{variant}][-{language}]" -> "my-org/mlpl-stage3-slimipl-el"); the
   stages are `mlpl.stages`'. `HubConfig` holds the settings, `HubToken` the masked token.
2. Write the card (`cards`, reading pseudo-label folders through `shards`): `write_model_card(folder, ...)` /
   `write_dataset_card(folder, ...)` render the templates of `hub_cards/` into README.md atomically.
3. Check and upload (`checks`, `publish`): `hub_ready_folder_check(folder, kind)` lists what a folder lacks;
   `publish_folder(folder, repo_id, repo_type, hub_config)` checks it, creates the repo and uploads with
   `HfApi.upload_folder`, retrying transient failures the way huggingface_hub defines them; 401 / 403 / 404
   stop at once with what to do. Nothing on disk is changed, so a failed upload is re-run as is
   (`scripts/publish.py`).
"""

from .cards import (
    CARD_TAGS,
    PAPER_BIBTEX,
    PSEUDO_LABEL_COLUMN_DESCRIPTIONS,
    EvaluationSet,
    PseudoLabelLanguage,
    render_dataset_card,
    render_model_card,
    write_dataset_card,
    write_model_card,
)
from .checks import HubFolderError, hub_ready_folder_check, pseudo_label_shards
from .naming import DEFAULT_REPO_ID_TEMPLATE, HubConfig, HubReference, HubToken, repo_id_for
from .publish import HubPublishError, publish_folder
from .shards import REASON_NOT_PER_LANGUAGE, summarize_pseudo_label_shards

__all__ = [
    "CARD_TAGS",
    "DEFAULT_REPO_ID_TEMPLATE",
    "PAPER_BIBTEX",
    "PSEUDO_LABEL_COLUMN_DESCRIPTIONS",
    "REASON_NOT_PER_LANGUAGE",
    "EvaluationSet",
    "HubConfig",
    "HubFolderError",
    "HubPublishError",
    "HubReference",
    "HubToken",
    "PseudoLabelLanguage",
    "hub_ready_folder_check",
    "pseudo_label_shards",
    "publish_folder",
    "render_dataset_card",
    "render_model_card",
    "repo_id_for",
    "summarize_pseudo_label_shards",
    "write_dataset_card",
    "write_model_card",
]
