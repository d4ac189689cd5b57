using System.Collections.Concurrent;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests.Fakes;

/// <summary>A sandbox that runs nowhere: its entry process "exits" when the test completes <see cref="ExitSource"/>.</summary>
internal class FakeInstance(string sandboxId, BoundaryReport report) : ISandboxInstance
{
    private static int s_pid = 40_000;

    public string SandboxId { get; } = sandboxId;

    public BoundaryReport Report { get; } = report;

    public int? HostPid { get; } = Interlocked.Increment(ref s_pid);

    public TaskCompletionSource<string> ExitSource { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Task<string> Exited => ExitSource.Task;

    public bool Killed { get; private set; }

    public bool Disposed { get; private set; }

    public Task KillAsync(CancellationToken cancellationToken)
    {
        Killed = true;
        ExitSource.TrySetResult("killed");
        return Task.CompletedTask;
    }

    public ValueTask DetachAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        ExitSource.TrySetResult("disposed");
        return ValueTask.CompletedTask;
    }
}

/// <summary>A container's instance: its cgroup can be frozen and thawed.</summary>
internal sealed class FakeFreezableInstance(string sandboxId, BoundaryReport report) : FakeInstance(sandboxId, report), IFreezableInstance
{
    public bool Frozen { get; private set; }

    public Task FreezeAsync(CancellationToken cancellationToken)
    {
        Frozen = true;
        return Task.CompletedTask;
    }

    public Task ThawAsync(CancellationToken cancellationToken)
    {
        Frozen = false;
        return Task.CompletedTask;
    }
}

/// <summary>One boundary's driver: starts fake instances, remembers what it was asked to clean, adopts what the test says survived.</summary>
internal class FakeDriver(BoundaryKind boundary) : ISandboxDriver
{
    private int _starts;

    public BoundaryKind Boundary { get; } = boundary;

    public string Name => $"fake-{Boundary.Name()}";

    public bool Available { get; set; } = true;

    /// <summary>Runs at the start of every <see cref="StartAsync"/> (to block it, or to throw).</summary>
    public Func<SandboxLaunch, CancellationToken, Task>? OnStart { get; set; }

    /// <summary>Makes an entry process that has already exited (the agent never gets to answer).</summary>
    public bool StartExited { get; set; }

    public int Starts => Volatile.Read(ref _starts);

    public ConcurrentDictionary<string, FakeInstance> Instances { get; } = new(StringComparer.Ordinal);

    public ConcurrentDictionary<string, SandboxLaunch> Launches { get; } = new(StringComparer.Ordinal);

    /// <summary>Instances that outlived the previous airlockd, by sandbox id (what <see cref="AdoptAsync"/> finds).</summary>
    public ConcurrentDictionary<string, FakeInstance> Survivors { get; } = new(StringComparer.Ordinal);

    public ConcurrentQueue<string> AdoptAsked { get; } = new();

    public ConcurrentQueue<string> Cleaned { get; } = new();

    /// <summary>Ids this host has cgroups, mounts or processes for (what <see cref="FindLeftoversAsync"/> reports).</summary>
    public ConcurrentBag<string> Leftovers { get; } = [];

    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) =>
        Task.FromResult(new DriverAvailability(Boundary, Name, Available, Available ? "ok" : "not on this host"));

    public async Task<ISandboxInstance> StartAsync(SandboxLaunch launch, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _starts);
        if (OnStart is { } hook)
        {
            await hook(launch, cancellationToken);
        }

        var instance = NewInstance(launch.SandboxId, launch.Limits);
        if (StartExited)
        {
            instance.ExitSource.TrySetResult("exit status 1");
        }

        Instances[launch.SandboxId] = instance;
        Launches[launch.SandboxId] = launch;
        return instance;
    }

    public Task<ISandboxInstance?> AdoptAsync(SandboxRecord record, SandboxLaunch launch, CancellationToken cancellationToken)
    {
        AdoptAsked.Enqueue(record.SandboxId);
        return Task.FromResult<ISandboxInstance?>(Survivors.TryRemove(record.SandboxId, out var instance) ? instance : null);
    }

    public virtual Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        Cleaned.Enqueue(sandboxId);
        return Task.FromResult<IReadOnlyList<string>>([$"cleaned {sandboxId}"]);
    }

    public Task<IReadOnlyCollection<string>> FindLeftoversAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyCollection<string>>([.. Leftovers]);

    public FakeInstance NewInstance(string sandboxId, SandboxLimits? limits = null)
    {
        var report = new BoundaryReport { Boundary = Boundary.Name(), Driver = Name, Kernel = "fake", Limits = limits ?? new SandboxLimits(), Network = "deny-all" };
        return Boundary == BoundaryKind.Container ? new FakeFreezableInstance(sandboxId, report) : new FakeInstance(sandboxId, report);
    }
}

/// <summary>A driver that pauses to "disk" (a set in memory): with memory where <see cref="CanKeepMemory"/>, else files only.</summary>
internal sealed class FakePausableDriver(BoundaryKind boundary, bool canKeepMemory) : FakeDriver(boundary), IPausableDriver
{
    public const long Bytes = 1L << 30;

    public bool CanKeepMemory { get; set; } = canKeepMemory;

    /// <summary>Paused states on disk: sandbox id → with memory.</summary>
    public ConcurrentDictionary<string, bool> PausedStates { get; } = new(StringComparer.Ordinal);

    /// <summary>Every pause asked of the driver, in order, with the keepMemory it was given.</summary>
    public ConcurrentQueue<(string SandboxId, bool KeepMemory)> Pauses { get; } = new();

    public ConcurrentQueue<string> Resumes { get; } = new();

    /// <summary>When set, every pause throws it (the sandbox keeps running).</summary>
    public Exception? PauseFails { get; set; }

    public Task PauseAsync(ISandboxInstance instance, bool keepMemory, CancellationToken cancellationToken)
    {
        Pauses.Enqueue((instance.SandboxId, keepMemory));
        if (PauseFails is { } failure)
        {
            throw failure;
        }

        PausedStates[instance.SandboxId] = keepMemory;
        ((FakeInstance)instance).ExitSource.TrySetResult("paused");
        return Task.CompletedTask;
    }

    public bool PausedWithMemory(string stateDir) => PausedStates.GetValueOrDefault(Path.GetFileName(stateDir));

    public Task<ISandboxInstance> ResumeAsync(SandboxLaunch launch, BoundaryReport report, CancellationToken cancellationToken)
    {
        Resumes.Enqueue(launch.SandboxId);
        var instance = NewInstance(launch.SandboxId, launch.Limits);
        Instances[launch.SandboxId] = instance;
        return Task.FromResult<ISandboxInstance>(instance);
    }

    public void DiscardPausedState(string stateDir) => PausedStates.TryRemove(Path.GetFileName(stateDir), out _);

    public bool HasPausedState(string stateDir) => PausedStates.ContainsKey(Path.GetFileName(stateDir));

    public long PausedBytes(string stateDir) => HasPausedState(stateDir) ? Bytes : 0;

    public override Task<IReadOnlyList<string>> CleanupAsync(string sandboxId, string stateDir, CancellationToken cancellationToken)
    {
        if (Path.GetFileName(stateDir) != ".no-state")
        {
            PausedStates.TryRemove(sandboxId, out _);
        }

        return base.CleanupAsync(sandboxId, stateDir, cancellationToken);
    }
}
