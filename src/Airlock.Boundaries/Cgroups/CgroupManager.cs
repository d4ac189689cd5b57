using System.Globalization;
using Airlock.Core.Sandboxes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Boundaries.Cgroups;

/// <summary>
/// Per-sandbox cgroups under <c>airlock/&lt;id&gt;</c>, on pure cgroup v2 hosts and on v1+v2 hybrids (v1 controllers,
/// an empty unified tree). Limits that cannot be applied fail the start: a sandbox never runs unlimited.
/// </summary>
public sealed class CgroupManager
{
    private const string Parent = "airlock";
    private static readonly string[] V1Controllers = ["memory", "pids", "cpu", "freezer"];
    private readonly string _root;
    private readonly ILogger _logger;

    public CgroupManager(string root = "/sys/fs/cgroup", ILogger? logger = null)
    {
        _root = root;
        _logger = logger ?? NullLogger.Instance;
        IsV2 = File.Exists(Path.Combine(root, "cgroup.controllers"));
    }

    public bool IsV2 { get; }

    public string Mode => IsV2 ? "v2" : "v1 (hybrid)";

    /// <summary>Whether swap can be limited here (memory.swap.max on v2, memory.memsw.* on v1: swap accounting on).</summary>
    public bool CanLimitSwap => IsV2
        ? File.Exists(Path.Combine(_root, Parent, "memory.swap.max")) || Directory.EnumerateFiles(_root, "memory.swap.*").Any()
        : File.Exists(Path.Combine(_root, "memory", "memory.memsw.limit_in_bytes"));

    /// <summary>Creates the sandbox's cgroup(s) with its limits; returns the cgroup.procs files to join.</summary>
    public IReadOnlyList<string> Create(string sandboxId, SandboxLimits limits)
    {
        var memory = ((long)limits.MemoryMiB * 1024 * 1024).ToString(CultureInfo.InvariantCulture);
        var pids = limits.Pids.ToString(CultureInfo.InvariantCulture);
        var quota = ((long)limits.CpuMillis * 100).ToString(CultureInfo.InvariantCulture);
        if (IsV2)
        {
            var parent = Path.Combine(_root, Parent);
            Directory.CreateDirectory(parent);
            EnableControllers(_root);
            EnableControllers(parent);
            var dir = Path.Combine(parent, sandboxId);
            Directory.CreateDirectory(dir);
            Write(dir, "memory.max", memory);
            WriteIfPresent(dir, "memory.swap.max", "0");
            Write(dir, "pids.max", pids);
            Write(dir, "cpu.max", $"{quota} 100000");
            Log.CgroupCreated(_logger, sandboxId, Mode, limits.MemoryMiB, limits.Pids, limits.CpuMillis);
            return [Path.Combine(dir, "cgroup.procs")];
        }

        var procs = new List<string>();
        foreach (var controller in V1Controllers)
        {
            var hierarchy = Path.Combine(_root, controller);
            if (!Directory.Exists(hierarchy))
            {
                if (controller == "freezer")
                {
                    continue; // only used to stop fork races during kill
                }

                throw new InvalidOperationException($"cgroup v1 controller '{controller}' is not mounted at {hierarchy}");
            }

            var dir = Path.Combine(hierarchy, Parent, sandboxId);
            Directory.CreateDirectory(dir);
            switch (controller)
            {
                case "memory":
                    Write(dir, "memory.limit_in_bytes", memory);
                    WriteIfPresent(dir, "memory.memsw.limit_in_bytes", memory);
                    break;
                case "pids":
                    Write(dir, "pids.max", pids);
                    break;
                case "cpu":
                    Write(dir, "cpu.cfs_period_us", "100000");
                    Write(dir, "cpu.cfs_quota_us", quota);
                    break;
            }

            procs.Add(Path.Combine(dir, "cgroup.procs"));
        }

        Log.CgroupCreated(_logger, sandboxId, Mode, limits.MemoryMiB, limits.Pids, limits.CpuMillis);
        return procs;
    }

    /// <summary>The directories of a sandbox's cgroups that exist.</summary>
    public IEnumerable<string> Directories(string sandboxId) =>
        (IsV2 ? [Path.Combine(_root, Parent, sandboxId)] : V1Controllers.Select(c => Path.Combine(_root, c, Parent, sandboxId)))
        .Where(Directory.Exists);

