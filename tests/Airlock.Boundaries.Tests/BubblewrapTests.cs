using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Process;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Tests;

[Trait("Category", "Integration")]
public sealed class BubblewrapTests(Harness harness) : IClassFixture<Harness>
{
    private static readonly CgroupManager Cgroups = new();

    private const string Python = "python3 - <<'PY'\nimport ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n";

    [Fact]
    public Task A_fork_bomb_leaves_the_agent_answering() => SharedChecks.A_fork_bomb_leaves_the_agent_answering(harness);

    [Fact]
    public async Task The_host_offers_the_process_boundary()
    {
        var availability = await harness.Driver.ProbeAsync(CancellationToken.None);
        Assert.True(availability.Available, availability.Detail);
        Assert.Contains("airlock-process-v1 sha256:", availability.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commands_run_as_an_unprivileged_user_that_sees_only_its_own_processes()
    {
        await using var sandbox = await harness.StartAsync();
        var (stdout, stderr, exit) = await sandbox.RunAsync("id -u; id -un; hostname; ps -e --no-headers | wc -l; cat /proc/self/status | grep ^CapEff; cat /etc/shadow 2>&1 | head -c 200; echo; ls /root 2>&1; echo ${AIRLOCK_ACCESS_TOKEN:-no-token}");
        Assert.Equal(0, exit);
        var lines = stdout.Split('\n');
        Assert.Equal("1000", lines[0]);
        Assert.Equal("user", lines[1]);
        Assert.Equal("sandbox", lines[2]);
        Assert.InRange(int.Parse(lines[3], System.Globalization.CultureInfo.InvariantCulture), 2, 8); // bwrap's init, the agent, bash, ps, wc
        Assert.Equal("CapEff:\t0000000000000000", lines[4]);
        Assert.Contains("Permission denied", lines[5], StringComparison.Ordinal);
        Assert.Contains("Permission denied", stdout, StringComparison.Ordinal);
        Assert.EndsWith("no-token\n", stdout, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stderr);

        var report = sandbox.Instance.Report;
        Assert.Equal(("process", "bubblewrap", true), (report.Boundary, report.Driver, report.UserNamespace));
        Assert.StartsWith("bubblewrap ", report.Runtime, StringComparison.Ordinal);
        Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), report.Kernel);
    }

    [Fact]
    public async Task The_agent_token_is_not_readable_by_sandbox_code()
    {
        await using var sandbox = await harness.StartAsync();
        var (stdout, _, _) = await sandbox.RunAsync("for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done | grep -c AIRLOCK_ACCESS_TOKEN || true");
        Assert.Equal("0\n", stdout);
    }

    [Fact]
    public async Task Writes_land_in_the_sandbox_layer_never_in_the_template()
    {
        await using var sandbox = await harness.StartAsync();
        var (_, stderr, exit) = await sandbox.RunAsync("echo hello > ~/note.txt && echo changed > /tmp/t && rm -f /etc/motd.airlock-test; touch /etc/x 2>&1; echo done");
        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        var upper = Path.Combine(sandbox.Launch.StateDir, "layer", "upper");
        Assert.Equal("hello\n", File.ReadAllText(Path.Combine(upper, "home", "user", "note.txt")));
        Assert.True(File.Exists(Path.Combine(upper, "tmp", "t")));
        Assert.False(File.Exists(Path.Combine(harness.RootFs, "home", "user", "note.txt")));
        Assert.False(File.Exists(Path.Combine(harness.RootFs, "tmp", "t")));
        Assert.False(File.Exists(Path.Combine(harness.RootFs, "etc", "x")));
    }

