"""The architecture as the code states it: algorithms are named only where they live (their files and the
registry), and imports point one way through the layers (core < nets < algorithms < rl, supervised, outer <
run); envs never imports the learners or the run machinery."""
import ast
from pathlib import Path

from metarl.algorithms import ALGORITHMS

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ["metarl/run/trainer.py", "metarl/run/build.py", "metarl/run/evaluate.py", "metarl/run/config.py",
           "metarl/run/cli.py", "metarl/run/validate.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "metarl/outer").glob("*.py"))]
LAYERS = {"core": 0, "nets": 1, "algorithms": 2, "rl": 3, "supervised": 3, "outer": 3, "run": 4}


def string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_generic_code_names_no_algorithm():
    names = set(ALGORITHMS) | {"rl2", "darts", "reweight", "maml", "reptile", "lstm", "anil", "protonet"}
    for rel in GENERIC:
        found = names & string_constants(ROOT / rel)
        assert not found, f"{rel} names the algorithm(s) {sorted(found)}: ask the registry (metarl.algorithms)"


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_imports_point_one_way():
    for path in sorted((ROOT / "metarl").rglob("*.py")):
        layer = path.relative_to(ROOT / "metarl").parts[0]
        if layer not in LAYERS:
            continue
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "metarl" and len(parts) > 1 and parts[1] in LAYERS:
                assert LAYERS[parts[1]] < LAYERS[layer] or parts[1] == layer, \
                    f"{path.relative_to(ROOT)} imports {module}: a layer above or beside its own"
    for path in sorted((ROOT / "envs").rglob("*.py")):
        for module in imported_modules(path):
            assert not module.startswith(("metarl.algorithms", "metarl.run", "metarl.outer")), \
                f"{path.relative_to(ROOT)} imports {module}: envs never imports the learners or the run machinery"


def test_every_algorithm_file_states_its_loop_and_declares_its_spec():
    for spec in ALGORITHMS.values():
        module = __import__(spec.build.__module__, fromlist=["SPEC"])
        assert module.SPEC is spec and len(module.__doc__ or "") > 200, spec.name
