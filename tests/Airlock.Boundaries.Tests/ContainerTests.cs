using System.Globalization;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Container;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Tests;

[Trait("Category", "Integration")]
public sealed class ContainerTests(ContainerHarness harness) : IClassFixture<ContainerHarness>
{
    private static readonly CgroupManager Cgroups = new();

    [Fact]
    public Task A_fork_bomb_leaves_the_agent_answering() => SharedChecks.A_fork_bomb_leaves_the_agent_answering(harness);

    [Fact]
    public async Task The_host_offers_the_container_boundary_and_says_why_not_crun()
    {
        var availability = await harness.Driver.ProbeAsync(CancellationToken.None);
        Assert.True(availability.Available, availability.Detail);
        Assert.Contains("airlock-container-v1 sha256:", availability.Detail, StringComparison.Ordinal);
        if (File.Exists("/usr/bin/crun") && !Cgroups.IsV2)
        {
            // crun refuses hybrid cgroup hosts; the driver must have tried it and said so, and fallen back to runc.
            Assert.Equal("runc", harness.Driver.Name);
            Assert.Contains("crun refused here", availability.Detail, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task The_report_names_runtime_seccomp_userns_and_cgroup_and_a_probe_inside_agrees()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { MemoryMiB = 200, Pids = 77, CpuMillis = 500 });
        var report = sandbox.Instance.Report;
        Assert.True(report.StartedFrom == "template (idmapped: root inside owns its files)", report.StartedFrom);
        Assert.Equal(("container", true), (report.Boundary, report.UserNamespace));
        Assert.Matches(@"^(runc|crun) \d", report.Runtime);
        Assert.StartsWith("airlock-container-v1 sha256:", report.Seccomp, StringComparison.Ordinal);
        Assert.Equal(Cgroups.IsV2 ? "v2" : "v1", report.Cgroup);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), report.Kernel);

