using System.Security.Cryptography;
using System.Text;
using Airlock.Boundaries.Process;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Envd.Client;
using Airlock.Networking;
using Airlock.Templates;
using Airlock.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Boundaries.Tests;

/// <summary>Real sandboxes for the tests: the base template, a real network namespace, bwrap and the AOT agent.</summary>
public class Harness : IAsyncLifetime
{
    public string DataDir { get; } = Directory.CreateTempSubdirectory("airlock-boundary-test-").FullName;

    public string RootFs { get; private set; } = null!;

    public string Agent { get; private set; } = null!;

    public NetnsNetworkManager Network { get; private set; } = null!;

    public ISandboxDriver Driver { get; private set; } = null!;

    /// <summary>The driver under test; the container harness overrides it.</summary>
    protected virtual ISandboxDriver CreateDriver() => new BubblewrapDriver(new BubblewrapOptions { DataDir = DataDir });

    /// <summary>How long a started or resumed sandbox's agent may take to answer (a microVM boots under TCG).</summary>
    public virtual TimeSpan ReadyTimeout => TimeSpan.FromSeconds(15);

    public async Task InitializeAsync()
    {
        Assert.True(Environment.IsPrivilegedProcess, "the boundary tests mount overlays and create namespaces: run them as root");
        var templates = Environment.GetEnvironmentVariable("AIRLOCK_TEMPLATES_DIR") ?? "/var/lib/airlock/templates";
        RootFs = await new BaseTemplateBuilder(templates, NullLogger<BaseTemplateBuilder>.Instance).EnsureBuiltAsync(null, CancellationToken.None);
        Agent = Path.Combine(Repo.Root, "artifacts", "guest", "airlock-guest");
        Assert.True(File.Exists(Agent), $"the AOT guest agent is missing at {Agent}; run scripts/build.sh");
        Network = new NetnsNetworkManager(new NetworkOptions { StateDir = Path.Combine(DataDir, "network"), ConnectTimeout = TimeSpan.FromSeconds(2) }, NullLogger<NetnsNetworkManager>.Instance);
        Driver = CreateDriver();
    }

    /// <summary>
    /// Cleans what failed tests left running (as airlockd's reconcile would), then deletes the data directory, never
    /// through a mount: a recursive delete that crosses a leftover mount of the template destroys the template.
    /// </summary>
    public async Task DisposeAsync()
    {
        var sandboxes = Path.Combine(DataDir, "sandboxes");
        foreach (var stateDir in Directory.Exists(sandboxes) ? Directory.GetDirectories(sandboxes) : [])
        {
            await Driver.CleanupAsync(Path.GetFileName(stateDir), stateDir, CancellationToken.None);
        }

        foreach (var network in _networks)
        {
            await Network.DeleteAsync(network, CancellationToken.None);
        }

        var mounted = BubblewrapDriver.MountPoints().Where(m => m.StartsWith(DataDir + "/", StringComparison.Ordinal)).ToList();
        if (mounted.Count > 0)
        {
            throw new InvalidOperationException($"kept {DataDir}: still mounted under it: {string.Join(", ", mounted)}");
        }

        Directory.Delete(DataDir, recursive: true);
    }

    private readonly System.Collections.Concurrent.ConcurrentBag<SandboxNetwork> _networks = [];

    /// <summary>A sandbox network the harness deletes at the end if the test did not.</summary>
    public async Task<SandboxNetwork> CreateNetworkAsync(string id)
    {
        var network = await Network.CreateAsync(id, NetworkPolicy.DenyAll, CancellationToken.None);
        _networks.Add(network);
        return network;
    }

    public static string NewId() => "t" + RandomNumberGenerator.GetString("abcdefghijklmnopqrstuvwxyz0123456789", 19);

    public async Task<TestSandbox> StartAsync(SandboxLimits? limits = null, IReadOnlyDictionary<string, string>? env = null, string? id = null)
    {
        id ??= NewId();
        var network = await CreateNetworkAsync(id);
        var token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var launch = new SandboxLaunch
        {
            SandboxId = id,
            TemplateId = "base",
            RootFs = RootFs,
            StateDir = Path.Combine(DataDir, "sandboxes", id),
            AccessToken = token,
            Limits = limits ?? new SandboxLimits(),
            Network = network,
            EnvVars = env ?? new Dictionary<string, string>(),
            GuestAgentPath = Agent,
        };
        Directory.CreateDirectory(launch.StateDir);
        ISandboxInstance instance;
        try
        {
            instance = await Driver.StartAsync(launch, CancellationToken.None);
        }
        catch
        {
            await Network.DeleteAsync(network, CancellationToken.None);
            throw;
        }

        var sandbox = new TestSandbox(this, launch, instance);
        try
        {
            await sandbox.WaitReadyAsync();
        }
        catch
        {
            await sandbox.DisposeAsync();
            throw;
        }

        return sandbox;
    }
}

