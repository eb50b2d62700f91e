"""Deletion receipts record the versions that wrote them, read without importing the package root."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import torch

import lightning_unlearn
from lightning_unlearn.receipts import make_receipt


def test_the_receipt_records_the_installed_version_of_the_package() -> None:
    receipt = make_receipt(torch.zeros(1, 2), torch.tensor([3]), "misclassify", "a", "b", {}, {})
    assert receipt.versions["lightning_unlearn"] == lightning_unlearn.__version__
    assert receipt.versions["lightning_unlearn"] == importlib.metadata.version("lightning-unlearn")  # pyproject's
    assert receipt.versions["torch"] == torch.__version__


def test_receipts_does_not_import_the_package_root() -> None:
    tree = ast.parse(Path(lightning_unlearn.__file__).with_name("receipts.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "lightning_unlearn" not in imported
    assert "lightning_unlearn._version" in imported
