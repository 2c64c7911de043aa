"""The `pipeline` generator (bring your own diffusion model): tiny diffusers pipelines built and saved here, sampled
reproducibly from the harness's seed, hashed into the key, LoRA applied, bad folders refused before anything runs."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.core import registry
from benchmark.core.errors import UserError
from benchmark.generators import pipeline as P
from benchmark.generators.tiny_pipeline import write_text_pipeline
from benchmark.plan.grid import Grid, expand
from tests.registry_helpers import register_entry

ROOT = Path(__file__).resolve().parents[1]
REAL = np.zeros((4, 1, 28, 28), np.uint8), np.array([0, 1, 0, 1])  # fit() only checks shapes: it trains nothing


def _cli(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_lora(pipeline_dir: Path, folder: Path, seed=1) -> Path:
    """LoRA weights for the tiny UNet's attention projections, randomly initialised (so they change its output), saved
    as diffusers' LoRA training scripts save them (peft state dict → save_lora_weights)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(pipeline_dir), subfolder="unet", local_files_only=True)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(save_directory=str(folder), unet_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def torch_one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    """The tiny class-conditional pipeline written by launch/make_tiny_pipeline.py (2 classes + the null label 2)."""
    folder = tmp_path_factory.mktemp("class") / "pipe"
    assert _cli("make_tiny_pipeline").main(["--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    folder = write_text_pipeline(root / "pipe")
    return folder, write_tiny_lora(folder, root / "lora")


def test_class_conditional_bank_is_the_seeded_ddim_chain_of_the_folder(class_dir, torch_one_thread, tmp_path):
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    gen = P.DiffusersPipeline(2, (1, 28, 28), path=str(class_dir), sampling_steps=4, sample_batch_size=5)
    assert isinstance(gen, P.ClassConditionalPipeline)
    log = gen.fit(*REAL, seed=0)
    assert log["trained"] is False and log["pipeline_sha256"] == P.pipeline_sha256(class_dir)
    bank = gen.sample(7, 1, seed=11)
    assert bank.shape == (7, 1, 28, 28) and bank.dtype == np.uint8
    assert gen.sample(7, 1, seed=11).tobytes() == bank.tobytes()          # same seed: identical bytes
    assert gen.sample(7, 1, seed=12).tobytes() != bank.tobytes()          # another seed: another bank
    assert gen.sample(7, 0, seed=11).tobytes() != bank.tobytes()          # the class label reaches the UNet
    # independent: diffusers' DDIM step loop on the saved UNet and scheduler, noise from the same seed on the CPU
    unet = UNet2DModel.from_pretrained(str(class_dir), subfolder="unet", local_files_only=True).eval()
    scheduler = DDIMScheduler.from_pretrained(str(class_dir), subfolder="scheduler", local_files_only=True)
    scheduler.set_timesteps(4)
    x = torch.randn((7, 1, 28, 28), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, class_labels=torch.full((7,), 1)).sample, t, x).prev_sample
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)
    assert np.abs(expected.astype(int) - bank.astype(int)).max() <= 1
    gen.save(tmp_path / "model")  # the stage's artifact: a pointer to the folder and its hash, no weight copy
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["config.json"]
    again = P.DiffusersPipeline.from_folder(tmp_path / "model")
    assert again.sample(7, 1, seed=11).tobytes() == bank.tobytes()


def test_guidance_uses_the_null_label_and_conversion_is_noted(class_dir, torch_one_thread):
    plain = P.DiffusersPipeline(2, (3, 20, 20), path=str(class_dir), sampling_steps=3)
    guided = P.DiffusersPipeline(2, (3, 20, 20), path=str(class_dir), sampling_steps=3, null_class=2,
                                 guidance_scale=3.0)
    for gen in (plain, guided):
        gen.fit(np.zeros((2, 3, 20, 20), np.uint8), np.array([0, 1]), seed=0)
    a, b = plain.sample(3, 0, seed=1), guided.sample(3, 0, seed=1)
    assert a.shape == b.shape == (3, 3, 20, 20) and a.tobytes() != b.tobytes()
    assert (a[:, 0] == a[:, 1]).all() and (a[:, 1] == a[:, 2]).all()  # grey repeated into three channels
    note = plain.conversion_note()
    assert "1×28×28" in note and "grey repeated" in note and "28×28 to 20×20" in note