    [Theory]
    [InlineData("unshare(CLONE_NEWUSER)", "print(libc.unshare(0x10000000), ctypes.get_errno())")]
    [InlineData("mount tmpfs", "print(libc.mount(b'x', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())")]
    [InlineData("TIOCSTI with high bits", "print(libc.ioctl(0, ctypes.c_ulong(0xFFFFFFFF00005412), ctypes.c_char_p(b'x')), ctypes.get_errno())")]
    [InlineData("TIOCLINUX", "print(libc.ioctl(0, ctypes.c_ulong(0x541C), ctypes.c_char_p(b'x')), ctypes.get_errno())")]
    [InlineData("ptrace(TRACEME)", "print(libc.ptrace(0, 0, None, None), ctypes.get_errno())")]
    [InlineData("keyctl", "print(libc.syscall(250, 0, 0, 0, 0), ctypes.get_errno())")]
    [InlineData("bpf", "print(libc.syscall(321, 0, 0, 0), ctypes.get_errno())")]
    [InlineData("perf_event_open", "print(libc.syscall(298, 0, 0, -1, -1, 0), ctypes.get_errno())")]
    [InlineData("clone(CLONE_NEWNET)", "print(libc.syscall(56, 0x40000000 | 17, 0, 0, 0, 0), ctypes.get_errno())")]
    public async Task The_seccomp_filter_denies_with_EPERM(string what, string call)
    {
        await using var sandbox = await harness.StartAsync();
        var (stdout, stderr, _) = await sandbox.RunAsync(Python + call + "\nPY");
        Assert.True(stdout == "-1 1\n", $"{what}: expected '-1 1' (EPERM), got '{stdout}' {stderr}");
    }

    [Fact]
    public async Task Ordinary_work_still_runs_under_the_filter()
    {
        await using var sandbox = await harness.StartAsync();
        var (stdout, stderr, exit) = await sandbox.RunAsync("python3 -c 'import threading, subprocess; t = threading.Thread(target=print, args=(\"thread\",)); t.start(); t.join(); print(subprocess.run([\"echo\", \"child\"], capture_output=True, text=True).stdout.strip())'; (sleep 0.1 & wait); echo ok");
        Assert.Equal((0, "thread\nchild\nok\n", string.Empty), (exit, stdout, stderr));
    }

