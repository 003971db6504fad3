"""Write small offline intersphinx inventories for Python, torch and Pyro.

The documentation is built where the web is out of reach, so intersphinx cannot download the
projects' ``objects.inv``. These lists name the objects our docs refer to, with their pages
in the projects' online documentation. Run ``python docs/_ext/make_inventories.py`` after
adding a reference to another torch/Pyro object.
"""

from __future__ import annotations

import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "_inventories"

OBJECTS = {
    ("python", "Python", "3"): [
        ("RuntimeError", "py:exception", "library/exceptions.html#RuntimeError"),
        ("RuntimeWarning", "py:exception", "library/exceptions.html#RuntimeWarning"),
        ("ValueError", "py:exception", "library/exceptions.html#ValueError"),
        ("object", "py:class", "library/functions.html#object"),
        ("dict", "py:class", "library/stdtypes.html#dict"),
    ],
    ("torch", "PyTorch", "2"): [
        ("torch.Tensor", "py:class", "tensors.html#torch.Tensor"),
        ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
        (
            "torch.nn.modules.module.Module",
            "py:class",
            "generated/torch.nn.Module.html#torch.nn.Module",
        ),
        (
            "torch.nn.Sequential",
            "py:class",
            "generated/torch.nn.Sequential.html#torch.nn.Sequential",
        ),
        (
            "torch.nn.modules.container.Sequential",
            "py:class",
            "generated/torch.nn.Sequential.html#torch.nn.Sequential",
        ),
        (
            "torch.distributions.transforms.Transform",
            "py:class",
            "distributions.html#torch.distributions.transforms.Transform",
        ),
        (
            "torch.distributions.Transform",
            "py:class",
            "distributions.html#torch.distributions.transforms.Transform",
        ),
    ],
    ("pyro", "Pyro", "1.9"): [
        (
            "pyro.distributions.torch_transform.TransformModule",
            "py:class",
            "distributions.html#pyro.distributions.torch_transform.TransformModule",
        ),
        (
            "pyro.distributions.conditional.ConditionalTransformModule",
            "py:class",
            "distributions.html#pyro.distributions.conditional.ConditionalTransformModule",
        ),
        (
            "pyro.distributions.TransformedDistribution",
            "py:class",
            "distributions.html#pyro.distributions.TransformedDistribution",
        ),
        (
            "pyro.distributions.ConditionalTransformedDistribution",
            "py:class",
            "distributions.html#pyro.distributions.ConditionalTransformedDistribution",
        ),
    ],
}


def write_inventory(name: str, project: str, version: str, entries) -> None:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{obj} {role} 1 {uri} -\n" for obj, role, uri in entries)
    (OUT / f"{name}.inv").write_bytes(header.encode() + zlib.compress(body.encode()))


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for (name, project, version), entries in OBJECTS.items():
        write_inventory(name, project, version, entries)