    /// <summary>True when <paramref name="pid"/> is in the sandbox's cgroup.</summary>
    public static bool Contains(int pid, string sandboxId)
    {
        try
        {
            return File.ReadAllLines($"/proc/{pid}/cgroup").Any(l => l.EndsWith($"/{Parent}/{sandboxId}", StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Process ids in the sandbox's cgroups.</summary>
    public IReadOnlyCollection<int> Pids(string sandboxId)
    {
        var pids = new HashSet<int>();
        foreach (var dir in Directories(sandboxId))
        {
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(dir, "cgroup.procs")))
                {
                    if (int.TryParse(line, CultureInfo.InvariantCulture, out var pid))
                    {
                        pids.Add(pid);
                    }
                }
            }
            catch (IOException)
            {
                // Removed while we read.
            }
        }

        return pids;
    }

    /// <summary>How many times the kernel's OOM killer fired inside the sandbox.</summary>
    public int OomKills(string sandboxId)
    {
        var file = IsV2 ? Path.Combine(_root, Parent, sandboxId, "memory.events") : Path.Combine(_root, "memory", Parent, sandboxId, "memory.oom_control");
        try
        {
            var line = File.ReadLines(file).FirstOrDefault(l => l.StartsWith("oom_kill ", StringComparison.Ordinal));
            return line is null ? 0 : int.Parse(line.AsSpan(9), CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>CPU time used by everything in the sandbox's cgroup (cpu.stat on v2, cpuacct.usage on v1), or null.</summary>
    public TimeSpan? CpuUsage(string sandboxId)
    {
        try
        {
            if (IsV2)
            {
                return ParseKeyed(File.ReadAllText(Path.Combine(_root, Parent, sandboxId, "cpu.stat")), "usage_usec") is { } usec
                    ? TimeSpan.FromMicroseconds(usec)
                    : null;
            }

            var acct = Path.Combine(_root, "cpu", Parent, sandboxId, "cpuacct.usage");
            if (File.Exists(acct))
            {
                return TimeSpan.FromTicks(long.Parse(File.ReadAllText(acct).Trim(), CultureInfo.InvariantCulture) / 100);
            }

            // cpuacct mounted apart from cpu (some hybrids): sum the members' utime+stime (+ reaped children's), in
            // USER_HZ (100 on Linux) ticks. Exact for a VMM, whose vCPUs are threads of one process.
            long ticks = 0;
            foreach (var pid in Pids(sandboxId))
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                for (var i = 11; i <= 14; i++)
                {
                    ticks += long.Parse(fields[i], CultureInfo.InvariantCulture);
                }
            }

            return TimeSpan.FromMilliseconds(ticks * 10);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Memory the sandbox uses now, as its working set (usage less the inactive file cache the kernel reclaims first,
    /// as the kubelet counts it), and its limit (null: none); null when its cgroup is gone.
    /// </summary>
    public CgroupMemory? Memory(string sandboxId)
    {
        try
        {
            var dir = IsV2 ? Path.Combine(_root, Parent, sandboxId) : Path.Combine(_root, "memory", Parent, sandboxId);
            var usage = long.Parse(File.ReadAllText(Path.Combine(dir, IsV2 ? "memory.current" : "memory.usage_in_bytes")).Trim(), CultureInfo.InvariantCulture);
            var statFile = Path.Combine(dir, "memory.stat");
            var inactive = File.Exists(statFile) ? ParseKeyed(File.ReadAllText(statFile), IsV2 ? "inactive_file" : "total_inactive_file") ?? 0 : 0;
            var limit = ParseLimit(File.ReadAllText(Path.Combine(dir, IsV2 ? "memory.max" : "memory.limit_in_bytes")));
            return new CgroupMemory(Math.Max(0, usage - inactive), limit);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Freezes (or thaws) every process in the sandbox's cgroup (cgroup.freeze on v2, the v1 freezer); false where neither exists.</summary>
    public bool SetFrozen(string sandboxId, bool frozen) => IsV2
        ? File.Exists(Path.Combine(_root, Parent, sandboxId, "cgroup.freeze")) && TryWrite(Path.Combine(_root, Parent, sandboxId, "cgroup.freeze"), frozen ? "1" : "0")
        : File.Exists(Path.Combine(_root, "freezer", Parent, sandboxId, "freezer.state")) && TryWrite(Path.Combine(_root, "freezer", Parent, sandboxId, "freezer.state"), frozen ? "FROZEN" : "THAWED");

    /// <summary>The value of <paramref name="key"/> in a flat keyed cgroup file (<c>key value</c> per line: cpu.stat, memory.stat).</summary>
    internal static long? ParseKeyed(string text, string key)
    {
        foreach (var line in text.AsSpan().EnumerateLines())
        {
            if (line.Length > key.Length && line.StartsWith(key, StringComparison.Ordinal) && line[key.Length] == ' '
                && long.TryParse(line[(key.Length + 1)..].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }
        }

        return null;
    }

    /// <summary>A limit file's value in bytes: null for none (v2 <c>max</c>, v1's page-rounded LONG_MAX).</summary>
    internal static long? ParseLimit(string text)
    {
        var value = text.Trim();
        return value == "max" || !long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var bytes) || bytes >= 1L << 62 ? null : bytes;
    }

    /// <summary>Kills every process in the sandbox's cgroups and removes them; returns what it did.</summary>
    public async Task<IReadOnlyList<string>> DestroyAsync(string sandboxId, CancellationToken cancellationToken)
    {
        var actions = new List<string>();
        var killed = 0;
        var freezer = IsV2 ? null : Path.Combine(_root, "freezer", Parent, sandboxId, "freezer.state");
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var pids = Pids(sandboxId);
            if (pids.Count == 0)
            {
                break;
            }

            if (IsV2 && File.Exists(Path.Combine(_root, Parent, sandboxId, "cgroup.kill")))
            {
                TryWrite(Path.Combine(_root, Parent, sandboxId, "cgroup.kill"), "1");
            }
            else
            {
                // Freeze first so a fork bomb cannot outrun the kill loop, then thaw so the signals are delivered.
                var frozen = freezer is not null && File.Exists(freezer) && TryWrite(freezer, "FROZEN");
                foreach (var pid in pids)
                {
                    NativeMethods.kill(pid, 9);
                }

                if (frozen)
                {
                    TryWrite(freezer!, "THAWED");
                }
            }

            killed += pids.Count;
            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        }

        if (killed > 0)
        {
            actions.Add($"killed {killed} process(es) in cgroup {Parent}/{sandboxId}");
        }

        var removedAny = false;

        foreach (var dir in Directories(sandboxId).ToList())
        {
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    Directory.Delete(dir);
                    actions.Add($"removed cgroup {dir}");
                    removedAny = true;
                    break;
                }
                catch (IOException) when (attempt < 40)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
                }
            }
        }

        if (removedAny || killed > 0)
        {
            Log.CgroupDestroyed(_logger, sandboxId, string.Join("; ", actions));
        }

        return actions;
    }

    /// <summary>Sandbox ids that have a cgroup under <c>airlock/</c>.</summary>
    public IReadOnlyCollection<string> FindAll()
    {
        var parents = IsV2 ? [Path.Combine(_root, Parent)] : V1Controllers.Select(c => Path.Combine(_root, c, Parent));
        return parents.Where(Directory.Exists)
            .SelectMany(Directory.EnumerateDirectories)
            .Select(Path.GetFileName)
            .OfType<string>()
            .ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>Checks that limits can be set here; null when they can, else why not.</summary>
    public string? Probe()
    {
        var id = "probe-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            Create(id, new SandboxLimits());
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return $"cannot create limited cgroups ({Mode}): {e.Message}";
        }
        finally
        {
            foreach (var dir in Directories(id))
            {
                try
                {
                    Directory.Delete(dir);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    private static void EnableControllers(string dir)
    {
        var available = File.ReadAllText(Path.Combine(dir, "cgroup.controllers")).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var controller in new[] { "memory", "pids", "cpu" })
        {
            if (!available.Contains(controller))
            {
                throw new InvalidOperationException($"the cgroup v2 controller '{controller}' is not available in {dir}");
            }

            Write(dir, "cgroup.subtree_control", "+" + controller);
        }
    }

    private static void Write(string dir, string file, string value)
    {
        try
        {
            File.WriteAllText(Path.Combine(dir, file), value);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"cannot set {file}={value} in {dir}: {e.Message}", e);
        }
    }

    private static void WriteIfPresent(string dir, string file, string value)
    {
        if (File.Exists(Path.Combine(dir, file)))
        {
            Write(dir, file, value);
        }
    }

    private static bool TryWrite(string path, string value)
    {
        try
        {
            File.WriteAllText(path, value);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}

/// <summary>A cgroup's memory: what it uses (working set) and its limit, in bytes (null: unlimited).</summary>
public readonly record struct CgroupMemory(long Used, long? Limit);
