"""The release transfer (wilo_backend's tasks/release.yml), run for real with a local connection.

The wheelhouse and build records go to the Pi as one tar made in a scratch directory of the
controller's. A transfer that fails (a dropped link, a full disk on the Pi) must not leave that
release-sized tar behind on the controller, once per host and run.
"""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_playbook

PLAY = """\
- name: Only the release transfer of wilo_backend
  hosts: all
  gather_facts: false
  tasks:
    - name: The role's release tasks
      ansible.builtin.include_role:
        name: wilo_backend
        tasks_from: release
"""


def test_a_failed_transfer_leaves_no_scratch_directory_on_the_controller(
    tmp_path: Path, ansible_env: dict[str, str]
) -> None:
    dist = tmp_path / "dist"
    (dist / "wheelhouse").mkdir(parents=True)
    (dist / "wheelhouse/wilo_backend-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    (dist / "build-info.json").write_text(json.dumps({"version": "1.0"}))
    (dist / "SHA256SUMS").write_text("")
    release = tmp_path / "release"
    # the archive's destination is taken by a directory holding a directory of the same name:
    # the copy fails, as a full disk or a dropped link would make it fail
    (release / "dist.tar/dist.tar").mkdir(parents=True)
    scratch_parent = tmp_path / "controller-tmp"
    scratch_parent.mkdir()
    env = {**ansible_env, "TMPDIR": str(scratch_parent)}
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    pi:\n      ansible_connection: local\n"
    )
    (tmp_path / "play.yml").write_text(PLAY)
    extra = {
        "wilo_backend_dist_dir": str(dist),
        "wilo_backend_release_dir": str(release),
        "wilo_backend_installed_before": {"stat": {"exists": False}},
    }
    run = run_playbook(env, tmp_path / "hosts.yml", tmp_path / "play.yml", "-e", json.dumps(extra))
    assert run.recap["pi"]["failed"] == 1, run.output
    assert "Send the archive to the release directory" in run.output, run.output
    assert "Remove the controller's scratch directory" in run.output, run.output
    assert list(scratch_parent.iterdir()) == [], run.output