def test_text_to_image_prompts_lora_and_the_seed(text_dir, torch_one_thread):
    import torch
    from diffusers import StableDiffusionPipeline

    folder, lora = text_dir
    prompts = {"malignant": "a dark mass", "normal, benign": "clear tissue"}
    base = P.DiffusersPipeline(2, (1, 28, 28), path=str(folder), dataset="breastmnist", prompts=prompts,
                               sampling_steps=3, guidance_scale=2.0)
    assert isinstance(base, P.TextToImagePipeline) and base.prompts == {0: "a dark mass", 1: "clear tissue"}
    log = base.fit(*REAL, seed=0)
    assert "colour to grey" in log["conversion"] and "16×16 to 28×28" in log["conversion"]
    bank = base.sample(4, 0, seed=3)
    assert bank.shape == (4, 1, 28, 28) and bank.dtype == np.uint8
    assert base.sample(4, 0, seed=3).tobytes() == bank.tobytes()
    assert base.sample(4, 0, seed=4).tobytes() != bank.tobytes()
    assert base.sample(4, 1, seed=3).tobytes() != bank.tobytes()  # each class its own prompt
    # independent: the pipeline called directly with latents from the same seed, then PIL's grey and resize
    from benchmark.data.images import conform_array

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn((4, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    direct = pipe(["a dark mass"] * 4, latents=latents, num_inference_steps=3, guidance_scale=2.0,
                  output_type="np").images
    direct = np.clip(np.rint(direct * 255), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    assert np.abs(conform_array(direct, 28, 1).astype(int) - bank.astype(int)).max() <= 1
    with_lora = P.DiffusersPipeline(2, (1, 28, 28), path=str(folder), prompts=["a dark mass", "clear tissue"],
                                    sampling_steps=3, guidance_scale=2.0, lora=str(lora.parent))
    with_lora.fit(*REAL, seed=0)
    assert with_lora.sample(4, 0, seed=3).tobytes() != bank.tobytes()  # the LoRA weights change the output
    off = P.DiffusersPipeline(2, (1, 28, 28), path=str(folder), prompts=["a dark mass", "clear tissue"],
                              sampling_steps=3, guidance_scale=2.0, lora=str(lora), lora_scale=0.0)
    off.fit(*REAL, seed=0)
    assert np.abs(off.sample(4, 0, seed=3).astype(int) - bank.astype(int)).max() <= 1  # scale 0: the base model
    assert P.pipeline_sha256(folder, lora) != P.pipeline_sha256(folder)


def _grid(name="my_pipe"):
    return Grid("t", None, {"dataset": ["breastmnist"], "generator": ["none", name], "backbone": ["resnet18"],
                            "rare_count": [20], "synthetic_ratio": [1]}, [], [], {"epochs": 1}, "test")


def _register(tmp_path, monkeypatch, folder, extra="", name="my_pipe"):
    register_entry(tmp_path, monkeypatch, "generator", name,
                   f"include: {ROOT}/registry/generators/pipeline.yaml\nversion: 1\n"
                   f"config: {{path: '{folder}', sampling_steps: 2{extra}}}\n")


def test_the_folder_hash_enters_the_key_and_a_changed_folder_stops_the_job(class_dir, tmp_path, monkeypatch,
                                                                          data_env, torch_one_thread):
    from diffusers import UNet2DModel

    folder = tmp_path / "pipe"
    shutil.copytree(class_dir, folder)
    _register(tmp_path, monkeypatch, folder)
    entries = {"my_pipe": registry.get("generator", "my_pipe"), "none": registry.get("generator", "none")}
    first = P.pipeline_identities(entries, ["breastmnist"], [28])
    assert set(first) == {"my_pipe"} and first["my_pipe"]["config"]["pipeline_sha256"] == P.pipeline_sha256(folder)
    planned = registry.create("generator", "my_pipe", config=first["my_pipe"]["config"], num_classes=2,
                              image_shape=(1, 28, 28))
    (job,) = [j for j in expand(_grid()) if j.generator == "my_pipe"]
    unet = UNet2DModel.from_pretrained(str(folder), subfolder="unet", local_files_only=True)
    unet.conv_out.bias.data += 0.5  # one weight file changes
    unet.save_pretrained(str(folder / "unet"))
    second = P.pipeline_identities(entries, ["breastmnist"], [28])
    assert second["my_pipe"]["config"]["pipeline_sha256"] != first["my_pipe"]["config"]["pipeline_sha256"]
    with pytest.raises(UserError, match="changed after this job was planned"):
        planned.fit(*REAL, seed=0)
    (changed,) = [j for j in expand(_grid()) if j.generator == "my_pipe"]
    assert job.entries["generator"]["config"]["pipeline_sha256"] == first["my_pipe"]["config"]["pipeline_sha256"]
    assert changed.key != job.key and changed.generator_key != job.generator_key and changed.name == job.name


def _without_class_embedding(root: Path, class_dir: Path, text_dir=None) -> Path:
    folder = root / "no_embed"
    shutil.copytree(class_dir, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["num_class_embeds"] = None
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    return folder


def _model_only(root: Path, class_dir: Path, text_dir=None) -> Path:
    shutil.copytree(class_dir / "unet", root / "unet_only")
    return root / "unet_only"


@pytest.mark.parametrize("make,config,message", [
    (lambda root, c, t: root / "absent", {}, "does not exist"),
    (lambda root, c, t: "CompVis/stable-diffusion-v1-4", {}, "looks like a Hugging Face Hub id"),
    (lambda root, c, t: "${GENMED_NO_SUCH_VARIABLE}/pipe", {}, "GENMED_NO_SUCH_VARIABLE that are not set"),
    (_model_only, {}, "is not a diffusers pipeline: it has no model_index.json"),
    (_without_class_embedding, {}, "has no class embedding"),
    (lambda root, c, t: c, {"class_labels": {1: 7}}, "class label(s) [7] have no class embedding"),
    (lambda root, c, t: c, {"guidance_scale": 2.0}, "set config.null_class"),
    (lambda root, c, t: c, {"prompts": ["a", "b"]}, "config.prompts is for text-to-image"),
    (lambda root, c, t: c, {"sampler": "euler"}, "unknown sampler 'euler'"),
    (lambda root, c, t: t, {}, "needs config.prompts"),
    (lambda root, c, t: t, {"prompts": ["only one"]}, "no prompt for class(es) 1"),
    (lambda root, c, t: t, {"prompts": {"cancer": "x", 1: "y"}, "dataset": "breastmnist"},
     "names class 'cancer', not a class of dataset"),
    (lambda root, c, t: t, {"prompts": {"malignant": "x", 1: "y"}}, "set config.dataset"),
    (lambda root, c, t: t, {"prompts": ["a", "b"], "lora": "someone/lora"}, "looks like a Hugging Face Hub id"),
])
def test_bad_folders_and_configs_are_clear_user_errors(class_dir, text_dir, tmp_path, make, config, message):
    path = make(tmp_path, class_dir, text_dir[0])
    with pytest.raises(UserError, match=None) as info:
        P.DiffusersPipeline(2, (1, 28, 28), path=str(path), **config)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bad_pipeline_stops_the_grid_with_exit_2(class_dir, tmp_path, monkeypatch, data_env, capsys, dry_run):
    folder = _without_class_embedding(tmp_path, class_dir)
    _register(tmp_path, monkeypatch, folder)
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("name: g\naxes: {dataset: [breastmnist], generator: [none, my_pipe], backbone: [resnet18],"
                         " rare_count: [20], synthetic_ratio: [1]}\ntraining: {epochs: 1}\n")
    with pytest.raises(SystemExit) as exit_info:
        _cli("grid").main(["--grid", str(grid_file), "--results", str(tmp_path / "results"), "--executor", "debug"]
                          + ["--dry-run"] * dry_run)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "has no class embedding" in err and "my_pipe" in err and "othing was started" in err, err
    assert not (tmp_path / "results").exists()


def test_make_tiny_pipeline_refuses_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        _cli("make_tiny_pipeline").main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "is not a pipeline folder" in capsys.readouterr().err


@pytest.mark.slow
def test_generator_stage_samples_and_audits_the_bank(class_dir, tmp_path, monkeypatch, data_env, torch_one_thread):
    """Through the generator stage on real BreastMNIST: a bank of the rare class, the usual audit, the fit log."""
    from benchmark.generators import extractor as E
    from benchmark.plan.grid import generator_jobs
    from benchmark.run.job import execute

    _register(tmp_path, monkeypatch, class_dir, ", bank_multiple: 2, grid_columns: 2, "
                                                "audit_extractor: {max_steps: 3, width: 8}")
    monkeypatch.setenv(E.ROOT_ENV, str(tmp_path / "extractors"))
    (spec,) = generator_jobs(expand(_grid()))
    run_dir = tmp_path / "runs" / spec.key
    assert execute(spec, run_dir) == "done", (run_dir / "error.json").read_text()
    result = json.loads((run_dir / "result.json").read_text())
    with np.load(run_dir / "samples.npz") as bank:
        images, labels = bank["images"], bank["labels"]
    n_bank = result["resolved"]["bank_size"]
    assert images.shape == (n_bank, 1, 28, 28) and (labels == result["resolved"]["rare_class"]).all()
    assert n_bank >= 40  # 2 × 20 rare images, at least enough to balance
    log = result["fit_log"]
    assert log["trained"] is False and log["pipeline_sha256"] == P.pipeline_sha256(class_dir)
    assert log["training_data_verified"] is False and log["conversion"].startswith("none")
    audit = result["audit"]
    assert audit["n_synthetic"] == n_bank and audit["reference_n"] == 147 and np.isfinite(audit["domain_kid"])
    saved = json.loads((run_dir / "model" / "config.json").read_text())
    assert saved["class"] == "ClassConditionalPipeline" and saved["config"]["pipeline_sha256"] == log[
        "pipeline_sha256"]