public sealed class TestSandbox : IAsyncDisposable
{
    private readonly Harness _harness;
    private readonly HttpClient _http;
    private bool _disposed;

    public TestSandbox(Harness harness, SandboxLaunch launch, ISandboxInstance instance)
    {
        _harness = harness;
        Launch = launch;
        Instance = instance;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, ct) =>
                new System.Net.Sockets.NetworkStream(await harness.Network.ConnectAsync(launch.Network, context.DnsEndPoint.Port, ct), ownsSocket: true),
        };
        _http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(60) };
        Envd = new EnvdClient(_http, new EnvdClientOptions { BaseAddress = new Uri($"http://sandbox:{Airlock.Envd.EnvdProtocol.Port}/"), AccessToken = launch.AccessToken });
    }

    public SandboxLaunch Launch { get; }

    public ISandboxInstance Instance { get; }

    public EnvdClient Envd { get; }

    public string Id => Launch.SandboxId;

    public async Task WaitReadyAsync()
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (waited.Elapsed < _harness.ReadyTimeout)
        {
            if (Instance.Exited.IsCompleted)
            {
                throw new InvalidOperationException("the sandbox exited: " + await Instance.Exited);
            }

            if (Instance.BootToken is { } boot)
            {
                // As airlockd does: the agent starts with a boot token and gets the sandbox's own through SetIdentity.
                try
                {
                    var first = new EnvdClient(_http, new EnvdClientOptions { BaseAddress = new Uri($"http://sandbox:{Airlock.Envd.EnvdProtocol.Port}/"), AccessToken = boot, UseBinaryFormat = true });
                    await first.SetIdentityAsync(new Airlock.Envd.Protocol.Agent.SetIdentityRequest { AccessToken = Launch.AccessToken }, CancellationToken.None);
                    return;
                }
                catch (Exception e) when (e is HttpRequestException or IOException or Airlock.Envd.Client.EnvdException)
                {
                    await Task.Delay(100);
                    continue;
                }
            }

            if (await Envd.HealthAsync(CancellationToken.None))
            {
                return;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"the agent did not come up in {_harness.ReadyTimeout.TotalSeconds:0} s");
    }

    public Task<(string Stdout, string Stderr, int ExitCode)> RunAsRootAsync(string script, int timeoutSeconds = 60) => RunAsync(script, timeoutSeconds, "root");

    /// <summary>Pause-to-disk's other half: a new network link and the driver's resume on the same state directory.</summary>
    public async Task<TestSandbox> ResumeAsync(IPausableDriver driver)
    {
        _disposed = true;
        _http.Dispose();
        // The new link is made while the old one still holds its slot, so the resumed sandbox gets another index
        // (and, in the container boundary, another id range its files must follow).
        var network = await _harness.CreateNetworkAsync("r" + Id[1..]);
        await _harness.Network.DeleteAsync(Launch.Network, CancellationToken.None);
        var launch = Launch with { Network = network };
        var instance = await driver.ResumeAsync(launch, Instance.Report, CancellationToken.None);
        driver.DiscardPausedState(launch.StateDir);
        var resumed = new TestSandbox(_harness, launch, instance);
        await resumed.WaitReadyAsync();
        return resumed;
    }

    public async Task<(string Stdout, string Stderr, int ExitCode)> RunAsync(string script, int timeoutSeconds = 60, string? user = null)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var exit = int.MinValue;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        await foreach (var output in Envd.StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-c", script], User = user }, timeout.Token))
        {
            switch (output)
            {
                case ProcessStdout o: stdout.Append(Encoding.UTF8.GetString(o.Data.Span)); break;
                case ProcessStderr e: stderr.Append(Encoding.UTF8.GetString(e.Data.Span)); break;
                case ProcessExited x: exit = x.ExitCode; break;
            }
        }

        return (stdout.ToString(), stderr.ToString(), exit);
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await Instance.KillAsync(CancellationToken.None);
        await Instance.DisposeAsync();
        await _harness.Driver.CleanupAsync(Id, Launch.StateDir, CancellationToken.None);
        await _harness.Network.DeleteAsync(Launch.Network, CancellationToken.None);
        _http.Dispose();
    }
}