        var (stdout, _, exit) = await sandbox.RunAsync("""
            uname -r; id -u; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; sudo -n true 2>/dev/null; cat /proc/self/uid_map
            if [ -f /sys/fs/cgroup/memory.max ]; then cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; cut -d' ' -f1 /sys/fs/cgroup/cpu.max
            else cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us; fi
            """);
        Assert.Equal(0, exit);
        var lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.Equal(report.Kernel, lines[0]);
        Assert.Equal("1000", lines[1]); // commands run as the sandbox user by default
        Assert.Contains("Seccomp:\t2", stdout, StringComparison.Ordinal);
        Assert.Contains("NoNewPrivs:\t1", stdout, StringComparison.Ordinal);
        Assert.Contains("CapEff:\t0000000000000000", stdout, StringComparison.Ordinal);
        Assert.Matches(@"\s+0\s+1\d{9}\s+65536", stdout); // root inside is an unprivileged host id range
        Assert.Contains((200L * 1024 * 1024).ToString(CultureInfo.InvariantCulture), stdout, StringComparison.Ordinal);
        Assert.Contains("\n77\n", stdout, StringComparison.Ordinal);
        Assert.Contains("\n50000", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Root_in_the_container_has_only_the_documented_capabilities_and_owns_the_template_files()
    {
        await using var sandbox = await harness.StartAsync();
        var (stdout, stderr, _) = await sandbox.RunAsRootAsync("""
            grep -E '^(CapEff|CapBnd):' /proc/self/status
            echo airlock > /usr/local/airlock-test && cat /usr/local/airlock-test
            stat -c '%U' /etc/passwd
            """);
        var expected = RuncDriver.Capabilities.Aggregate(0UL, (mask, cap) => mask | (1UL << CapabilityNumber(cap)));
        Assert.Contains($"CapEff:\t{expected:x16}", stdout, StringComparison.Ordinal);
        Assert.Contains($"CapBnd:\t{expected:x16}", stdout, StringComparison.Ordinal);
        Assert.Contains("airlock\nroot\n", stdout, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stderr);
        Assert.False(File.Exists(Path.Combine(harness.RootFs, "usr/local/airlock-test")), "a write inside reached the template");
    }

    [Fact]
    public async Task Kernel_interfaces_are_masked_or_read_only()
    {
        await using var sandbox = await harness.StartAsync();
        var corePattern = File.ReadAllText("/proc/sys/kernel/core_pattern");
        var (stdout, _, _) = await sandbox.RunAsRootAsync("""
            for f in /proc/kcore /proc/keys /proc/timer_list /proc/sysrq-trigger; do printf '%s %s\n' "$f" "$(head -c 64 $f 2>/dev/null | wc -c)"; done
            ls -A /sys/firmware 2>&1 | wc -l
            echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>&1 || echo refused-core-pattern
            echo b > /proc/sysrq-trigger 2>&1 || echo refused-sysrq
            touch /sys/x 2>&1 || echo refused-sys
            mount -t tmpfs none /mnt 2>&1 || echo refused-mount
            echo x > /tmp/x.sh && chmod +x /tmp/x.sh && /tmp/x.sh 2>&1 || echo refused-exec-tmp
            """);
        Assert.Contains("/proc/kcore 0\n", stdout, StringComparison.Ordinal);
        Assert.Contains("/proc/keys 0\n", stdout, StringComparison.Ordinal);
        foreach (var refusal in new[] { "refused-core-pattern", "refused-sysrq", "refused-sys", "refused-mount", "refused-exec-tmp" })
        {
            Assert.Contains(refusal, stdout, StringComparison.Ordinal);
        }

        Assert.Equal(corePattern, File.ReadAllText("/proc/sys/kernel/core_pattern"));
    }

    [Fact]
    public async Task The_disk_quota_stops_writes_at_the_limit_and_the_host_disk_is_untouched()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { DiskMiB = 96 });
        var (stdout, _, _) = await sandbox.RunAsync("dd if=/dev/zero of=$HOME/fill bs=1M count=400 2>&1 | grep -o 'No space left on device' | head -1; du -m $HOME/fill | cut -f1; echo after > $HOME/small 2>&1; echo done", timeoutSeconds: 120);
        Assert.Contains("No space left on device", stdout, StringComparison.Ordinal);
        var written = int.Parse(stdout.Split('\n')[1], CultureInfo.InvariantCulture);
        Assert.InRange(written, 40, 96);
        var image = new FileInfo(Path.Combine(sandbox.Launch.StateDir, "layer.img"));
        Assert.Equal(96L * 1024 * 1024, image.Length);
    }

    [Fact]
    public async Task A_memory_bomb_is_killed_inside_and_the_sandbox_keeps_serving()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { MemoryMiB = 128 });
        var (_, _, exit) = await sandbox.RunAsync("python3 -c 'b = []\nwhile True: b.append(bytearray(16 << 20))'", timeoutSeconds: 60);
        Assert.NotEqual(0, exit);
        Assert.True(Cgroups.OomKills(sandbox.Id) > 0, "the kernel's OOM killer should have fired inside the sandbox's cgroup");
        Assert.Equal("alive\n", (await sandbox.RunAsync("echo alive")).Stdout);
    }

    [Fact]
    public async Task A_limit_that_cannot_be_applied_fails_the_start_names_the_limit_and_leaves_nothing()
    {
        var id = Harness.NewId();
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => harness.StartAsync(new SandboxLimits { Pids = -5 }, id: id));
        Assert.Contains("pids.max", e.Message, StringComparison.Ordinal);
        Assert.Contains("does not start", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(id, Cgroups.FindAll());
        Assert.DoesNotContain(Airlock.Boundaries.Process.BubblewrapDriver.MountPoints(), m => m.Contains(id, StringComparison.Ordinal));
        Assert.False(Directory.Exists(Path.Combine(harness.DataDir, "sandboxes", id)));
    }

    [Fact]
    public async Task Pause_to_disk_keeps_the_files_stops_the_processes_and_says_so()
    {
        var sandbox = await harness.StartAsync();
        await sandbox.RunAsync("echo kept > ~/note; (sleep 900 &); echo started");
        await sandbox.RunAsRootAsync("echo root-file > /usr/local/kept-by-root");
        var driver = (IPausableDriver)harness.Driver;
        await driver.PauseAsync(sandbox.Instance, keepMemory: false, CancellationToken.None);
        Assert.Empty(Cgroups.Pids(sandbox.Id));
        Assert.True(driver.HasPausedState(sandbox.Launch.StateDir));
        Assert.InRange(driver.PausedBytes(sandbox.Launch.StateDir), 1, 200L * 1024 * 1024);
        Assert.DoesNotContain(Airlock.Boundaries.Process.BubblewrapDriver.MountPoints(), m => m.StartsWith(sandbox.Launch.StateDir, StringComparison.Ordinal));

        var resumed = await sandbox.ResumeAsync(driver);
        await using (resumed)
        {
            Assert.Equal("resumed from disk: files kept, processes were stopped at pause and started afresh", resumed.Instance.Report.StartedFrom);
            Assert.NotEqual(sandbox.Launch.Network.Index, resumed.Launch.Network.Index);
            var (stdout, _, _) = await resumed.RunAsync("cat ~/note; pgrep -c sleep || true; echo more >> ~/note && stat -c '%U' ~/note /usr/local/kept-by-root");
            Assert.Equal("kept\n0\nuser\nroot\n", stdout); // the files followed the sandbox to its new id range
            var (rootOut, _, _) = await resumed.RunAsRootAsync("cat /usr/local/kept-by-root");
            Assert.Equal("root-file\n", rootOut);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task Pausing_a_container_with_its_memory_is_refused_and_it_keeps_running()
    {
        var driver = (IPausableDriver)harness.Driver;
        Assert.False(driver.CanKeepMemory);
        var sandbox = await harness.StartAsync();
        await using (sandbox)
        {
            var e = await Assert.ThrowsAsync<NotSupportedException>(() => driver.PauseAsync(sandbox.Instance, keepMemory: true, CancellationToken.None));
            Assert.Contains("cannot keep memory", e.Message, StringComparison.Ordinal);
            Assert.Equal("alive\n", (await sandbox.RunAsync("echo alive")).Stdout);
            Assert.False(((RuncInstance)sandbox.Instance).Frozen);
            Assert.False(driver.PausedWithMemory(sandbox.Launch.StateDir));
        }

        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.DoesNotContain(Airlock.Boundaries.Process.BubblewrapDriver.MountPoints(), m => m.Contains(sandbox.Id, StringComparison.Ordinal));
        Assert.False(Directory.Exists(sandbox.Launch.StateDir));
    }

    [Fact(Timeout = 180_000)]
    public Task A_sample_shows_cpu_memory_and_disk_growing_with_writes() => SharedChecks.A_sample_shows_cpu_memory_and_disk_growing_with_writes(harness);

    [Fact]
    public async Task A_frozen_container_runs_nothing_until_thawed()
    {
        await using var sandbox = await harness.StartAsync();
        await sandbox.RunAsync("(while true; do date +%s%N >> /tmp/ticks; sleep 0.05; done &) ; echo started");
        var instance = (IFreezableInstance)sandbox.Instance;
        await instance.FreezeAsync(CancellationToken.None);
        var frozenTicks = Cgroups.CpuUsage(sandbox.Id);
        await Task.Delay(500);
        Assert.Equal(frozenTicks, Cgroups.CpuUsage(sandbox.Id));
        await instance.ThawAsync(CancellationToken.None);
        Assert.Equal(0, (await sandbox.RunAsync("test -s /tmp/ticks")).ExitCode);
    }

    [Fact]
    public async Task Killing_the_container_leaves_no_process_mount_cgroup_or_state()
    {
        var sandbox = await harness.StartAsync();
        await sandbox.RunAsync("(sleep 600 &) ; echo started");
        var pid = sandbox.Instance.HostPid!.Value;
        await sandbox.DisposeAsync();
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.DoesNotContain(Airlock.Boundaries.Process.BubblewrapDriver.MountPoints(), m => m.Contains(sandbox.Id, StringComparison.Ordinal));
        Assert.False(Directory.Exists(sandbox.Launch.StateDir));
        Assert.DoesNotContain(sandbox.Id, await harness.Driver.FindLeftoversAsync(CancellationToken.None));
    }

    private static int CapabilityNumber(string name) => name switch
    {
        "CAP_CHOWN" => 0, "CAP_DAC_OVERRIDE" => 1, "CAP_FOWNER" => 3, "CAP_FSETID" => 4, "CAP_KILL" => 5,
        "CAP_SETGID" => 6, "CAP_SETUID" => 7, "CAP_NET_BIND_SERVICE" => 10,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "add its number"),
    };
}

