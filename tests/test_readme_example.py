"""The library example of docs/methods.md runs exactly as written (on the real SmolLM2-135M, small data)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "docs" / "methods.md"  # where the library example lives


def readme_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- example:library -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/methods.md lost its library example"
    return m.group(1)


def test_readme_library_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    result = namespace["result"]
    rows = result.plan
    assert [r["stage"] for r in rows] == [1, 2, 3]
    tokens = [r["mean_prompt_tokens"] for r in rows]
    assert tokens[0] > tokens[1] > tokens[2], tokens  # the prompt shrinks stage by stage
    assert rows[-1]["template_rate"] == 0 and rows[-1]["n_examples"] == 0  # query-only last stage
    assert Path(result.adapter_dir, "adapter_model.safetensors").is_file()
    assert len(result.stages) == 3 and all(s.losses for s in result.stages)
    out = capsys.readouterr().out
    assert out.count("mean_prompt_tokens") == 3 and out.strip().splitlines()[-1].startswith("[")
