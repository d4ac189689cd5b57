using Airlock.Boundaries.Cgroups;

namespace Airlock.Boundaries.Tests;

/// <summary>The cgroup readers against fake cgroup trees: no root, no real cgroups (synchronous, so no xunit timeout: they touch only files).</summary>
public sealed class CgroupManagerTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("airlock-fake-cgroup-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public void On_cgroup_v2_cpu_memory_and_limit_come_from_cpu_stat_memory_current_stat_and_max()
    {
        File.WriteAllText(Path.Combine(_root, "cgroup.controllers"), "cpu memory pids\n");
        var dir = Write("airlock/s1", new()
        {
            ["cpu.stat"] = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
            ["memory.current"] = "104857600\n",
            ["memory.stat"] = "anon 50000000\nfile 54857600\nactive_file 4000000\ninactive_file 4194304\n",
            ["memory.max"] = "268435456\n",
            ["cgroup.freeze"] = "0\n",
        });
        var cgroups = new CgroupManager(_root);

        Assert.True(cgroups.IsV2);
        Assert.Equal(TimeSpan.FromSeconds(1.5), cgroups.CpuUsage("s1"));
        Assert.Equal(new CgroupMemory(104857600 - 4194304, 268435456), cgroups.Memory("s1"));
        Assert.True(cgroups.SetFrozen("s1", frozen: true));
        Assert.Equal("1", File.ReadAllText(Path.Combine(dir, "cgroup.freeze")));

        File.WriteAllText(Path.Combine(dir, "memory.max"), "max\n");
        Assert.Null(cgroups.Memory("s1")!.Value.Limit);
        Assert.Null(cgroups.Memory("gone"));
        Assert.Null(cgroups.CpuUsage("gone"));
    }

    [Fact]
    public void On_a_v1_hybrid_cpu_comes_from_cpuacct_and_memory_from_usage_in_bytes_less_inactive_files()
    {
        Write("cpu/airlock/s1", new() { ["cpuacct.usage"] = "2500000000\n" });
        var memory = Write("memory/airlock/s1", new()
        {
            ["memory.usage_in_bytes"] = "73400320\n",
            ["memory.stat"] = "cache 20000000\ninactive_file 1000\ntotal_cache 20000000\ntotal_inactive_file 1048576\n",
            ["memory.limit_in_bytes"] = "134217728\n",
        });
        Write("freezer/airlock/s1", new() { ["freezer.state"] = "THAWED\n" });
        var cgroups = new CgroupManager(_root);

        Assert.False(cgroups.IsV2);
        Assert.Equal(TimeSpan.FromSeconds(2.5), cgroups.CpuUsage("s1"));
        Assert.Equal(new CgroupMemory(73400320 - 1048576, 134217728), cgroups.Memory("s1"));
        Assert.True(cgroups.SetFrozen("s1", frozen: true));
        Assert.Equal("FROZEN", File.ReadAllText(Path.Combine(_root, "freezer/airlock/s1/freezer.state")));

        // An unlimited v1 cgroup reports LONG_MAX rounded down to a page.
        File.WriteAllText(Path.Combine(memory, "memory.limit_in_bytes"), "9223372036854771712\n");
        Assert.Null(cgroups.Memory("s1")!.Value.Limit);
        Assert.False(cgroups.SetFrozen("gone", frozen: true));
    }

    [Theory]
    [InlineData("usage_usec 42\nuser_usec 7\n", "usage_usec", 42L)]
    [InlineData("user_usec 7\nusage_usec 42", "usage_usec", 42L)]
    [InlineData("total_inactive_file 9\ninactive_file 3\n", "inactive_file", 3L)]
    [InlineData("active_file 9\n", "inactive_file", null)]
    [InlineData("inactive_file x\n", "inactive_file", null)]
    [InlineData("", "usage_usec", null)]
    public void Keyed_files_are_read_by_whole_key(string text, string key, long? expected) =>
        Assert.Equal(expected, CgroupManager.ParseKeyed(text, key));

    private string Write(string relative, Dictionary<string, string> files)
    {
        var dir = Path.Combine(_root, relative);
        Directory.CreateDirectory(dir);
        foreach (var (name, content) in files)
        {
            File.WriteAllText(Path.Combine(dir, name), content);
        }

        return dir;
    }
}