[Trait("Category", "Integration")]
public sealed class ContainerWithoutUserNamespaceTests(ContainerWithoutUserNamespaceHarness harness) : IClassFixture<ContainerWithoutUserNamespaceHarness>
{
    [Fact]
    public async Task Without_a_user_namespace_the_report_says_so_and_root_still_has_only_the_documented_set()
    {
        var availability = await harness.Driver.ProbeAsync(CancellationToken.None);
        Assert.True(availability.Available, availability.Detail);
        Assert.Contains("userns no (turned off by configuration)", availability.Detail, StringComparison.Ordinal);
        await using var sandbox = await harness.StartAsync();
        Assert.False(sandbox.Instance.Report.UserNamespace);
        var (stdout, _, _) = await sandbox.RunAsRootAsync("cat /proc/self/uid_map; grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; echo x > /proc/sys/kernel/core_pattern 2>&1 || echo refused");
        Assert.Matches(@"^\s+0\s+0\s+4294967295", stdout);
        Assert.Contains("CapEff:\t00000000000004fb", stdout, StringComparison.Ordinal);
        Assert.Contains("Seccomp:\t2", stdout, StringComparison.Ordinal);
        Assert.Contains("refused", stdout, StringComparison.Ordinal);
        Assert.Equal("1000\n", (await sandbox.RunAsync("id -u")).Stdout);
    }
}

public sealed class ContainerSeccompTests
{
    [Theory]
    [InlineData(0x5412UL, false)]
    [InlineData(0x541CUL, false)]
    [InlineData(0x1_0000_5412UL, false)] // high bits: the kernel sees TIOCSTI
    [InlineData(0x5413UL, true)] // TIOCGWINSZ
    [InlineData(0x5401UL, true)] // TCGETS
    [InlineData(0xFFFF_FFFFUL, true)]
    [InlineData(0UL, true)]
    public void The_ioctl_branches_allow_every_request_but_the_terminal_injection_ones(ulong request, bool allowed)
    {
        var branches = ContainerSeccomp.AllBut([0x5412, 0x541C]);
        Assert.Equal(allowed, branches.Any(b => (request & b.Mask) == b.Value));
        Assert.All(branches, b => Assert.Equal(0UL, b.Mask >> 32));
    }
}
