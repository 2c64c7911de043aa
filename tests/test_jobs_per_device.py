"""Several jobs per device (cluster profile ``jobs_per_device``): K worker processes share an array task's pack;
every job writes its own record, equal to the one a single process writes; bf16 requested on CPU trains in fp32."""

import json
import os

import pytest
import torch

from benchmark.core.errors import UserError
from benchmark.execute.slurm.cluster import load_profile
from benchmark.plan.grid import Grid, expand
from benchmark.run.batch import JobBatch
from benchmark.run.threads import threads_per_share
from benchmark.run.train import data_device, resolve_mixed_precision
from tests.registry_helpers import register_entry

TINY = {"epochs": 1, "batch_size": 64, "save_checkpoint": False, "track": False}
TIMING_FREE = ("spec", "resolved", "counts", "method_info", "metrics", "best_epoch")


def spec(generator="none", seed=0, **training):
    axes = {"dataset": ["breastmnist"], "generator": [generator], "backbone": ["resnet18"], "rare_count": [10],
            "seed": [seed]}
    return expand(Grid("t", None, axes, [], [], {**TINY, **training}, "test"))[0]


def comparable(record: dict) -> dict:
    """A record without what differs between two runs of one job: timings, host and pid, how it was run."""
    history = [{k: v for k, v in epoch.items() if k != "train_s"} for epoch in record["history"]]
    return {**{k: record[k] for k in TIMING_FREE}, "history": history}


def test_jobs_per_device_is_a_validated_profile_setting(tmp_path):
    assert load_profile("gpu-small").jobs_per_device == 1  # the default
    path = tmp_path / "p.yaml"
    path.write_text("include: local-cpu\njobs_per_device: 4\n")
    profile = load_profile(path)
    assert profile.jobs_per_device == 4 and "jobs_per_device" not in str(profile.submitit_parameters())
    for text, message in (("jobs_per_device: 0\n", "'jobs_per_device' must be >= 1, got 0"),
                          ("jobs_per_device: two\n", "'jobs_per_device' must be an integer"),
                          ("jobs_per_device: 2\ntasks_per_node: 2\n", "cannot be combined with tasks_per_node 2")):
        path.write_text("include: local-cpu\n" + text)
        with pytest.raises(UserError, match=message):
            load_profile(path)


