import pytest

from quanta.parity import ParityConfig


@pytest.fixture
def tiny_cfg() -> ParityConfig:
    """A run that trains in well under a second."""
    return ParityConfig(
        n_tasks=6,
        n_bits=10,
        k=3,
        widths=(4, 16),
        steps=40,
        batch_size=64,
        test_per_task=16,
        eval_points=6,
        threads=1,
    )


@pytest.fixture
def headless_chromium():
    """Run Debian's chromium headless on a page: ``run(page, *flags) -> CompletedProcess``.

    Calling it skips the test (from that point) when chromium is not installed; ``make test``
    installs Debian's package with apt-get when it can.
    Console messages go to stderr (``--enable-logging=stderr``) for the caller to check.
    """
    import shutil
    import subprocess

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ]

    def run(page, *extra):
        if binary is None:
            pytest.skip("chromium is not installed (make test installs it with apt-get)")
        return subprocess.run(
            [binary, *flags, *extra, page.as_uri()], capture_output=True, text=True, timeout=180
        )

    return run


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    """A mini-suite trained with the ``tiny`` preset (seconds): 4 GPT-NeoX sizes, each saved
    at step1, step6 and step40. Shared by every test module that asks for it; do not modify."""
    from quanta.lm.minisuite import build_suite_config, train_minisuite

    out = tmp_path_factory.mktemp("tiny_suite")
    train_minisuite(build_suite_config("tiny"), out)
    return out
