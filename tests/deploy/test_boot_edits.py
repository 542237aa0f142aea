"""The pi_tuning modules' pure edit functions: config.txt [all] scope and cmdline.txt merging."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import ANSIBLE_DIR

LIBRARY = ANSIBLE_DIR / "roles" / "pi_tuning" / "library"
I2C = ["dtparam=i2c_arm=on", "dtparam=i2c_arm_baudrate=400000"]
ISOLATE = {"isolcpus": "3", "nohz_full": "3", "rcu_nocbs": "3"}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_txt = _load("rpi_config_txt")
cmdline = _load("kernel_cmdline")
running = _load("kernel_running")


def _in_all_scope(text: str) -> list[str]:
    """Active lines the firmware applies to every board."""
    scope_all, out = True, []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            scope_all = s.lower() == "[all]"
        elif scope_all and s and not s.startswith("#"):
            out.append(s)
    return out


def test_file_ending_in_a_pi4_filter_gets_a_fresh_all_section() -> None:
    text = "dtparam=audio=on\n\n[pi4]\narm_boost=1\n"
    out = config_txt.ensure_config_txt(text, I2C)
    assert out == (
        "dtparam=audio=on\n\n[pi4]\narm_boost=1\n\n[all]\n"
        "dtparam=i2c_arm=on\ndtparam=i2c_arm_baudrate=400000\n"
    )


def test_commented_default_is_uncommented_and_the_rest_follows_it() -> None:
    text = "#dtparam=i2c_arm=on\n#dtparam=spi=on\ndtparam=audio=on\n[pi4]\narm_boost=1\n[all]\n"
    out = config_txt.ensure_config_txt(text, I2C)
    assert out.splitlines()[:3] == [
        "dtparam=i2c_arm=on",
        "dtparam=i2c_arm_baudrate=400000",
        "#dtparam=spi=on",
    ]
    assert out.endswith("[pi4]\narm_boost=1\n[all]\n")


def test_a_different_value_is_replaced_in_place_also_inside_a_comma_list() -> None:
    text = "dtparam=audio=on,i2c_arm=off\ndtparam=i2c_arm_baudrate=100000\n"
    out = config_txt.ensure_config_txt(text, I2C)
    assert out == "dtparam=audio=on,i2c_arm=on\ndtparam=i2c_arm_baudrate=400000\n"


def test_a_setting_only_under_a_filter_does_not_count() -> None:
    text = "[pi3]\ndtparam=i2c_arm=on\n"
    out = config_txt.ensure_config_txt(text, I2C)
    assert "dtparam=i2c_arm=on" in _in_all_scope(out)
    assert out.startswith("[pi3]\ndtparam=i2c_arm=on\n\n[all]\n")


def test_an_already_tuned_file_is_returned_unchanged_byte_for_byte() -> None:
    text = "dtparam=i2c_arm=on\r\ndtparam=i2c_arm_baudrate=400000\r\n[pi4]\r\narm_boost=1"
    assert config_txt.ensure_config_txt(text, I2C) is text


def test_a_malformed_setting_is_refused_with_its_text() -> None:
    with pytest.raises(config_txt.SettingError, match="'dtparam=i2c_arm'"):
        config_txt.ensure_config_txt("", ["dtparam=i2c_arm"])


_lines = st.sampled_from(
    [
        "",
        "# comment",
        "#dtparam=i2c_arm=on",
        "dtparam=i2c_arm=off",
        "dtparam=i2c_arm_baudrate=100000",
        "dtparam=audio=on,i2c_arm=on",
        "dtparam=audio=on",
        "gpu_mem=16",
        "[pi4]",
        "[cm4]",
        "[all]",
        "[none]",
        "arm_boost=1",
    ]
)


@given(st.lists(_lines, max_size=14))
def test_config_txt_settings_hold_for_all_boards_and_a_second_pass_changes_nothing(
    lines: list[str],
) -> None:
    text = "\n".join(lines) + ("\n" if lines else "")
    once = config_txt.ensure_config_txt(text, I2C)
    assert config_txt.ensure_config_txt(once, I2C) == once
    active = _in_all_scope(once)
    # The last all-scope assignment of each parameter wins in the firmware.
    values: dict[str, str] = {}
    for line in active:
        key, _, value = line.partition("=")
        if key == "dtparam":
            for item in value.split(","):
                name, _, v = item.partition("=")
                values[name] = v
    assert values["i2c_arm"] == "on"
    assert values["i2c_arm_baudrate"] == "400000"
    # Every line that was not about I2C is still there, in order (plus at most a new [all]).
    untouched = [ln for ln in lines if ln and "i2c_arm" not in ln]
    kept = [ln for ln in once.splitlines() if ln and "i2c_arm" not in ln]
    assert kept in (untouched, [*untouched, "[all]"])


def test_cmdline_tokens_merged_other_tokens_kept_in_place() -> None:
    line = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootwait quiet\n"
    out = cmdline.merge_cmdline(line, ISOLATE)
    assert out == (
        "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootwait quiet "
        "isolcpus=3 nohz_full=3 rcu_nocbs=3\n"
    )


def test_cmdline_different_value_replaced_where_it_stands_duplicates_dropped() -> None:
    line = "root=/dev/mmcblk0p2 isolcpus=1,2 rootwait isolcpus=2 nohz_full=3\n"
    out = cmdline.merge_cmdline(line, ISOLATE)
    assert out == "root=/dev/mmcblk0p2 isolcpus=3 rootwait nohz_full=3 rcu_nocbs=3\n"


def test_cmdline_empty_value_removes_the_key_and_quotes_survive() -> None:
    line = 'root=/dev/sda2 dyndbg="file a.c +p" isolcpus=3 rcu_nocbs=3\n'
    out = cmdline.merge_cmdline(line, {"isolcpus": "", "rcu_nocbs": ""})
    assert out == 'root=/dev/sda2 dyndbg="file a.c +p"\n'


def test_cmdline_already_merged_is_returned_unchanged() -> None:
    line = "root=/dev/sda2 isolcpus=3 nohz_full=3 rcu_nocbs=3"
    assert cmdline.merge_cmdline(line, ISOLATE) is line


def test_cmdline_with_two_lines_is_refused() -> None:
    with pytest.raises(cmdline.CmdlineError, match="expected one line, found 2"):
        cmdline.merge_cmdline("root=/dev/sda2\nquiet\n", ISOLATE)


_tokens = st.lists(
    st.sampled_from(
        [
            "quiet",
            "rootwait",
            "root=/dev/sda2",
            "isolcpus=1",
            "isolcpus=3",
            "nohz_full=2",
            "rcu_nocbs=0-3",
            "console=tty1",
            "splash",
            "fsck.repair=yes",
        ]
    ),
    max_size=10,
)


@given(_tokens, st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True))
def test_cmdline_merge_is_idempotent_and_keeps_other_tokens(
    tokens: list[str], cpus: list[int]
) -> None:
    cores = ",".join(map(str, cpus))
    params = {"isolcpus": cores, "nohz_full": cores, "rcu_nocbs": cores}
    once = cmdline.merge_cmdline(" ".join(tokens) + "\n", params)
    assert cmdline.merge_cmdline(once, params) == once
    out = once.split()
    for key, value in params.items():
        assert [t for t in out if t.split("=")[0] == key] == [f"{key}={value}"]
    assert [t for t in out if t.split("=")[0] not in params] == [
        t for t in tokens if t.split("=")[0] not in params
    ]


def test_running_kernel_with_the_tuning_has_no_differences() -> None:
    line = "console=tty1 root=/dev/mmcblk0p2 isolcpus=3 nohz_full=3 rcu_nocbs=3 quiet"
    assert running.kernel_differences(line, "3\n", ISOLATE, [3]) == []


def test_running_kernel_without_the_tuning_names_each_difference() -> None:
    # the boot files may be right already: what counts is what the kernel booted with
    line = "console=tty1 isolcpus=2 nohz_full=3 quiet splash"
    assert running.kernel_differences(line, "2\n", {**ISOLATE, "splash": ""}, [3]) == [
        "isolcpus=3 not in /proc/cmdline",
        "rcu_nocbs=3 not in /proc/cmdline",
        "splash in /proc/cmdline but not wanted",
        "isolated CPUs are [2], not [3]",
    ]


def test_isolated_cpu_ranges_are_read_as_the_kernel_prints_them() -> None:
    assert running.parse_cpu_list("1-3,5\n") == {1, 2, 3, 5}
    assert running.parse_cpu_list("\n") == set()
    assert running.kernel_differences("isolcpus=2,3", "2-3", {"isolcpus": "2,3"}, [2, 3]) == []
