import pytest

from hpchub.core.units import Memory, Walltime


@pytest.mark.parametrize(
    "text, megabytes",
    [("4G", 4096), ("512M", 512), ("1T", 1024 * 1024), ("1.5G", 1536), ("4GB", 4096), ("4gib", 4096), ("100K", 1)],
)
def test_memory_parses_units(text, megabytes):
    assert Memory.parse(text).megabytes == megabytes


@pytest.mark.parametrize("bad", ["4", 4, "G", "-1G", "4 X", "4G; rm", "0G", True, None, "$(id)"])
def test_memory_refuses_what_is_not_a_size(bad):
    with pytest.raises(ValueError):
        Memory.parse(bad)


def test_memory_compares_by_value_not_text():
    assert Memory.parse("4096M") == Memory.parse("4G")
    assert Memory.parse("8G") > Memory.parse("4096M")
    assert str(Memory.parse("4096M")) == "4096M"


@pytest.mark.parametrize(
    "text, seconds, hms, dhms",
    [
        ("02:00:00", 7200, "02:00:00", "02:00:00"),
        ("48:00:00", 172800, "48:00:00", "2-00:00:00"),
        ("1-12:30:05", 131405, "36:30:05", "1-12:30:05"),
        ("00:00:30", 30, "00:00:30", "00:00:30"),
    ],
)
def test_walltime_forms(text, seconds, hms, dhms):
    walltime = Walltime.parse(text)
    assert (walltime.seconds, walltime.hms, walltime.dhms) == (seconds, hms, dhms)


@pytest.mark.parametrize("bad", ["2h", "02:00", "02:60:00", "00:00:00", 7200, "1-", "x-02:00:00", "02:00:00\n#SBATCH"])
def test_walltime_refuses_other_forms(bad):
    with pytest.raises(ValueError):
        Walltime.parse(bad)