def test_threads_are_shared_among_the_workers(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert [threads_per_share(k) for k in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]


def test_bf16_falls_back_to_fp32_off_cuda_and_data_stays_on_the_host():
    assert resolve_mixed_precision("bf16", "cpu") == ("no", "bf16 requested; trained in fp32 on CPU")
    assert resolve_mixed_precision("no", "cpu") == ("no", None)
    assert resolve_mixed_precision("fp16", "cpu") == ("fp16", None)  # passed on as before
    assert data_device("cpu") is None and data_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


@pytest.mark.slow
def test_two_workers_write_every_record_equal_to_one_process(data_env, tmp_path, monkeypatch):
    """A pack of four: fp32, one that fails, the fp32 job asking for bf16, another seed. K=2 workers
    (round-robin: worker 0 gets the 1st and 3rd, worker 1 the failing one, then the 4th) against K=1 in this
    process, both with the same torch threads per job, so the records are bit-identical on CPU."""
    register_entry(tmp_path, monkeypatch, "generator", "exploding",
                   "target: tests.test_job:ExplodingMethod\nversion: 1\n")
    pack = [spec(), spec("exploding"), spec(mixed_precision="bf16"), spec(seed=1)]
    payloads = [s.to_dict() for s in pack]
    keys = [s.key for s in pack]
    assert len(set(keys)) == 4
    expected = dict(zip(keys, ["done", "failed", "done", "done"]))

    threads = threads_per_share(2)
    monkeypatch.setenv("GENMED_TORCH_THREADS", str(threads))
    before = torch.get_num_threads()
    try:
        assert JobBatch(payloads, str(tmp_path / "one"))() == expected
    finally:
        torch.set_num_threads(before)
    assert JobBatch(payloads, str(tmp_path / "two"), jobs_per_device=2)() == expected

    def records(folder):
        return {k: json.loads((tmp_path / folder / k / "result.json").read_text()) for k in keys if k != keys[1]}

    one, two = records("one"), records("two")
    for key in one:
        assert comparable(two[key]) == comparable(one[key])
        assert one[key]["environment"]["pid"] == os.getpid()
        assert one[key]["compute"]["jobs_per_device"] == 1 and two[key]["compute"]["jobs_per_device"] == 2
    pids = {key: record["environment"]["pid"] for key, record in two.items()}
    assert pids[keys[0]] == pids[keys[2]] != pids[keys[3]] and os.getpid() not in pids.values()
    for key in keys[1:2]:  # the failing job: its error recorded by its worker, which went on to keys[3]
        assert "planted failure" in json.loads((tmp_path / "two" / key / "error.json").read_text())["error"]
    # bf16 requested on CPU: trained in fp32, noted, the same numbers as the fp32 job
    bf16 = two[keys[2]]
    assert bf16["compute"]["mixed_precision"] == "no"
    assert bf16["compute"]["mixed_precision_note"] == "bf16 requested; trained in fp32 on CPU"
    assert "mixed_precision_note" not in two[keys[0]]["compute"]
    assert bf16["metrics"] == two[keys[0]]["metrics"]
    # a second run of the pack skips every finished job, in the workers too
    assert JobBatch(payloads, str(tmp_path / "two"), jobs_per_device=2)() == {
        **{k: "skipped" for k in keys}, keys[1]: "failed"}


@pytest.mark.slow
def test_preemption_signal_lets_every_worker_save_then_the_batch_requeues_and_resumes(data_env, tmp_path):
    """Resumable (SLURM) batch with 2 workers: the pre-timeout / preemption signal to the task's process is passed
    to the workers, each saves its state at the end of its epoch and stops; only then does submitit's handler
    (here a stand-in that records the locks) run, once. The batch run again (what checkpoint() resubmits)
    resumes both jobs to their records."""
    import signal
    import threading
    import time

    from benchmark.run import run_dir as rd

    EPOCHS = 3
    pack = [spec(seed=0, epochs=EPOCHS, track=True), spec(seed=1, epochs=EPOCHS, track=True)]
    keys, payloads = [s.key for s in pack], [s.to_dict() for s in pack]
    calls, headers = [], {}

    def submitit_handler(signum, frame):  # stands for submitit's checkpoint_and_try_requeue
        calls.append({key: rd.lock_holder(tmp_path / key) for key in keys})

    def logged_epoch(key) -> bool:  # the tracker writes (and flushes) its events file after each epoch
        events = sorted((tmp_path / key / "tensorboard").rglob("events.out.tfevents.*"))
        return bool(events) and events[0].stat().st_size > headers.setdefault(events[0], events[0].stat().st_size)

    def signal_once_training():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not all(logged_epoch(k) for k in keys):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGUSR2)  # both workers are in their second epoch

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        batch = JobBatch(payloads, str(tmp_path), resumable=True, checkpoint_every_s=3600, jobs_per_device=2)
        threading.Thread(target=signal_once_training, daemon=True).start()
        statuses = batch()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [{key: None for key in keys}]  # once, after both workers had let go of their folders
    assert statuses == {}
    for key in keys:
        folder = tmp_path / key
        assert not (folder / "result.json").exists() and not (folder / "error.json").exists()
        assert json.loads((folder / "state" / "progress.json").read_text())["epoch"] in (2, 3)
    assert batch() == {key: "done" for key in keys}
    for key in keys:
        record = json.loads((tmp_path / key / "result.json").read_text())
        assert [h["epoch"] for h in record["history"]] == list(range(1, EPOCHS + 1))
        assert not (tmp_path / key / "state").exists()


def test_channels_last_weights_save_and_load_through_accelerate(tmp_path):
    """The CUDA path's channels_last model: safetensors refuses its NHWC-strided weights, the save_state hook packs
    them (checked here on CPU, where Accelerate saves the same way), and loading restores the same values."""
    from accelerate import Accelerator

    from benchmark.run.train import _contiguous_weights

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
                                .to(memory_format=torch.channels_last))
    assert not model[0].weight.is_contiguous()
    accelerator.register_save_state_pre_hook(_contiguous_weights)
    accelerator.save_state(str(tmp_path / "state"))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.zero_()
    accelerator.load_state(str(tmp_path / "state"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
