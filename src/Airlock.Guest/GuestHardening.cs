using System.Globalization;

namespace Airlock.Guest;

/// <summary>
/// Hardens the guest kernel when the agent owns it (a microVM, <c>--harden-guest</c>): sysctls that shut the kernel's
/// riskier doors to unprivileged users, and a cgroup for the commands it confines, capped below the guest's RAM and
/// pids so a fork or memory bomb ends inside it and the agent (outside it, out of the OOM killer's reach) and the
/// guest live on. Each step is checked by reading it back; what did not take is logged and the rest still applies.
/// </summary>
internal static partial class GuestHardening
{
    /// <summary>The command cgroup, below the guest's cgroup2 root.</summary>
    public const string CommandCgroupName = "airlock-commands";

    /// <summary>The agent's own cgroup (root's commands start in it too), whose memory.min keeps its pages resident.</summary>
    public const string AgentCgroupName = "airlock-agent";

    /// <summary>(path under /proc/sys, value). Kernels without a knob (unprivileged_userns_clone is Debian's) log it.</summary>
    public static readonly IReadOnlyList<(string Knob, string Value)> Sysctls =
    [
        ("kernel/unprivileged_userns_clone", "0"), // no user namespaces for the sandbox user (seccomp refuses them too)
        ("kernel/perf_event_paranoid", "3"), // Debian: no perf_event_open without CAP_PERFMON
        ("kernel/kptr_restrict", "2"), // no kernel addresses in /proc, even for root
        ("kernel/dmesg_restrict", "1"),
        ("kernel/yama/ptrace_scope", "2"), // only CAP_SYS_PTRACE (root) may ptrace
        ("kernel/unprivileged_bpf_disabled", "1"),
        ("fs/protected_symlinks", "1"),
        ("fs/protected_hardlinks", "1"),
        ("fs/protected_fifos", "1"),
        ("fs/protected_regular", "1"),
        ("fs/suid_dumpable", "0"),
    ];

    private const long MiB = 1024 * 1024;

    /// <summary>Applies everything; returns the command cgroup's directory, or null when it could not be made.</summary>
    public static string? Apply(ILogger logger, string procSys = "/proc/sys", string cgroupRoot = "/sys/fs/cgroup", string meminfo = "/proc/meminfo")
    {
        var failed = 0;
        foreach (var (knob, value) in Sysctls)
        {
            if (!TryWrite(Path.Combine(procSys, knob), value, out var problem))
            {
                failed++;
                LogSysctlFailed(logger, knob.Replace('/', '.'), value, problem);
            }
        }

        var cgroup = MakeCommandCgroup(logger, cgroupRoot, meminfo);
        LogHardened(logger, Sysctls.Count - failed, Sysctls.Count, cgroup ?? "none");
        return cgroup;
    }

    /// <summary>
    /// memory.max leaves the agent, root's commands, the page cache they run from and the kernel a quarter of the
    /// guest's RAM, 96 to 512 MiB (an eighth was seen too little under TCG: a bomb at the cap made the guest reclaim the
    /// agent's own pages and a root command took over 30 s).
    /// </summary>
    public static long CommandMemoryLimit(long memTotal) => memTotal - Math.Clamp(memTotal / 4, 96 * MiB, 512 * MiB);

    /// <summary>memory.min of the agent's cgroup: what of its memory (and its binary's pages) reclaim never takes.</summary>
    public static long AgentMemoryProtection(long memTotal) => Math.Min(64 * MiB, memTotal / 8);

    /// <summary>pids.max: two per MiB of RAM, at least 256 (a bash costs well over half a MiB, so memory binds first).</summary>
    public static long CommandPidsLimit(long memTotal) => Math.Max(256, memTotal / MiB * 2);

    private static string? MakeCommandCgroup(ILogger logger, string cgroupRoot, string meminfo)
    {
        long memTotal;
        try
        {
            var line = File.ReadLines(meminfo).First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            memTotal = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or FormatException)
        {
            LogCgroupFailed(logger, meminfo, e.Message);
            return null;
        }

        // Controllers for the children of the root: pids and memory cap, cpu makes the whole group weigh as one
        // ordinary task against the agent's threads, however many processes a bomb makes.
        foreach (var controller in new[] { "pids", "memory", "cpu" })
        {
            if (!TryWrite(Path.Combine(cgroupRoot, "cgroup.subtree_control"), "+" + controller, out var problem, verify: false))
            {
                LogCgroupFailed(logger, "+" + controller, problem);
            }
        }

        var dir = Path.Combine(cgroupRoot, CommandCgroupName);
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogCgroupFailed(logger, dir, e.Message);
            return null;
        }

        var memory = CommandMemoryLimit(memTotal).ToString(CultureInfo.InvariantCulture);
        var pids = CommandPidsLimit(memTotal).ToString(CultureInfo.InvariantCulture);
        var ok = true;
        foreach (var (file, value) in new[] { ("memory.max", memory), ("pids.max", pids) })
        {
            if (!TryWrite(Path.Combine(dir, file), value, out var problem))
            {
                LogCgroupFailed(logger, file, problem);
                ok = false;
            }
        }

        // Each command gets a leaf below (ConfinementShim): memory in the leaves gives them memory.oom.group. Done
        // now, while the cgroup holds no process (a cgroup with controllers for children may hold none itself).
        if (!TryWrite(Path.Combine(dir, "cgroup.subtree_control"), "+memory", out var leaves, verify: false))
        {
            LogCgroupFailed(logger, "+memory for command leaves", leaves);
        }

        // The agent moves into a cgroup of its own whose memory.min protects its pages from the reclaim a bomb at the
        // commands' cap still causes; not fatal if it cannot (the cap alone keeps the guest alive).
        var agent = Path.Combine(cgroupRoot, AgentCgroupName);
        try
        {
            Directory.CreateDirectory(agent);
            if (!TryWrite(Path.Combine(agent, "memory.min"), AgentMemoryProtection(memTotal).ToString(CultureInfo.InvariantCulture), out var problem)
                || !TryWrite(Path.Combine(agent, "cgroup.procs"), Environment.ProcessId.ToString(CultureInfo.InvariantCulture), out problem, verify: false))
            {
                LogCgroupFailed(logger, agent, problem);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogCgroupFailed(logger, agent, e.Message);
        }

        // Without its caps the cgroup would only pretend to contain anything: say so and leave commands where they are.
        return ok ? dir : null;
    }

    private static bool TryWrite(string path, string value, out string problem, bool verify = true)
    {
        try
        {
            File.WriteAllText(path, value);
            var now = verify ? File.ReadAllText(path).Trim() : value;
            problem = now == value ? "" : $"reads back '{now}'";
            return now == value;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            problem = e.Message;
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "guest hardening: sysctl {Knob}={Value} did not take: {Problem}")]
    private static partial void LogSysctlFailed(ILogger logger, string knob, string value, string problem);

    [LoggerMessage(Level = LogLevel.Warning, Message = "guest hardening: command cgroup step {Step} failed: {Problem}")]
    private static partial void LogCgroupFailed(ILogger logger, string step, string problem);

    [LoggerMessage(Level = LogLevel.Information, Message = "guest hardened: {Set} of {Total} sysctls set, command cgroup {Cgroup}")]
    private static partial void LogHardened(ILogger logger, int set, int total, string cgroup);
}