    [Fact]
    public async Task A_memory_bomb_is_killed_by_the_cgroup_and_the_sandbox_lives_on()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { MemoryMiB = 128 });
        var (_, _, exit) = await sandbox.RunAsync("python3 -c 'b = []\nwhile True: b.append(bytearray(16 << 20))'");
        Assert.NotEqual(0, exit);
        Assert.True(Cgroups.OomKills(sandbox.Id) > 0 || exit == 1, $"exit {exit} without an OOM kill");
        var (stdout, _, alive) = await sandbox.RunAsync("echo alive");
        Assert.Equal((0, "alive\n"), (alive, stdout));
        Assert.False(sandbox.Instance.Exited.IsCompleted);
    }

    [Fact]
    public async Task A_fork_bomb_is_held_at_the_pids_limit_and_killing_the_sandbox_ends_it()
    {
        var sandbox = await harness.StartAsync(new SandboxLimits { Pids = 64 });
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            var bomb = Task.Run(async () =>
            {
                try
                {
                    await foreach (var _ in sandbox.Envd.StartAsync(new Airlock.Envd.Client.ProcessSpec { Command = "/bin/bash", Args = ["-c", "b(){ b|b& }; b"] }, cts.Token))
                    {
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException or Airlock.Envd.Client.EnvdException)
                {
                }
            });
            var peak = 0;
            for (var i = 0; i < 30; i++)
            {
                peak = Math.Max(peak, Cgroups.Pids(sandbox.Id).Count);
                await Task.Delay(100);
            }

            Assert.InRange(peak, 3, 64);
            using var probe = System.Diagnostics.Process.Start("true");
            await probe!.WaitForExitAsync(); // the host can still fork
            await sandbox.Instance.KillAsync(CancellationToken.None);
            Assert.Empty(Cgroups.Pids(sandbox.Id));
            await cts.CancelAsync();
            await bomb;
        }
        finally
        {
            await sandbox.DisposeAsync();
        }

        AssertNothingLeft(sandbox);
    }

    [Fact]
    public async Task Limits_are_in_the_cgroup_files()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { MemoryMiB = 200, Pids = 77, CpuMillis = 500 });
        var dirs = Cgroups.Directories(sandbox.Id).ToList();
        string Read(string file) => File.ReadAllText(dirs.Select(d => Path.Combine(d, file)).First(File.Exists)).Trim();
        if (Cgroups.IsV2)
        {
            Assert.Equal("50000 100000", Read("cpu.max"));
            Assert.Equal((200L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), Read("memory.max"));
        }
        else
        {
            Assert.Equal("50000", Read("cpu.cfs_quota_us"));
            Assert.Equal((200L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), Read("memory.limit_in_bytes"));
        }

        Assert.Equal("77", Read("pids.max"));
        Assert.Equal(Cgroups.IsV2 ? "v2" : "v1 (hybrid)", sandbox.Instance.Report.Cgroup);
    }

    [Fact]
    public async Task Kill_leaves_no_process_cgroup_or_mount()
    {
        var sandbox = await harness.StartAsync();
        await sandbox.RunAsync("(sleep 600 &) ; echo started");
        var pid = sandbox.Instance.HostPid!.Value;
        await sandbox.DisposeAsync();
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.NotEmpty(await sandbox.Instance.Exited.WaitAsync(TimeSpan.FromSeconds(5)));
        AssertNothingLeft(sandbox);
    }

    [Fact]
    public async Task A_sandbox_left_by_a_crash_is_found_and_cleaned()
    {
        var sandbox = await harness.StartAsync();
        await sandbox.Instance.DetachAsync(); // as if airlockd died with keep-on-shutdown
        Assert.Contains(sandbox.Id, await harness.Driver.FindLeftoversAsync(CancellationToken.None));
        var actions = await harness.Driver.CleanupAsync(sandbox.Id, sandbox.Launch.StateDir, CancellationToken.None);
        Assert.Contains(actions, a => a.StartsWith("killed ", StringComparison.Ordinal));
        Assert.Contains(actions, a => a.StartsWith("unmounted ", StringComparison.Ordinal));
        Assert.DoesNotContain(sandbox.Id, await harness.Driver.FindLeftoversAsync(CancellationToken.None));
        await harness.Network.DeleteAsync(sandbox.Launch.Network, CancellationToken.None);
        AssertNothingLeft(sandbox);
    }

    [Fact]
    public async Task A_limit_that_cannot_be_applied_fails_the_start_and_leaves_nothing()
    {
        var id = Harness.NewId();
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => harness.StartAsync(new SandboxLimits { Pids = -5 }, id: id));
        Assert.Contains("pids.max", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(id, Cgroups.FindAll()); // other tests' sandboxes may run meanwhile: look only at this one
        Assert.DoesNotContain(BubblewrapDriver.MountPoints(), m => m.Contains(id, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Sandbox_env_vars_reach_commands_and_reserved_names_are_refused()
    {
        await using (var sandbox = await harness.StartAsync(env: new Dictionary<string, string> { ["PROJECT"] = "airlock" }))
        {
            Assert.Equal("airlock\n", (await sandbox.RunAsync("echo $PROJECT")).Stdout);
        }

        await Assert.ThrowsAsync<ArgumentException>(() => harness.StartAsync(env: new Dictionary<string, string> { ["AIRLOCK_ACCESS_TOKEN"] = "mine" }));
    }

    [Fact]
    public async Task The_disk_quota_stops_writes_at_the_limit_without_filling_the_host()
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { DiskMiB = 96 });
        var (stdout, _, _) = await sandbox.RunAsync("dd if=/dev/zero of=$HOME/fill bs=1M count=400 2>&1 | grep -o 'No space left on device' | head -1; du -m $HOME/fill | cut -f1", timeoutSeconds: 120);
        Assert.Contains("No space left on device", stdout, StringComparison.Ordinal);
        Assert.InRange(int.Parse(stdout.Split('\n')[1], System.Globalization.CultureInfo.InvariantCulture), 40, 96);
        Assert.Equal(96L * 1024 * 1024, new FileInfo(Path.Combine(sandbox.Launch.StateDir, "layer.img")).Length);
    }

    [Fact(Timeout = 180_000)]
    public Task A_sample_shows_cpu_memory_and_disk_growing_with_writes() => SharedChecks.A_sample_shows_cpu_memory_and_disk_growing_with_writes(harness);

    [Fact(Timeout = 180_000)]
    public async Task A_paused_process_sandbox_comes_back_with_its_files_and_none_of_its_processes()
    {
        var driver = (IPausableDriver)harness.Driver;
        Assert.False(driver.CanKeepMemory);
        var sandbox = await harness.StartAsync();
        var (started, _, _) = await sandbox.RunAsync("echo kept > ~/note; mkdir -p ~/work && echo deep > ~/work/file; (sleep 900 &); for i in $(seq 500); do pgrep -x sleep >/dev/null && break; done; pgrep -c -x sleep");
        Assert.Equal("1\n", started);

        await driver.PauseAsync(sandbox.Instance, keepMemory: false, CancellationToken.None);
        Assert.Empty(Cgroups.Pids(sandbox.Id));
        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.DoesNotContain(BubblewrapDriver.MountPoints(), m => m.StartsWith(sandbox.Launch.StateDir, StringComparison.Ordinal));
        Assert.True(driver.HasPausedState(sandbox.Launch.StateDir));
        Assert.False(driver.PausedWithMemory(sandbox.Launch.StateDir));
        Assert.InRange(driver.PausedBytes(sandbox.Launch.StateDir), 1, 200L * 1024 * 1024);
        Assert.NotEmpty(await sandbox.Instance.Exited.WaitAsync(TimeSpan.FromSeconds(5)));

        var resumed = await sandbox.ResumeAsync(driver);
        await using (resumed)
        {
            Assert.Equal("resumed from disk: files kept, processes were stopped at pause and started afresh", resumed.Instance.Report.StartedFrom);
            Assert.NotEqual(sandbox.Launch.Network.Index, resumed.Launch.Network.Index); // a new uid: the files must follow it
            var (stdout, stderr, _) = await resumed.RunAsync("cat ~/note ~/work/file; pgrep -c sleep || true; echo more >> ~/note && stat -c '%U' ~/note ~/work/file");
            Assert.True(stdout == "kept\ndeep\n0\nuser\nuser\n", stdout + stderr);
        }

        AssertNothingLeft(resumed);
        AssertNothingLeft(sandbox);
    }

    [Fact(Timeout = 120_000)]
    public async Task Pausing_a_process_sandbox_with_its_memory_is_refused_and_it_keeps_running()
    {
        var sandbox = await harness.StartAsync();
        await using (sandbox)
        {
            var e = await Assert.ThrowsAsync<NotSupportedException>(() => ((IPausableDriver)harness.Driver).PauseAsync(sandbox.Instance, keepMemory: true, CancellationToken.None));
            Assert.Contains("cannot keep memory", e.Message, StringComparison.Ordinal);
            Assert.Equal("alive\n", (await sandbox.RunAsync("echo alive")).Stdout);
            Assert.False(sandbox.Instance.Exited.IsCompleted);
        }

        AssertNothingLeft(sandbox);
    }

    [Fact(Timeout = 120_000)]
    public async Task Killing_three_times_at_once_stops_the_sandbox_once()
    {
        var sandbox = await harness.StartAsync();
        var pid = sandbox.Instance.HostPid!.Value;
        await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => sandbox.Instance.KillAsync(CancellationToken.None)));
        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.False(Directory.Exists($"/proc/{pid}"));
        Assert.NotEmpty(await sandbox.Instance.Exited.WaitAsync(TimeSpan.FromSeconds(5)));
        await sandbox.Instance.KillAsync(CancellationToken.None); // a later kill waits for the first: nothing to do
        await sandbox.DisposeAsync();
        AssertNothingLeft(sandbox);
    }

    private static void AssertNothingLeft(TestSandbox sandbox)
    {
        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.DoesNotContain(BubblewrapDriver.MountPoints(), m => m.Contains(sandbox.Id, StringComparison.Ordinal));
        Assert.False(Directory.Exists(sandbox.Launch.StateDir));
        Assert.False(File.Exists($"/run/netns/{sandbox.Launch.Network.Namespace}"));
    }
}
