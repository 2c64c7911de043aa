"""Cluster profiles (slurm/*.yaml → submitit parameters) and slurm_available(); fast, no cluster needed."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.core.errors import UserError
from benchmark.execute.slurm import cluster
from benchmark.execute.slurm.cluster import ClusterProfile, list_profiles, load_profile
from benchmark.execute.slurm.reachable import slurm_available

SHIPPED = ["cpu-collector", "gpu-multi", "gpu-small", "local-cpu", "local-cpu-ddp"]


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def slurm_executor(tmp_path, monkeypatch):
    """A submitit AutoExecutor for SLURM. update_parameters only validates names and renders the sbatch script (no
    sbatch call); submitit refuses to build the executor without `srun` on PATH, so where SLURM is not installed its
    detection is told that it is."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    if SlurmExecutor.affinity() <= 0:
        monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))

    def make():
        return submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    return make


def sbatch_text(executor) -> str:
    return executor._executor._make_submission_file_text("python -c pass", "uid")


def test_shipped_profiles_are_listed():
    assert set(SHIPPED) <= set(list_profiles())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_submitit_accepts_it(name, slurm_executor):
    profile = load_profile(name)
    assert isinstance(profile, ClusterProfile) and profile.name == name
    assert profile.path == cluster.REPO_PROFILES / f"{name}.yaml"
    params = profile.submitit_parameters()
    assert params["timeout_min"] == profile.timeout_min
    executor = slurm_executor()
    executor.update_parameters(**params)  # raises on any unknown name or bad value
    text = sbatch_text(executor)
    assert f"#SBATCH --time={profile.timeout_min}\n" in text
    assert f"#SBATCH --cpus-per-task={profile.cpus_per_task}\n" in text
    assert f"#SBATCH --ntasks-per-node={profile.tasks_per_node}\n" in text
    assert f"#SBATCH --signal=USR2@{profile.signal_delay_s}\n" in text
    if profile.partition:
        assert f"#SBATCH --partition={profile.partition}\n" in text
    else:
        assert "--partition" not in text
    if profile.gpus_per_node:
        assert f"#SBATCH --gpus-per-node={profile.gpus_per_node}\n" in text
    else:
        assert "gpus" not in text  # no --gpus-per-node=0 on clusters without GRES
    for line in profile.setup:
        assert line in text
    hash(profile)  # usable as a key to group jobs


def test_local_cpu_profile_matches_the_local_test_cluster():
    p = load_profile("local-cpu")
    assert (p.partition, p.account, p.qos, p.gpus_per_node) == (None, None, None, 0)
    assert (p.cpus_per_task, p.timeout_min, p.array_parallelism, p.signal_delay_s) == (1, 30, 2, 30)
    assert p.mem_gb is not None and p.mem_gb <= 2
    assert p.submitit_parameters() == {
        "timeout_min": 30, "cpus_per_task": 1, "tasks_per_node": 1, "mem_gb": p.mem_gb,
        "slurm_array_parallelism": 2, "slurm_signal_delay_s": 30}


def test_include_inherits_and_overrides():
    small, multi = load_profile("gpu-small"), load_profile("gpu-multi")
    assert (multi.gpus_per_node, multi.tasks_per_node) == (4, 4)
    assert (multi.partition, multi.account, multi.setup) == (small.partition, small.account, small.setup)
    assert multi.description != small.description


def test_full_profile_maps_every_key(tmp_path, slurm_executor):
    path = write(tmp_path, "full.yaml", """\
        partition: gpu
        account: lab
        qos: high
        gpus_per_node: 2
        tasks_per_node: 2
        cpus_per_task: 4
        mem_gb: 7.5
        timeout_min: 90
        constraint: "a100|h100"
        array_parallelism: 16
        setup: [module load cuda/12.4, "echo hi"]
        signal_delay_s: 60
        additional: {reservation: resv1, mail-type: END, exclusive: true}
        """)
    profile = load_profile(path)
    assert profile.name == "full"
    assert profile.submitit_parameters() == {
        "slurm_partition": "gpu", "slurm_account": "lab", "slurm_qos": "high", "gpus_per_node": 2,
        "tasks_per_node": 2, "cpus_per_task": 4, "mem_gb": 7.5, "timeout_min": 90, "slurm_constraint": "a100|h100",
        "slurm_array_parallelism": 16, "slurm_setup": ["module load cuda/12.4", "echo hi"],
        "slurm_signal_delay_s": 60,
        "slurm_additional_parameters": {"exclusive": True, "mail_type": "END", "reservation": "resv1"}}
    executor = slurm_executor()
    executor.update_parameters(**profile.submitit_parameters())
    text = sbatch_text(executor)
    for flag in ("--partition=gpu", "--account=lab", "--qos=high", "--gpus-per-node=2", "--mem=7680MB",
                 "--constraint='a100|h100'", "--reservation=resv1", "--mail-type=END", "--exclusive\n"):
        assert f"#SBATCH {flag}" in text


