using Airlock.Envd.Client;

namespace Airlock.EscapeTests;

/// <summary>
/// Defense in depth inside the microVM: the guest kernel is hardened at boot (sysctls) and the sandbox user's commands
/// run under the process boundary's seccomp filter, in a capped cgroup of their own; root's commands keep root's rights.
/// </summary>
public sealed partial class EscapeAttemptTests
{
    /// <summary>What the guest agent sets at start (GuestHardening), as the guest's /proc/sys shows it.</summary>
    private static readonly string[] HardenedSysctls =
    [
        "kernel/unprivileged_userns_clone=0", "kernel/perf_event_paranoid=3", "kernel/kptr_restrict=2", "kernel/dmesg_restrict=1",
        "kernel/yama/ptrace_scope=2", "kernel/unprivileged_bpf_disabled=1", "fs/protected_symlinks=1", "fs/protected_hardlinks=1",
        "fs/protected_fifos=1", "fs/protected_regular=1", "fs/suid_dumpable=0",
    ];

    [Fact(Timeout = 120_000)]
    public async Task The_microvm_guest_runs_with_hardened_sysctls_and_confines_the_sandbox_user()
    {
        var sandbox = fixture.Sandboxes["microvm"];
        var probe = $$"""
            for knob in {{string.Join(' ', HardenedSysctls.Select(k => k.Split('=')[0]))}}; do echo "$knob=$(cat /proc/sys/$knob 2>&1)"; done
            grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
            echo "cgroup $(cat /proc/self/cgroup)"
            echo "pids.max $(cat /sys/fs/cgroup/airlock-commands/pids.max 2>&1)"
            echo "memory.max $(cat /sys/fs/cgroup/airlock-commands/memory.max 2>&1)"
            echo "oom.group $(cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.oom.group 2>&1)"
            grep MemTotal /proc/meminfo
            echo {{End}}
            """;
        var asUser = await Attack("microvm", probe);
        Assert.Contains(End, asUser, StringComparison.Ordinal);
        foreach (var knob in HardenedSysctls)
        {
            Assert.Contains(knob + "\n", asUser, StringComparison.Ordinal);
        }

        // The user's commands: filtered (without no_new_privs, so sudo still works, filtered too) and in the capped cgroup.
        Assert.Contains("Seccomp:\t2", asUser, StringComparison.Ordinal);
        Assert.Contains("NoNewPrivs:\t0", asUser, StringComparison.Ordinal);
        Assert.Contains("cgroup 0::/airlock-commands/c", asUser, StringComparison.Ordinal); // a leaf of its own, killed whole on OOM
        Assert.Contains("oom.group 1", asUser, StringComparison.Ordinal);
        var pids = System.Text.RegularExpressions.Regex.Match(asUser, @"pids\.max (\d+)");
        Assert.True(pids.Success, asUser);
        var memory = System.Text.RegularExpressions.Regex.Match(asUser, @"memory\.max (\d+)");
        var total = System.Text.RegularExpressions.Regex.Match(asUser, @"MemTotal:\s+(\d+) kB");
        Assert.True(memory.Success && total.Success, asUser);
        Assert.InRange(long.Parse(memory.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 1, long.Parse(total.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * 1024 - (32 << 20));

        // Root's commands keep today's rights: no filter, the agent's own cgroup.
        var asRoot = new System.Text.StringBuilder();
        await foreach (var output in fixture.Host.Envd(sandbox).StartAsync(new ProcessSpec { Command = "/bin/sh", Args = ["-c", probe], User = "root" }, CancellationToken.None))
        {
            if (output is ProcessStdout o)
            {
                asRoot.Append(System.Text.Encoding.UTF8.GetString(o.Data.Span));
            }
        }

        log.WriteLine($"--- microvm as root:\n{asRoot}");
        Assert.Contains(End, asRoot.ToString(), StringComparison.Ordinal);
        Assert.Contains("Seccomp:\t0", asRoot.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("airlock-commands", asRoot.ToString(), StringComparison.Ordinal);
        Assert.Contains("cgroup 0::/airlock-agent", asRoot.ToString(), StringComparison.Ordinal); // with the agent, under its memory.min
    }
}
