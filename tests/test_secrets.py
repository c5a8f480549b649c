"""A token never lands in a file the project writes, whatever way it was given (issue 13.7)."""

import yaml

from mlpl.config import MASKED, save_config
from mlpl.hub import HubConfig
from mlpl.recipe import RecipeConfig, load_recipe_config
from mlpl.run_folder import claim_run_folder

TOKEN = "hf_NeverWriteMe0123456789abcdef"


def files_holding(folder, needle):
    return [path for path in folder.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]


def test_a_token_in_a_recipe_config_or_an_override_is_written_masked(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "hub": {"push": False, "token": TOKEN}}))
    for overrides in ([], [f"hub.token={TOKEN}"]):
        config = load_recipe_config(path, overrides)
        output = tmp_path / "out"
        save_config(config, output / "recipe_config.yaml")  # what Recipe.run writes
        with claim_run_folder(output, {"hub": dict(config.hub), "output_dir": config.output_dir}):
            pass
        assert not files_holding(tmp_path / "out", TOKEN), files_holding(tmp_path / "out", TOKEN)
        assert yaml.safe_load((output / "recipe_config.yaml").read_text())["hub"]["token"] == MASKED
    # Read back, a masked token means "not given here": HF_TOKEN / hf auth login then apply.
    saved = load_recipe_config(tmp_path / "out" / "recipe_config.yaml")
    assert HubConfig(**saved.hub).token is None
    assert RecipeConfig().hub == {} and HubConfig(token=TOKEN).token.reveal() == TOKEN