def test_include_by_relative_path_merges_additional(tmp_path):
    write(tmp_path, "_site.yaml", "partition: big\naccount: lab\nadditional: {reservation: r1, comment: base}\n")
    child = write(tmp_path / "sub", "child.yaml",
                  "include: ../_site.yaml\ngpus_per_node: 1\nadditional: {comment: child}\n")
    p = load_profile(child)
    assert (p.partition, p.account, p.gpus_per_node) == ("big", "lab", 1)
    assert dict(p.additional) == {"reservation": "r1", "comment": "child"}


def test_env_folders_come_first_and_hide_underscore_bases(tmp_path, monkeypatch):
    write(tmp_path, "gpu-small.yaml", "include: _mine.yaml\ngpus_per_node: 2\n")
    write(tmp_path, "_mine.yaml", "partition: site-gpu\n")
    write(tmp_path, "extra.yml", "cpus_per_task: 3\n")
    monkeypatch.setenv("GENMED_SLURM_PROFILES", os.pathsep.join([str(tmp_path), str(tmp_path / "missing")]))
    assert load_profile("gpu-small").partition == "site-gpu"
    assert load_profile("gpu-small").path == tmp_path / "gpu-small.yaml"
    assert load_profile("extra").cpus_per_task == 3
    names = list_profiles()
    assert "extra" in names and "local-cpu" in names and "_mine" not in names
    assert cluster.profile_dirs()[0] == tmp_path and cluster.profile_dirs()[-1] == cluster.REPO_PROFILES


def test_unknown_profile_suggests_and_lists():
    with pytest.raises(UserError) as err:
        load_profile("gpu-smal")
    message = str(err.value)
    assert message.startswith("Unknown cluster profile 'gpu-smal'. Did you mean 'gpu-small'")
    assert "Available: cpu-collector, gpu-multi, gpu-small, local-cpu" in message
    assert "GENMED_SLURM_PROFILES" in message


