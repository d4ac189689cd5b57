using System.Globalization;
using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;

namespace Airlock.Boundaries.Tests;

[Trait("Category", "Integration")]
[Trait("Category", "Slow")]
public sealed class MicroVmTests(MicroVmHarness harness) : IClassFixture<MicroVmHarness>
{
    private static readonly CgroupManager Cgroups = new();

    [Fact(Timeout = 900_000)]
    public async Task A_microvm_paused_without_memory_boots_from_its_disk_with_its_files_and_none_of_its_processes()
    {
        var driver = (IPausableDriver)harness.Driver;
        var sandbox = await harness.StartAsync();
        var (started, stderr, _) = await sandbox.RunAsync(
            "echo kept > ~/note && sync && echo unsynced > ~/late && (sleep 900 > /dev/null 2>&1 &) ; for i in $(seq 500); do pgrep -x sleep >/dev/null && break; done; pgrep -c -x sleep", timeoutSeconds: 120);
        Assert.True(started == "1\n", started + stderr);

        // The host sees QEMU's CPU time only; memory and disk are the guest's to report.
        var sample = await sandbox.Instance.SampleAsync(CancellationToken.None);
        Assert.NotNull(sample);
        Assert.True(sample.CpuUsed > TimeSpan.Zero, $"{sample.CpuUsed}");
        Assert.Equal((1, 0L, 0L), (sample.CpuCount, sample.MemoryTotalBytes, sample.DiskTotalBytes));

        await driver.PauseAsync(sandbox.Instance, keepMemory: false, CancellationToken.None);
        var stateDir = sandbox.Launch.StateDir;
        Assert.Empty(Cgroups.Pids(sandbox.Id));
        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.True(driver.HasPausedState(stateDir));
        Assert.False(driver.PausedWithMemory(stateDir));
        Assert.False(File.Exists(Path.Combine(stateDir, "memory.bin")));
        Assert.True(File.Exists(Path.Combine(stateDir, "root.qcow2")));
        Assert.InRange(driver.PausedBytes(stateDir), 1, 512L * 1024 * 1024); // the overlay only: no memory image

        var resumed = await sandbox.ResumeAsync(driver);
        await using (resumed)
        {
            Assert.Equal("booted from its paused disk (memory not kept)", resumed.Instance.Report.StartedFrom);
            Assert.NotNull(resumed.Instance.BootToken); // the guest booted with a boot token airlockd replaced
            Assert.False(driver.HasPausedState(stateDir)); // discarded once running
            var (stdout, errors, _) = await resumed.RunAsync("cat ~/note ~/late; pgrep -c sleep || true; cut -d. -f1 /proc/uptime", timeoutSeconds: 120);
            var lines = stdout.Split('\n');
            Assert.True(lines.Length >= 4, stdout + errors);
            Assert.Equal("kept", lines[0]);
            Assert.Equal("unsynced", lines[1]); // the pause asked the guest to sync first
            Assert.Equal("0", lines[2]); // processes from before the pause are gone
            Assert.InRange(int.Parse(lines[3], CultureInfo.InvariantCulture), 0, 180); // a fresh boot
        }

        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.False(Directory.Exists(stateDir));
        Assert.DoesNotContain(sandbox.Id, await harness.Driver.FindLeftoversAsync(CancellationToken.None));
        Assert.False(File.Exists($"/run/netns/{resumed.Launch.Network.Namespace}"));
    }
}
