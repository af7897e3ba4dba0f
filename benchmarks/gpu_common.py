"""What the GPU benchmarks share: importing mambaseq from this source tree, and loading the mamba_ssm baseline.

The GPU machine may have this repository without an install: then `mambaseq` imports from the tree, and the
two folders that an install maps into the package (`kernels/` -> mambaseq.kernels, `pipelines/` ->
mambaseq.pipelines, see pyproject.toml) are registered by hand. The baseline is mamba_ssm 2.3.2.post1's CUDA
selective scan, built for sm_90 alone by the tool `mamba_ssm_baseline.py` (its docstring says how to get the
sdist); it is measured against, never imported by the library.
"""
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE_TOOL = next((p for p in (REPO / ".dev" / "tools" / "mamba_ssm_baseline.py",
                                          REPO.parent / "shared" / "tools" / "mamba_ssm_baseline.py")
                              if p.is_file()), REPO.parent / "shared" / "tools" / "mamba_ssm_baseline.py")


def use_source_tree() -> None:
    """Make `mambaseq`, `mambaseq.kernels` and `mambaseq.pipelines` importable from this checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for name, folder in (("mambaseq.kernels", "kernels"), ("mambaseq.pipelines", "pipelines")):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__path__ = [str(REPO / folder)]
            sys.modules[name] = mod


def load_mamba_ssm(sdist: str | Path, baseline_tool: str | Path = DEFAULT_BASELINE_TOOL):
    """(selective_scan_fn, selective_state_update) of mamba_ssm, built from the unpacked sdist (~140 s on an
    H200 the first time on a machine; torch caches the build)."""
    tool = Path(baseline_tool)
    if not tool.is_file():
        raise FileNotFoundError(f"baseline tool {tool} not found (--baseline-tool)")
    if not (Path(sdist) / "csrc" / "selective_scan").is_dir():
        raise FileNotFoundError(f"{sdist} is not an unpacked mamba_ssm sdist (no csrc/selective_scan)")
    sys.path.insert(0, str(tool.parent))
    from mamba_ssm_baseline import load
    return load(str(sdist))
