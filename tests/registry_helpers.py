"""Registering test-only registry entries (real classes defined in test modules) through GENMED_REGISTRY_PATH."""


def register_entry(tmp_path, monkeypatch, kind: str, name: str, yaml_text: str) -> None:
    folder = tmp_path / "reg" / f"{kind}s"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml_text)
    monkeypatch.setenv("GENMED_REGISTRY_PATH", str(tmp_path / "reg"))
