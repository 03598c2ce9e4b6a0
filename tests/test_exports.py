"""The subpackages export their public names: `from opflowtalker.models import Wav2Lip` works, and
importing one metric does not import the others."""
import subprocess
import sys

import pytest

from opflowtalker.exports import lazy_exports


@pytest.mark.parametrize("package", ["opflowtalker.models", "opflowtalker.flow", "opflowtalker.metrics"])
def test_every_public_name_of_a_subpackage_is_the_object_its_module_defines(package):
    import importlib

    pkg = importlib.import_module(package)
    assert len(pkg.__all__) > 30 and dir(pkg) == sorted(pkg.__all__)
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        pkg.nothing_here


def test_the_names_readers_look_for_are_there():
    from opflowtalker.flow import GMA, RAFT, dis_flow
    from opflowtalker.metrics import lmd, psnr, ssim
    from opflowtalker.models import OpFlowTalker, SyncNet, Wav2Lip
    from opflowtalker.models.wav2lip import Wav2Lip as defined

    assert Wav2Lip is defined and all(callable(x) for x in (GMA, RAFT, dis_flow, lmd, psnr, ssim, OpFlowTalker, SyncNet))


def test_a_subpackage_imports_its_modules_only_when_asked():
    code = ("import sys, opflowtalker.metrics, opflowtalker.metrics.text; "
            "print(sorted(m for m in sys.modules if m.startswith('opflowtalker.metrics.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "opflowtalker.metrics.speech" not in out and "opflowtalker.metrics.text" in out


def test_a_name_two_modules_export_is_refused(tmp_path):
    (tmp_path / "a.py").write_text('__all__ = ["shared"]\nshared = 1\n')
    (tmp_path / "b.py").write_text('__all__ = ["shared", "other"]\n')
    with pytest.raises(ImportError, match="shared is exported by both a and b"):
        lazy_exports("pkg", str(tmp_path / "__init__.py"))