/// <summary>The same harness with the container boundary (runc) as the driver under test.</summary>
public sealed class ContainerHarness : Harness
{
    protected override ISandboxDriver CreateDriver() => new Airlock.Boundaries.Container.RuncDriver(new Airlock.Boundaries.Container.RuncOptions { DataDir = DataDir });
}

/// <summary>The container boundary as on a kernel without usable user namespaces.</summary>
public sealed class ContainerWithoutUserNamespaceHarness : Harness
{
    protected override ISandboxDriver CreateDriver() => new Airlock.Boundaries.Container.RuncDriver(new Airlock.Boundaries.Container.RuncOptions { DataDir = DataDir, UserNamespace = false });
}

/// <summary>The microVM boundary (QEMU, TCG on these hosts) with the image and snapshot cache the integration tests share.</summary>
public sealed class MicroVmHarness : Harness
{
    public static string VmCacheDir => Environment.GetEnvironmentVariable("AIRLOCK_VM_CACHE_DIR") ?? "/var/lib/airlock/vm-cache";

    public override TimeSpan ReadyTimeout => TimeSpan.FromSeconds(120);

    protected override ISandboxDriver CreateDriver() =>
        new Airlock.Boundaries.MicroVm.QemuDriver(new Airlock.Boundaries.MicroVm.QemuOptions { DataDir = DataDir, CacheDir = VmCacheDir }, Network);
}

/// <summary>Checks both host-kernel boundaries share.</summary>
public static class SharedChecks
{
    private static readonly Airlock.Boundaries.Cgroups.CgroupManager Cgroups = new();

    /// <summary>A sample reads the sandbox's cgroup (CPU, memory and its limit) and its mounted layer (disk used and quota).</summary>
    public static async Task A_sample_shows_cpu_memory_and_disk_growing_with_writes(Harness harness)
    {
        var sandbox = await harness.StartAsync(new SandboxLimits { MemoryMiB = 256, DiskMiB = 512, CpuMillis = 1500 });
        await using (sandbox)
        {
            var before = await sandbox.Instance.SampleAsync(CancellationToken.None);
            Assert.NotNull(before);
            var (_, stderr, exit) = await sandbox.RunAsync("dd if=/dev/zero of=~/f bs=1M count=50 status=none; sync", timeoutSeconds: 120);
            Assert.True(exit == 0, stderr);
            var after = await sandbox.Instance.SampleAsync(CancellationToken.None);
            Assert.NotNull(after);

            Assert.InRange(after.DiskUsedBytes - before.DiskUsedBytes, 45L << 20, 60L << 20);
            Assert.InRange(after.DiskTotalBytes, 400L << 20, 512L << 20); // the layer's ext4, less its own metadata
            Assert.InRange(after.MemoryUsedBytes, 1, 256L << 20);
            Assert.Equal(256L << 20, after.MemoryTotalBytes);
            Assert.Equal(2, after.CpuCount); // 1500 millicores: part of a second core
            Assert.True(after.CpuUsed > TimeSpan.Zero && after.CpuUsed >= before.CpuUsed, $"{before.CpuUsed} then {after.CpuUsed}");
            Assert.True(after.At >= before.At);
        }

        Assert.Empty(Cgroups.Directories(sandbox.Id));
        Assert.DoesNotContain(BubblewrapDriver.MountPoints(), m => m.Contains(sandbox.Id, StringComparison.Ordinal));
        Assert.False(Directory.Exists(sandbox.Launch.StateDir));
    }

    /// <summary>
    /// An unbounded fork bomb runs; the agent must still start a command: the commands' RLIMIT_NPROC stops the bomb
    /// below the sandbox's pids limit, leaving the agent room.
    /// </summary>
    public static async Task A_fork_bomb_leaves_the_agent_answering(Harness harness)
    {
        await using var sandbox = await harness.StartAsync(new SandboxLimits { Pids = 96 });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(40));
        var bomb = Task.Run(async () =>
        {
            try
            {
                await foreach (var _ in sandbox.Envd.StartAsync(new ProcessSpec { Command = "/bin/bash", Args = ["-c", "b(){ b|b& }; b"] }, cts.Token))
                {
                }
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException or EnvdException)
            {
            }
        });
        await Task.Delay(TimeSpan.FromSeconds(3));
        var (stdout, _, exit) = await sandbox.RunAsync("echo alive", timeoutSeconds: 20);
        Assert.Equal((0, "alive\n"), (exit, stdout));
        await cts.CancelAsync();
        await bomb;
    }
}
