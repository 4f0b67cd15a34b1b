"""scripts/rehearse's command line: the CDK's -c stage=NAME / config=PATH, nothing else."""

from __future__ import annotations

import pytest

from rehearse.__main__ import main


def test_an_unknown_context_key_is_refused_with_what_is_understood(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-c", "stages=dev"])
    assert exit_info.value.code == 2
    assert "only stage=NAME and config=PATH are understood" in capsys.readouterr().err