def test_missing_profile_file(tmp_path):
    with pytest.raises(UserError, match=r"Cluster profile file '.*nope\.yaml' not found"):
        load_profile(str(tmp_path / "nope.yaml"))


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "bad.yaml", "partition: gpu\ngpu_per_node: 1\n")
    with pytest.raises(UserError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(f"{path}: unknown key 'gpu_per_node'. Did you mean 'gpus_per_node'?")
    assert "signal_delay_s" in message  # lists the valid keys


@pytest.mark.parametrize("line, wording", [
    ("gpus_per_node: two", "key 'gpus_per_node' must be an integer, got 'two' (str)"),
    ("gpus_per_node: true", "key 'gpus_per_node' must be an integer, got True (bool)"),
    ("timeout_min: 1.5", "key 'timeout_min' must be an integer (minutes), got 1.5 (float)"),
    ("mem_gb: 16G", "key 'mem_gb' must be a number of GB, got '16G' (str)"),
    ("partition: 3", "key 'partition' must be a string, got 3 (int)"),
    ("setup: module load cuda", "key 'setup' must be a list of shell lines, got 'module load cuda' (str)"),
    ("setup: [[a]]", "key 'setup' must be a list of shell lines (strings); item 0 is ['a']"),
    ("additional: [a]", "key 'additional' must be a mapping of sbatch options, got ['a'] (list)"),
    ("additional: {partition: x}", "'additional' may not set sbatch option 'partition': use the profile key "
                                   "'partition' instead"),
    ("additional: {dependency: 'afterok:1'}", "'additional' may not set sbatch option 'dependency': the harness"),
    ("additional: {C: a100}", "'additional' option 'C': use sbatch's long option name"),
    ("additional: {comment: {a: 1}}", "'additional.comment' must be a string, number or true"),
    ("cpus_per_task: 0", "key 'cpus_per_task' must be >= 1, got 0"),
    ("cpus_per_task: null", "key 'cpus_per_task' must be an integer, got null"),
    ("mem_gb: 0", "key 'mem_gb' must be > 0"),
    ("include: 5", "key 'include' must be a profile name or a path to a YAML file, got 5"),
])
def test_wrong_types_and_values_name_file_and_key(tmp_path, line, wording):
    path = write(tmp_path, "bad.yaml", line + "\n")
    with pytest.raises(UserError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ")
    assert wording in str(err.value)


def test_signal_delay_must_be_below_the_time_limit(tmp_path):
    path = write(tmp_path, "short.yaml", "timeout_min: 1\n")  # default signal_delay_s 90 >= 60 s
    with pytest.raises(UserError, match=r"signal_delay_s \(90\) must be well below the time limit \(timeout_min 1"):
        load_profile(path)
    assert load_profile(write(tmp_path, "ok.yaml", "timeout_min: 1\nsignal_delay_s: 15\n")).signal_delay_s == 15


def test_yaml_errors_and_non_mappings(tmp_path):
    with pytest.raises(UserError, match=r"Malformed YAML at .*broken\.yaml:2:"):
        load_profile(write(tmp_path, "broken.yaml", "partition: gpu\n  bad: [\n"))
    with pytest.raises(UserError, match=r"list\.yaml: a cluster profile must be a mapping"):
        load_profile(write(tmp_path, "list.yaml", "- a\n- b\n"))


def test_include_errors(tmp_path):
    with pytest.raises(UserError, match=r"a\.yaml: include: Unknown cluster profile 'nosuch'"):
        load_profile(write(tmp_path, "a.yaml", "include: nosuch\n"))
    with pytest.raises(UserError, match=r"include '\./gone\.yaml' not found"):
        load_profile(write(tmp_path, "b.yaml", "include: ./gone.yaml\n"))
    write(tmp_path, "c.yaml", "include: ./d.yaml\n")
    with pytest.raises(UserError, match="Circular include in cluster profiles"):
        load_profile(write(tmp_path, "d.yaml", "include: ./c.yaml\n"))


def test_empty_profile_uses_defaults_and_empty_strings_mean_unset(tmp_path):
    p = load_profile(write(tmp_path, "empty.yaml", "# nothing\n"))
    assert (p.partition, p.gpus_per_node, p.tasks_per_node, p.cpus_per_task, p.mem_gb) == (None, 0, 1, 1, None)
    assert load_profile(write(tmp_path, "blank.yaml", "partition: ''\naccount: ' '\n")).partition is None


def test_module_import_is_light():
    code = ("import sys, benchmark.execute.slurm.cluster as c; c.load_profile('gpu-small'); "
            "print(sorted(m for m in ('submitit', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    first = (Path(cluster.__file__).read_text().lstrip().splitlines() or [""])[0]
    assert first.startswith('"""')


def test_slurm_available_without_sbatch(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_available() == (False, "no SLURM here (sbatch not found on PATH)")


def test_slurm_available_with_client_tools_but_no_controller(monkeypatch, tmp_path):
    """Real SLURM client tools, a configuration naming a controller port nobody listens on."""
    if not all(map(shutil.which, ("sbatch", "sinfo", "srun"))):
        pytest.skip(reason="SLURM client tools not installed")
    conf = write(tmp_path, "slurm.conf", """\
        ClusterName=nowhere
        SlurmctldHost=localhost(127.0.0.1)
        SlurmctldPort=9
        NodeName=localhost CPUs=1 State=UNKNOWN
        PartitionName=p Nodes=ALL Default=YES State=UP
        """)
    monkeypatch.setenv("SLURM_CONF", str(conf))
    ok, reason = slurm_available(timeout_s=2)
    assert not ok
    assert reason.startswith("sbatch found but no controller answers (sinfo: ")
    assert "\n" not in reason


def test_checkpoint_every_s_is_a_profile_setting(tmp_path):
    from benchmark.execute.slurm.cluster import load_profile

    assert load_profile("gpu-small").checkpoint_every_s == 600  # the default
    path = tmp_path / "every-epoch.yaml"
    path.write_text("include: local-cpu\ncheckpoint_every_s: 0\n")
    profile = load_profile(str(path))
    assert profile.checkpoint_every_s == 0 and "checkpoint_every_s" not in str(profile.submitit_parameters())
    path.write_text("include: local-cpu\ncheckpoint_every_s: -1\n")
    with pytest.raises(UserError, match="'checkpoint_every_s' must be >= 0, got -1"):
        load_profile(str(path))
